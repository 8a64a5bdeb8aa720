// The client's options as the caller gives them, and their resolution into complete, checked
// settings (each missing number taken from `clientDefaults`, every bound checked once here).
import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { clientDefaults, type BackoffSettings } from './defaults.js';
import type { TokenSource } from './token.js';
import type { FetchLike } from './attachment-upload.js';
import type { RouteOptions } from './endpoints.js';
import type { ClientTransport } from './transport.js';

/** Numeric settings; each defaults to the value in `clientDefaults` (see defaults.ts). */
export interface ClientSettings {
  /** Consecutive failed attempts before the client stops (`closed` with RECONNECT_FAILED). */
  maxReconnectAttempts: number;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  ackDelayMs: number;
  maxPendingSends: number;
  maxInFlightSends: number;
  maxPendingRequests: number;
  maxBufferedMessages: number;
  gapWaitMs: number;
  maxGapFillFailures: number;
  heartbeatIntervalMs: number;
  tokenRefreshMarginMs: number;
  maxAuthFailures: number;
  closeTimeoutMs: number;
  /** Route mode: redirects (4307) followed in a row without a session before TOO_MANY_REDIRECTS. */
  maxRedirects: number;
}

export interface CellmeshClientOptions extends Partial<ClientSettings> {
  /**
   * A fixed cell: `ws://host:port/v1/ws` (or just `ws://host:port`); the client adds the token.
   * Give either `url` or `route`.
   */
  url?: string | undefined;
  /**
   * Route mode (docs/routing.md, "SDK"): the client talks to one merchant, asks `route.url` (any
   * cell or a router) for its home before every connection attempt, and follows the cells'
   * redirects, so a moved merchant is followed without the app doing anything.
   */
  route?: RouteOptions | undefined;
  token: TokenSource;
  transport: ClientTransport;
  clock: Clock;
  random: Random;
  backoff?: Partial<BackoffSettings>;
  /** What `uploadAttachment` and route requests are made with; defaults to the platform's `fetch`. */
  fetch?: FetchLike;
  /** Cursors (conversation to highest seq already handled) the app persisted from `cursors()`. */
  initialCursors?: Readonly<Record<string, number>>;
}

export interface ResolvedSettings {
  readonly settings: ClientSettings;
  readonly backoff: BackoffSettings;
}

/** The complete settings of `options`; throws RangeError or TypeError for values out of bounds. */
export function resolveSettings(options: CellmeshClientOptions): ResolvedSettings {
  const backoff: BackoffSettings = { ...clientDefaults.backoff, ...options.backoff };
  const settings: ClientSettings = {
    maxReconnectAttempts: options.maxReconnectAttempts ?? clientDefaults.maxReconnectAttempts,
    connectTimeoutMs: options.connectTimeoutMs ?? clientDefaults.connectTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs ?? clientDefaults.requestTimeoutMs,
    ackDelayMs: options.ackDelayMs ?? clientDefaults.ackDelayMs,
    maxPendingSends: options.maxPendingSends ?? clientDefaults.maxPendingSends,
    maxInFlightSends: options.maxInFlightSends ?? clientDefaults.maxInFlightSends,
    maxPendingRequests: options.maxPendingRequests ?? clientDefaults.maxPendingRequests,
    maxBufferedMessages: options.maxBufferedMessages ?? clientDefaults.maxBufferedMessages,
    gapWaitMs: options.gapWaitMs ?? clientDefaults.gapWaitMs,
    maxGapFillFailures: options.maxGapFillFailures ?? clientDefaults.maxGapFillFailures,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? clientDefaults.heartbeatIntervalMs,
    tokenRefreshMarginMs: options.tokenRefreshMarginMs ?? clientDefaults.tokenRefreshMarginMs,
    maxAuthFailures: options.maxAuthFailures ?? clientDefaults.maxAuthFailures,
    closeTimeoutMs: options.closeTimeoutMs ?? clientDefaults.closeTimeoutMs,
    maxRedirects: options.maxRedirects ?? clientDefaults.maxRedirects,
  };
  if ((options.url === undefined) === (options.route === undefined)) throw new TypeError('give either `url` (a fixed cell) or `route` (route mode), not both or neither');
  for (const [name, value] of Object.entries({ ...settings, ...backoff })) {
    if (!(value >= 0)) throw new RangeError(`${name} must be a number >= 0, got ${value}`);
  }
  if (backoff.jitter > 1) throw new RangeError(`backoff.jitter must be within [0, 1], got ${backoff.jitter}`);
  if (settings.maxPendingSends < 1 || settings.maxInFlightSends < 1 || settings.maxPendingRequests < 1) {
    throw new RangeError('maxPendingSends, maxInFlightSends and maxPendingRequests must be at least 1');
  }
  if (typeof options.token === 'string' && options.token.length === 0) throw new TypeError('token must not be empty');
  return { settings, backoff };
}
