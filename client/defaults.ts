/**
 * Default settings of the client, in one place. Every timing and bound the client uses is here,
 * with the reason for its value.
 */
export const clientDefaults = {
  backoff: {
    /** First wait after a failure: short, because most drops (deploys, a cell draining) heal fast. */
    initialDelayMs: 250,
    /** Cap of the exponential growth: a user back online waits at most this long. */
    maxDelayMs: 30_000,
    /** Growth per consecutive failure. */
    multiplier: 2,
    /**
     * Fraction of each delay that is random (0 none, 1 all): the delay is drawn from
     * [delay * (1 - jitter), delay], so the clients of a cell that went away do not all
     * come back in the same millisecond.
     */
    jitter: 0.5,
    /** Least wait after a policy close (4429) or a device-limit rejection: hammering cannot help. */
    policyDelayMs: 15_000,
    /** A connection open this long counts as stable: the next drop starts the backoff afresh. */
    stableAfterMs: 10_000,
  },
  /** Chat clients keep trying while the app runs; the backoff cap bounds the rate. */
  maxReconnectAttempts: Number.POSITIVE_INFINITY,
  /** From the start of an attempt (token, upgrade, welcome) to giving it up. */
  connectTimeoutMs: 10_000,
  /** From a request's call to its rejection with REQUEST_TIMEOUT, across reconnects. */
  requestTimeoutMs: 10_000,
  /** Acks wait this long so that a burst of messages costs one cumulative ack per conversation. */
  ackDelayMs: 20,
  /** Bound of the outbox (sends not yet confirmed with a seq). */
  maxPendingSends: 1_000,
  /**
   * Sends on the wire awaiting confirmation at once. Their rate is paced separately, to the
   * cell's announced limit (see the pacer in session-link.ts and its use in send-queue.ts).
   */
  maxInFlightSends: 32,
  /** Bound of requests waiting for replies (history, inbox, presence, read, ping). */
  maxPendingRequests: 256,
  /**
   * Bound of messages held back because an earlier one is missing. The server's delivery window
   * keeps the real number far lower; past the bound a message is dropped unacknowledged and
   * fetched again through history.
   */
  maxBufferedMessages: 10_000,
  /**
   * How long this device's own message, confirmed before the messages preceding it arrived,
   * waits for them to be pushed before they are fetched with history.
   */
  gapWaitMs: 1_000,
  /** Failed history fetches of one gap before the gap is skipped (reported as GAP_UNFILLED). */
  maxGapFillFailures: 3,
  /** Silence after which the client pings; 0 turns the heartbeat off. */
  heartbeatIntervalMs: 25_000,
  /** A token that expires within this margin is replaced before connecting. */
  tokenRefreshMarginMs: 30_000,
  /** Consecutive 401 rejections, each with a fresh token, before the client gives up. */
  maxAuthFailures: 3,
  /** How long `close()` waits for the connection to confirm it closed. */
  closeTimeoutMs: 2_000,
  /**
   * Route mode: redirects in a row without a session. A move takes one; a second may come while
   * the cells' directories converge; more means cells disagree, and bouncing cannot help.
   */
  maxRedirects: 3,
} as const;

export type BackoffSettings = { -readonly [Key in keyof typeof clientDefaults.backoff]: number };
