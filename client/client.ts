import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import {
  PROTOCOL_VERSION,
  SUBPROTOCOL_V1,
  clientFrameSchemas,
  type ChatMessage,
  type ClientFrame,
  type ConversationSummary,
  type DeviceInfo,
  type HistoryFrame,
  type InboxFrame,
  type Limits,
  type PingFrame,
  type PresenceFrame,
  type ReadFrame,
  type Role,
  type ServerFrame,
} from '../cell/protocol/frames.js';
import { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
import { backoffDelayMs } from './backoff.js';
import { clientDefaults, type BackoffSettings } from './defaults.js';
import { TypedEmitter, type Listener } from './emitter.js';
import { ClientError, ClientErrorCode, type ClientErrorCodeValue, type ClientErrorDetails } from './errors.js';
import { TokenBucket } from '../platform/token-bucket.js';
import { chatMessageOf, parseServerFrame } from './server-frames.js';
import { jwtExpiresAtMs, type TokenSource } from './token.js';
import type { ClientConnection, ClientTransport, ConnectionListener, TransportErrorInfo } from './transport.js';

/** Where a cell serves WebSocket clients, used when `url` names only the host. */
export const DEFAULT_WEBSOCKET_PATH = '/v1/ws';
/** The most messages one history request may ask for (the protocol's bound). */
const HISTORY_PAGE_LIMIT = 200;
/** The most conversations a cell lists for one device (MAX_CONVERSATIONS_PER_DEVICE in the cell). */
const MAX_INBOX_CONVERSATIONS = 10_000;
const CMID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';
/** 20 characters of 36 symbols: about 103 random bits, so two devices never pick the same cmid. */
const CMID_LENGTH = 20;
/**
 * Server errors after which a request or send is worth repeating unchanged, after the wait the
 * server asked for (or a backoff). Every other error is final for that request.
 */
const TRANSIENT_ERROR_CODES: ReadonlySet<string> = new Set([
  ErrorCode.RateLimited,
  ErrorCode.StoreUnavailable,
  ErrorCode.ShuttingDown,
]);

/** Upgrade rejections that a fresh token may cure. */
const AUTH_REJECTIONS: ReadonlySet<string> = new Set([ErrorCode.TokenExpired, ErrorCode.TokenInvalid, ErrorCode.Unauthenticated]);
/**
 * Upgrade rejections that stay however often the client retries: the origin, the protocol
 * version or the merchant's home cell would have to change first.
 */
const FINAL_REJECTIONS: ReadonlySet<string> = new Set([
  ErrorCode.OriginForbidden,
  ErrorCode.UnsupportedVersion,
  ErrorCode.MerchantNotHosted,
]);
/** Upgrade rejections that may clear, but not within seconds (another device has to leave). */
const POLICY_REJECTIONS: ReadonlySet<string> = new Set([ErrorCode.DeviceLimit, ErrorCode.RateLimited]);

/**
 * `idle` until `connect()`; `connecting` while an attempt runs (token, upgrade, welcome); `open`
 * once the cell welcomed this device; `reconnecting` while waiting out the backoff before the
 * next attempt. `closed` (by `close()` or an error that retrying cannot fix) and `replaced`
 * (another connection of this device took over) are final.
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'replaced';

/** What the cell's `welcome` said about this session. */
export type SessionInfo = Omit<WelcomeFrame, 't' | 'v'> & { protocolVersion: number };

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Consecutive failed attempts; back to 0 after a connection proved stable. */
  attempt: number;
  /** With `reconnecting`: the wait before the next attempt. */
  delayMs?: number;
  /** The close code that ended the last connection, when it had one. */
  closeCode?: number;
  /** Why the last connection ended or the client stopped (none for a plain `close()`). */
  error?: ClientError;
  /** With `open`: the session. */
  session?: SessionInfo;
}

export interface SendResult {
  conv: string;
  cmid: string;
  seq: number;
  /** Cell time when the message became durable. */
  ts: number;
}

/**
 * A send to a conversation hosted by another cell than the one this device is connected to is
 * durable in that (access) cell, which forwards it; its seq follows with `sent`.
 */
export interface QueuedSend {
  conv: string;
  cmid: string;
}

export interface SendOptions {
  /**
   * The client message id; generated when absent. Reuse it to resend the same message (the same
   * body): with another body the send is rejected with IDEMPOTENCY_CONFLICT, and not retried.
   */
  cmid?: string;
  /**
   * Stops waiting for the confirmation. A send not yet transmitted is withdrawn; one already on
   * the wire may still be stored (and then shows up as a `message`), but is not resent.
   */
  signal?: AbortSignal;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface HistoryOptions extends RequestOptions {
  /** Messages with seq strictly below this; omitted means the newest. */
  before?: number;
  /** At most this many (1-200; the cell has its own default). */
  limit?: number;
}

export interface HistoryPage {
  /** Ascending by seq. */
  messages: ChatMessage[];
  /** Whether older messages exist (page on with `before: messages[0].seq`). */
  hasMore: boolean;
}

export interface PresenceQuery {
  /** Users whose online devices to list (customers may only ask for themselves). */
  users?: readonly string[];
  /** Merchants whose online agents to count. */
  merchants?: readonly string[];
}

export interface PresenceEntry {
  user: string;
  devices: DeviceInfo[];
}

export interface MerchantPresence {
  merchant: string;
  agentsOnline: number;
}

export interface PresenceResult {
  users: PresenceEntry[];
  merchants: MerchantPresence[];
}

export interface PingResult {
  /** From the last transmission of the ping to its pong. */
  rttMs: number;
  /** Cell time in the pong. */
  serverTs: number;
}

/** `user` read `conv` up to `seq`. */
export interface Receipt {
  conv: string;
  user: string;
  seq: number;
}

/** The online devices of this user changed. */
export interface DevicesChange {
  user: string;
  devices: DeviceInfo[];
}

export interface SyncedEvent {
  /** The session whose catch-up is complete. */
  session: string;
}

/**
 * Events of the client. `message` carries every message of every conversation of the user
 * exactly once per conversation seq, in seq order per conversation, including this device's own
 * sends (after their `sent`), so an app can render from it alone; `cursors()` tells how far.
 */
export interface ClientEvents {
  message: ChatMessage;
  sent: SendResult;
  /** A send is durable in the access cell and waits for its conversation's home cell; `sent` follows. */
  queued: QueuedSend;
  receipt: Receipt;
  devices: DevicesChange;
  /** The catch-up after a (re)connect is delivered; once per session. */
  synced: SyncedEvent;
  state: StateChange;
  /** Operating errors that belong to no pending call (transport failures, unfillable gaps...). */
  error: ClientError;
}

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
}

export interface CellmeshClientOptions extends Partial<ClientSettings> {
  /** `ws://host:port/v1/ws` (or just `ws://host:port`); the client adds the token. */
  url: string;
  token: TokenSource;
  transport: ClientTransport;
  clock: Clock;
  random: Random;
  backoff?: Partial<BackoffSettings>;
  /** Cursors (conversation to highest seq already handled) the app persisted from `cursors()`. */
  initialCursors?: Readonly<Record<string, number>>;
}

type ReplyType = 'history' | 'inbox' | 'presence' | 'ok' | 'pong';
type ReplyFrame = Extract<ServerFrame, { t: ReplyType }>;
type ReplyOf<Type extends ReplyType> = Extract<ServerFrame, { t: Type }>;
type RequestFrame = HistoryFrame | InboxFrame | PresenceFrame | ReadFrame | PingFrame;
type WelcomeFrame = Extract<ServerFrame, { t: 'welcome' }>;
type SentFrame = Extract<ServerFrame, { t: 'sent' }>;
type QueuedFrame = Extract<ServerFrame, { t: 'queued' }>;
type ErrorFrame = Extract<ServerFrame, { t: 'error' }>;

interface OutboxEntry {
  readonly id: string;
  readonly conv: string;
  readonly cmid: string;
  readonly body: string;
  /**
   * `waiting` to be transmitted on the current or next connection, `inflight` on it, or
   * `queued`: durable in the access cell named by `queuedAt`, which forwards it to the
   * conversation's home cell; only `sent` (or the own message pushed back) is awaited then.
   */
  phase: 'waiting' | 'inflight' | 'queued';
  /** With `queued`: the cell that holds the send. */
  queuedAt: string | undefined;
  /** The caller aborted after the send went on the wire; its confirmation is still awaited. */
  abandoned: boolean;
  transientFailures: number;
  readonly resolve: (result: SendResult) => void;
  readonly reject: (error: ClientError) => void;
  detachSignal: () => void;
}

interface PendingRequest {
  readonly id: string;
  readonly frame: RequestFrame;
  readonly expect: ReplyType;
  transmitted: boolean;
  lastSentAtMs: number;
  transientFailures: number;
  readonly timeoutTimer: TimerHandle;
  retryTimer: TimerHandle | undefined;
  readonly resolve: (reply: ReplyFrame) => void;
  readonly reject: (error: ClientError) => void;
  detachSignal: () => void;
}

interface HeldMessage {
  readonly message: ChatMessage;
  /** Pushed by the cell (as opposed to learnt from this device's own `sent`). */
  pushed: boolean;
}

interface ConversationState {
  readonly conv: string;
  /** Highest seq delivered with all before it; undefined until the client learns a baseline. */
  cursor: number | undefined;
  /** Messages past a gap, waiting for the gap to close. */
  readonly held: Map<number, HeldMessage>;
  /** Lowest seq the cell delivered in this session (pushed or confirmed as own); 0 for none. */
  deliveredLowSeq: number;
  /**
   * Whether the cell tracks this conversation for this connection, so that an ack is welcome:
   * it does for conversations that existed when the connection attached and for any it pushed;
   * it does not for one this device started in this session until the cell pushes something.
   */
  ackable: boolean;
  /** Highest seq acknowledged in this session. */
  ackedSeq: number;
  /** The `before` of the history request in flight for the gap, if one is. */
  fillBefore: number | undefined;
  fillFailures: number;
  fillRetryTimer: TimerHandle | undefined;
  gapCheckTimer: TimerHandle | undefined;
}

interface OpenWaiter {
  resolve(session: SessionInfo): void;
  reject(error: ClientError): void;
}

interface ConnectionEnd {
  closeCode?: number;
  closeReason?: string;
  /** Set when the client itself gave the connection up. */
  error?: ClientError;
}

type EndOutcome =
  | { kind: 'retry'; error: ClientError; policy: boolean; refreshToken: boolean }
  | { kind: 'fatal'; error: ClientError }
  | { kind: 'replaced'; error: ClientError };

/**
 * The cellmesh chat client. Its logic runs on the injected transport, clock and randomness only,
 * so the same code runs in Node, in browsers and in the deterministic simulator.
 *
 * It keeps one connection to the cell and reconnects with exponential backoff and jitter; keeps
 * an outbox of sends that it retransmits, in order and with their cmids, until each is confirmed;
 * delivers each conversation's messages in order and once, fetching missing ones with `history`;
 * and acknowledges deliveries cumulatively in batches.
 */
export class CellmeshClient {
  private readonly transport: ClientTransport;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly tokenSource: TokenSource;
  private readonly endpoint: URL;
  private readonly backoff: BackoffSettings;
  private readonly settings: ClientSettings;
  private readonly events = new TypedEmitter<ClientEvents>();

  private stateValue: ConnectionState = 'idle';
  /** Set from `welcome` to the end of the connection: frames may be transmitted exactly then. */
  private sessionValue: SessionInfo | undefined;
  private connection: ClientConnection | undefined;
  /** Bumped whenever a connection ends: events and timers of older generations are ignored. */
  private generation = 0;
  private failedAttempts = 0;
  private authFailures = 0;
  private lastTransportError: TransportErrorInfo | undefined;
  private openedAtMs: number | undefined;
  private lastReceivedMs = 0;
  private awaitingPongSinceMs: number | undefined;
  private attemptTimer: TimerHandle | undefined;
  private reconnectTimer: TimerHandle | undefined;
  private heartbeatTimer: TimerHandle | undefined;
  private ackTimer: TimerHandle | undefined;
  private resumeSendsTimer: TimerHandle | undefined;
  private tokenAbort: AbortController | undefined;
  private cachedToken: string | undefined;
  private tokenStale = false;
  /** Set once the client stopped for good; pending and later calls are rejected with it. */
  private terminalError: ClientError | undefined;
  private closing: { generation: number; done: () => void } | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly openWaiters = new Set<OpenWaiter>();

  private lastId = 0;
  /** Insertion-ordered: the order of `send` calls is the order of transmission. */
  private readonly outbox = new Map<string, OutboxEntry>();
  private inFlightSends = 0;
  private sendsPausedUntilMs = 0;
  private readonly requests = new Map<string, PendingRequest>();

  private readonly conversations = new Map<string, ConversationState>();
  private heldCount = 0;
  private fillsInFlight = 0;
  private readonly ackDirty = new Set<string>();
  /** Deliveries (pushes and own confirmations) since the last ack flush. */
  private unackedDeliveries = 0;
  /**
   * The cell's per-connection rate limit, mirrored from the welcome so the client paces its own
   * sends and requests instead of being refused (acks have a budget of their own on the cell,
   * which grows with every delivery, so batched acks never come near it). Sends leave a
   * quarter of the burst for requests.
   */
  private pacer: TokenBucket | undefined;
  private sessionSynced = false;
  private syncedPending = false;

  constructor(options: CellmeshClientOptions) {
    this.transport = options.transport;
    this.clock = options.clock;
    this.random = options.random;
    this.tokenSource = options.token;
    this.endpoint = endpointOf(options.url);
    this.backoff = { ...clientDefaults.backoff, ...options.backoff };
    this.settings = {
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
    };
    for (const [name, value] of Object.entries({ ...this.settings, ...this.backoff })) {
      if (!(value >= 0)) throw new RangeError(`${name} must be a number >= 0, got ${value}`);
    }
    if (this.backoff.jitter > 1) throw new RangeError(`backoff.jitter must be within [0, 1], got ${this.backoff.jitter}`);
    if (this.settings.maxPendingSends < 1 || this.settings.maxInFlightSends < 1 || this.settings.maxPendingRequests < 1) {
      throw new RangeError('maxPendingSends, maxInFlightSends and maxPendingRequests must be at least 1');
    }
    if (typeof options.token === 'string' && options.token.length === 0) throw new TypeError('token must not be empty');
    for (const [conv, seq] of Object.entries(options.initialCursors ?? {})) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`initial cursor of ${conv} must be an integer >= 0, got ${seq}`);
      this.conversation(conv).cursor = seq;
    }
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The current session, while the state is `open`. */
  get session(): SessionInfo | undefined {
    return this.sessionValue;
  }

  on<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): () => void {
    return this.events.on(event, listener);
  }

  once<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): () => void {
    return this.events.once(event, listener);
  }

  off<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): void {
    this.events.off(event, listener);
  }

  /**
   * Conversation to the highest seq delivered through `message` with everything before it.
   * Persist it and pass it back as `initialCursors` to resume without repeats or holes.
   */
  cursors(): Record<string, number> {
    const result: Record<string, number> = {};
    for (const conversation of this.conversations.values()) {
      if (conversation.cursor !== undefined) result[conversation.conv] = conversation.cursor;
    }
    return result;
  }

  /**
   * Starts connecting (on the first call) and resolves with the session once the cell welcomed
   * this device. Failed attempts are retried with backoff meanwhile; the promise rejects only
   * when the client stops for good or `signal` aborts (which stops the waiting, not the client).
   */
  connect(signal?: AbortSignal): Promise<SessionInfo> {
    const refusal = this.refusal(signal);
    if (refusal !== undefined) return Promise.reject(refusal);
    const session = this.sessionValue;
    if (session !== undefined) return Promise.resolve(session);
    const opened = new Promise<SessionInfo>((resolve, reject) => {
      const waiter: OpenWaiter = {
        resolve: (value) => {
          detach();
          resolve(value);
        },
        reject: (error) => {
          detach();
          reject(error);
        },
      };
      const detach = onAbort(signal, () => {
        this.openWaiters.delete(waiter);
        reject(abortedError());
      });
      this.openWaiters.add(waiter);
    });
    if (this.stateValue === 'idle') this.beginAttempt();
    return opened;
  }

  /**
   * Sends `body` to `conv` and resolves with its seq once the conversation's cell stored it
   * durably. Until then the send waits in the outbox and is retransmitted, with the same cmid,
   * after every reconnect and after rate limiting; rejects with the cell's code for errors that
   * retrying cannot fix. A send to a conversation hosted by another cell is first `queued` (an
   * event): durable in the connected cell, which forwards it; it is then not retransmitted to
   * that cell, and resolves when `sent` arrives or when the message comes back as a push.
   */
  send(conv: string, body: string, options: SendOptions = {}): Promise<SendResult> {
    const refusal = this.refusal(options.signal);
    if (refusal !== undefined) return Promise.reject(refusal);
    if (this.outbox.size >= this.settings.maxPendingSends) {
      return Promise.reject(
        new ClientError(ClientErrorCode.OutboxFull, `${this.outbox.size} sends already wait for confirmation`, { conv }),
      );
    }
    const id = this.nextId('s');
    const cmid = options.cmid ?? this.newCmid();
    const invalid = invalidFrame({ op: 'send', id, conv, cmid, body });
    if (invalid !== undefined) return Promise.reject(invalid);
    return new Promise<SendResult>((resolve, reject) => {
      const entry: OutboxEntry = {
        id,
        conv,
        cmid,
        body,
        phase: 'waiting',
        queuedAt: undefined,
        abandoned: false,
        transientFailures: 0,
        resolve,
        reject,
        detachSignal: () => {},
      };
      entry.detachSignal = onAbort(options.signal, () => this.abandonSend(entry));
      this.outbox.set(id, entry);
      this.pumpOutbox();
    });
  }

  /** A page of `conv`'s stored messages, ascending; see `HistoryOptions` for paging. */
  async history(conv: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const { reply } = await this.request(
      'history',
      (id) => ({ op: 'history', id, conv, before: options.before, limit: options.limit }),
      options.signal,
    );
    return { messages: reply.messages.map(chatMessageOf), hasMore: reply.hasMore };
  }

  /**
   * The user's conversations with their cursors and unread counts. The cell answers in pages
   * bounded in bytes (docs/protocol.md, `inbox`); this asks for one after the other.
   */
  async inbox(options: RequestOptions = {}): Promise<ConversationSummary[]> {
    const conversations: ConversationSummary[] = [];
    let after: string | undefined;
    // Each page holds at least one conversation, and a cell serves at most MAX_INBOX_CONVERSATIONS.
    for (let page = 0; page < MAX_INBOX_CONVERSATIONS; page++) {
      const { reply } = await this.request('inbox', (id) => ({ op: 'inbox', id, ...(after === undefined ? {} : { after }) }), options.signal);
      conversations.push(...reply.conversations);
      after = reply.conversations.at(-1)?.conv;
      // An older cell answers everything at once, without `hasMore`.
      if (reply.hasMore !== true || after === undefined) break;
    }
    return conversations;
  }

  /** The online devices of users and the number of online agents of merchants (up to 100 each). */
  async presence(query: PresenceQuery, options: RequestOptions = {}): Promise<PresenceResult> {
    const { reply } = await this.request(
      'presence',
      (id) => ({
        op: 'presence',
        id,
        ...(query.users === undefined ? {} : { users: [...query.users] }),
        ...(query.merchants === undefined ? {} : { merchants: [...query.merchants] }),
      }),
      options.signal,
    );
    return { users: reply.users, merchants: reply.merchants };
  }

  /** Marks `conv` read up to `seq` for this user; the cell tells the other party and devices. */
  async read(conv: string, seq: number, options: RequestOptions = {}): Promise<void> {
    await this.request('ok', (id) => ({ op: 'read', id, conv, seq }), options.signal);
  }

  /** A round trip through the cell. */
  async ping(options: RequestOptions = {}): Promise<PingResult> {
    const { reply, sentAtMs } = await this.request('pong', (id) => ({ op: 'ping', id }), options.signal);
    return { rttMs: this.clock.now() - sentAtMs, serverTs: reply.ts };
  }

  /**
   * Stops the client: flushes pending acks, closes the connection normally, stops reconnecting,
   * and rejects pending sends and requests with CLIENT_CLOSED. Resolves when the connection
   * confirmed the close, or after `closeTimeoutMs`.
   */
  close(): Promise<void> {
    if (this.closePromise !== undefined) return this.closePromise;
    if (this.terminalError !== undefined) return Promise.resolve();
    if (this.sessionValue !== undefined) this.flushAcks();
    const closingGeneration = this.generation;
    const hasConnection = this.connection !== undefined;
    this.closePromise = new Promise<void>((resolve) => {
      if (!hasConnection) {
        resolve();
        return;
      }
      const finish = () => {
        timer.cancel();
        this.closing = undefined;
        resolve();
      };
      const timer = this.clock.setTimer(this.settings.closeTimeoutMs, finish);
      this.closing = { generation: closingGeneration, done: finish };
    });
    this.enterTerminal('closed', new ClientError(ClientErrorCode.ClientClosed, 'the client was closed'), undefined);
    return this.closePromise;
  }

  // ---------------------------------------------------------------------------------------------
  // Connection lifecycle

  private beginAttempt(): void {
    this.reconnectTimer = cancelTimer(this.reconnectTimer);
    this.setState('connecting', {});
    // A state listener may have closed the client.
    if (this.terminalError !== undefined) return;
    const generation = ++this.generation;
    this.lastTransportError = undefined;
    this.attemptTimer = this.clock.setTimer(this.settings.connectTimeoutMs, () => {
      this.dropConnection(
        generation,
        new ClientError(ClientErrorCode.ConnectTimeout, `no session within ${this.settings.connectTimeoutMs} ms`),
      );
    });
    const provider = this.tokenSource;
    if (typeof provider === 'string') {
      this.openConnection(generation, provider);
      return;
    }
    const cached = this.cachedTokenIfFresh();
    if (cached !== undefined) {
      this.openConnection(generation, cached);
      return;
    }
    const controller = new AbortController();
    this.tokenAbort = controller;
    let pending: Promise<string>;
    try {
      pending = provider(controller.signal);
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (fresh) => {
        if (generation !== this.generation) return;
        this.tokenAbort = undefined;
        if (typeof fresh !== 'string' || fresh.length === 0) {
          this.connectionEnded(generation, {
            error: new ClientError(ClientErrorCode.TokenProviderFailed, 'the token provider returned no token'),
          });
          return;
        }
        this.cachedToken = fresh;
        this.tokenStale = false;
        this.openConnection(generation, fresh);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        this.tokenAbort = undefined;
        this.connectionEnded(generation, {
          error: new ClientError(
            ClientErrorCode.TokenProviderFailed,
            `the token provider failed: ${messageOf(error)}`,
            {},
            error,
          ),
        });
      },
    );
  }

  /** The provider's last token, unless it was rejected or is about to expire. */
  private cachedTokenIfFresh(): string | undefined {
    const token = this.cachedToken;
    if (token === undefined || this.tokenStale) return undefined;
    const expiresAtMs = jwtExpiresAtMs(token);
    if (expiresAtMs !== undefined && expiresAtMs - this.settings.tokenRefreshMarginMs <= this.clock.now()) {
      return undefined;
    }
    return token;
  }

  private openConnection(generation: number, token: string): void {
    const url = new URL(this.endpoint.href);
    url.searchParams.set('token', token);
    const listener: ConnectionListener = {
      onOpen: () => {
        // Nothing to do: the session begins with the cell's welcome, not with the upgrade.
      },
      onMessage: (text) => {
        if (generation === this.generation) this.onText(generation, text);
      },
      onError: (info) => {
        if (generation === this.generation) this.onTransportError(info);
      },
      onClose: (code, reason) => {
        if (this.closing?.generation === generation) this.closing.done();
        this.connectionEnded(generation, { closeCode: code, closeReason: reason });
      },
    };
    try {
      this.connection = this.transport.connect(url.href, [SUBPROTOCOL_V1], listener);
    } catch (error) {
      this.connectionEnded(generation, {
        error: new ClientError(ClientErrorCode.ConnectionFailed, `connecting failed: ${messageOf(error)}`, {}, error),
      });
    }
  }

  private onTransportError(info: TransportErrorInfo): void {
    this.lastTransportError = info;
    const status = info.httpStatus;
    const code = info.code ?? (status === undefined ? ClientErrorCode.ConnectionFailed : codeOfStatus(status));
    this.events.emit('error', new ClientError(code, info.message, status === undefined ? {} : { httpStatus: status }));
  }

  /** Gives the connection of `generation` up from this side, then handles it as ended. */
  private dropConnection(generation: number, error: ClientError): void {
    if (generation !== this.generation) return;
    const connection = this.connection;
    this.connectionEnded(generation, { error });
    // The generation moved on, so this connection's own close event is ignored.
    connection?.close(1000, error.code);
  }

  private connectionEnded(generation: number, end: ConnectionEnd): void {
    if (generation !== this.generation || this.terminalError !== undefined) return;
    const wasOpen = this.sessionValue !== undefined;
    const transportError = this.lastTransportError;
    const stable =
      wasOpen && this.openedAtMs !== undefined && this.clock.now() - this.openedAtMs >= this.backoff.stableAfterMs;
    this.endSession();
    if (stable) this.failedAttempts = 0;
    const outcome = this.classifyEnd(end, transportError, wasOpen);
    if (outcome.kind === 'replaced') {
      this.enterTerminal('replaced', outcome.error, outcome.error);
      return;
    }
    if (outcome.kind === 'fatal') {
      this.enterTerminal('closed', outcome.error, outcome.error);
      return;
    }
    if (outcome.refreshToken) this.tokenStale = true;
    this.failedAttempts++;
    if (this.failedAttempts > this.settings.maxReconnectAttempts) {
      const error = new ClientError(
        ClientErrorCode.ReconnectFailed,
        `gave up after ${this.failedAttempts} failed attempts: ${outcome.error.message}`,
        outcome.error.details,
        outcome.error,
      );
      this.enterTerminal('closed', error, error);
      return;
    }
    const delayMs = backoffDelayMs(this.backoff, this.failedAttempts, this.random, outcome.policy);
    this.reconnectTimer = this.clock.setTimer(delayMs, () => {
      this.reconnectTimer = undefined;
      this.beginAttempt();
    });
    this.setState('reconnecting', {
      delayMs,
      error: outcome.error,
      ...(end.closeCode === undefined ? {} : { closeCode: end.closeCode }),
    });
  }

  /** Decides, from how a connection ended, whether and how to try again. */
  private classifyEnd(end: ConnectionEnd, transportError: TransportErrorInfo | undefined, wasOpen: boolean): EndOutcome {
    const code = end.closeCode;
    const closeDetails: ClientErrorDetails = code === undefined ? {} : { closeCode: code };
    const reason = end.closeReason ? `: ${end.closeReason}` : '';
    if (code === CloseCode.Replaced) {
      return {
        kind: 'replaced',
        error: new ClientError(ClientErrorCode.Replaced, `another connection of this device took over${reason}`, closeDetails),
      };
    }
    if (code === CloseCode.TokenExpired) {
      const refusedCode = wasOpen ? undefined : transportError?.code;
      const error =
        refusedCode === undefined
          ? new ClientError(ErrorCode.TokenExpired, `the token expired during the session${reason}`, closeDetails)
          : new ClientError(refusedCode, transportError?.message ?? refusedCode, closeDetails);
      if (!this.hasTokenProvider()) return { kind: 'fatal', error };
      if (refusedCode !== undefined && ++this.authFailures >= this.settings.maxAuthFailures) return { kind: 'fatal', error };
      return { kind: 'retry', error, policy: false, refreshToken: true };
    }
    if (code === CloseCode.PolicyViolation) {
      const error = new ClientError(ClientErrorCode.ConnectionLost, `closed for a policy violation${reason}`, closeDetails);
      return { kind: 'retry', error, policy: true, refreshToken: false };
    }
    const status = transportError?.httpStatus;
    if (!wasOpen && transportError !== undefined && (status !== undefined || transportError.code !== undefined)) {
      const rejectionCode = transportError.code ?? (status === undefined ? ClientErrorCode.ConnectionFailed : codeOfStatus(status));
      const error = new ClientError(rejectionCode, transportError.message, status === undefined ? {} : { httpStatus: status });
      if (FINAL_REJECTIONS.has(rejectionCode) || status === 403 || status === 426) return { kind: 'fatal', error };
      if (AUTH_REJECTIONS.has(rejectionCode) || status === 401) {
        if (!this.hasTokenProvider()) return { kind: 'fatal', error };
        this.authFailures++;
        if (this.authFailures >= this.settings.maxAuthFailures) return { kind: 'fatal', error };
        return { kind: 'retry', error, policy: false, refreshToken: true };
      }
      if (POLICY_REJECTIONS.has(rejectionCode) || status === 409 || status === 429) {
        return { kind: 'retry', error, policy: true, refreshToken: false };
      }
      return { kind: 'retry', error, policy: false, refreshToken: false };
    }
    if (end.error !== undefined) return { kind: 'retry', error: end.error, policy: false, refreshToken: false };
    const error = wasOpen
      ? new ClientError(ClientErrorCode.ConnectionLost, `the connection closed (${code ?? 'no code'})${reason}`, closeDetails)
      : new ClientError(
          ClientErrorCode.ConnectionFailed,
          transportError?.message ?? `the connection closed (${code ?? 'no code'}) before the session began${reason}`,
          closeDetails,
        );
    return { kind: 'retry', error, policy: false, refreshToken: false };
  }

  private hasTokenProvider(): boolean {
    return typeof this.tokenSource !== 'string';
  }

  /** Forgets everything that belonged to the current connection; the outbox and requests stay. */
  private endSession(): void {
    this.generation++;
    this.attemptTimer = cancelTimer(this.attemptTimer);
    this.heartbeatTimer = cancelTimer(this.heartbeatTimer);
    this.ackTimer = cancelTimer(this.ackTimer);
    this.resumeSendsTimer = cancelTimer(this.resumeSendsTimer);
    this.tokenAbort?.abort();
    this.tokenAbort = undefined;
    this.connection = undefined;
    this.sessionValue = undefined;
    this.openedAtMs = undefined;
    this.awaitingPongSinceMs = undefined;
    this.lastTransportError = undefined;
    this.pacer = undefined;
    this.ackDirty.clear();
    this.unackedDeliveries = 0;
    this.sessionSynced = false;
    this.syncedPending = false;
    for (const conversation of this.conversations.values()) {
      conversation.deliveredLowSeq = 0;
      conversation.ackable = false;
      conversation.ackedSeq = 0;
    }
    for (const entry of this.outbox.values()) {
      if (entry.phase === 'waiting') continue;
      // An abandoned send is not retransmitted; if it was stored, the catch-up brings it.
      if (entry.abandoned) this.outbox.delete(entry.id);
      // A queued send needs no retransmission to the cell that holds it (see onWelcome).
      else if (entry.phase === 'inflight') entry.phase = 'waiting';
    }
    this.inFlightSends = 0;
    for (const request of this.requests.values()) {
      request.transmitted = false;
      request.retryTimer = cancelTimer(request.retryTimer);
    }
  }

  private enterTerminal(state: 'closed' | 'replaced', rejection: ClientError, stateError: ClientError | undefined): void {
    const connection = this.connection;
    this.endSession();
    this.terminalError = rejection;
    this.reconnectTimer = cancelTimer(this.reconnectTimer);
    for (const conversation of this.conversations.values()) {
      conversation.fillRetryTimer = cancelTimer(conversation.fillRetryTimer);
      conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
    }
    const entries = [...this.outbox.values()];
    this.outbox.clear();
    for (const entry of entries) {
      entry.detachSignal();
      if (!entry.abandoned) entry.reject(rejection);
    }
    const requests = [...this.requests.values()];
    this.requests.clear();
    for (const request of requests) {
      request.timeoutTimer.cancel();
      request.detachSignal();
      request.reject(rejection);
    }
    const waiters = [...this.openWaiters];
    this.openWaiters.clear();
    for (const waiter of waiters) waiter.reject(rejection);
    connection?.close(1000, rejection.code);
    this.setState(state, stateError === undefined ? {} : { error: stateError });
  }

  private setState(state: ConnectionState, change: Omit<StateChange, 'state' | 'previous' | 'attempt'>): void {
    const previous = this.stateValue;
    this.stateValue = state;
    this.events.emit('state', { state, previous, attempt: this.failedAttempts, ...change });
  }

  // ---------------------------------------------------------------------------------------------
  // Incoming frames

  private onText(generation: number, text: string): void {
    this.lastReceivedMs = this.clock.now();
    this.awaitingPongSinceMs = undefined;
    const parsed = parseServerFrame(text);
    if (parsed.kind === 'unknown') return; // a push of a newer protocol revision
    if (parsed.kind === 'malformed') {
      this.events.emit('error', new ClientError(ClientErrorCode.ProtocolError, `unreadable frame from the cell: ${parsed.reason}`));
      return;
    }
    const frame = parsed.frame;
    if (this.sessionValue === undefined) {
      if (frame.t === 'welcome') this.onWelcome(generation, frame);
      else if (frame.t === 'error') {
        // A browser's refused upgrade: the cell explains in band, then closes (4401/4403/4429).
        this.lastTransportError = { message: frame.message, code: frame.code };
        this.onErrorFrame(frame);
      } else this.dropConnection(generation, new ClientError(ClientErrorCode.ProtocolError, `expected 'welcome' first, got '${frame.t}'`));
      return;
    }
    switch (frame.t) {
      case 'welcome':
        this.dropConnection(generation, new ClientError(ClientErrorCode.ProtocolError, 'a second welcome in one session'));
        return;
      case 'msg':
        this.onPushedMessage(chatMessageOf(frame));
        return;
      case 'sent':
        this.onSent(frame);
        return;
      case 'queued':
        this.onQueued(frame);
        return;
      case 'receipt':
        this.events.emit('receipt', { conv: frame.conv, user: frame.user, seq: frame.seq });
        return;
      case 'devices':
        this.events.emit('devices', { user: frame.user, devices: frame.devices });
        return;
      case 'synced':
        this.onSynced();
        return;
      case 'error':
        this.onErrorFrame(frame);
        return;
      case 'history':
      case 'inbox':
      case 'presence':
      case 'ok':
      case 'pong':
        this.onReply(frame);
        return;
    }
  }

  private onWelcome(generation: number, frame: WelcomeFrame): void {
    if (frame.v !== PROTOCOL_VERSION) {
      const error = new ClientError(ErrorCode.UnsupportedVersion, `the cell speaks protocol ${frame.v}, this client ${PROTOCOL_VERSION}`);
      this.enterTerminal('closed', error, error);
      return;
    }
    this.attemptTimer = cancelTimer(this.attemptTimer);
    const { t: _type, v: protocolVersion, ...welcome } = frame;
    const session: SessionInfo = { ...welcome, protocolVersion };
    this.sessionValue = session;
    this.openedAtMs = this.clock.now();
    this.authFailures = 0;
    this.pacer = new TokenBucket(frame.limits.ratePerSecond, frame.limits.rateBurst, this.openedAtMs);
    // Conversations this client knew before the connection existed before it attached, so the
    // cell tracks them for this connection.
    for (const conversation of this.conversations.values()) conversation.ackable = conversation.cursor !== undefined;
    // Sends queued in another cell are sent again through this one (the cmid keeps that safe):
    // the other cell may not come back, and this one answers with the seq once it knows it.
    for (const entry of this.outbox.values()) {
      if (entry.phase === 'queued' && entry.queuedAt !== frame.cell) {
        entry.phase = 'waiting';
        entry.queuedAt = undefined;
      }
    }
    // Requests and sends waited longest, so they go first; then gaps that the cell will not push
    // again are fetched.
    for (const request of this.requests.values()) {
      if (!request.transmitted) this.transmitRequest(request);
    }
    this.pumpOutbox();
    for (const conversation of this.conversations.values()) {
      if (conversation.held.size > 0) this.advance(conversation);
    }
    if (this.settings.heartbeatIntervalMs > 0) this.armHeartbeat(generation, this.settings.heartbeatIntervalMs);
    const waiters = [...this.openWaiters];
    this.openWaiters.clear();
    for (const waiter of waiters) waiter.resolve(session);
    this.setState('open', { session });
  }

  private onErrorFrame(frame: ErrorFrame): void {
    const details: ClientErrorDetails = frame.retryAfterMs === undefined ? {} : { retryAfterMs: frame.retryAfterMs };
    const error = new ClientError(frame.code, frame.message, details);
    if (frame.id !== undefined) {
      const entry = this.outbox.get(frame.id);
      if (entry !== undefined) {
        this.onSendError(entry, error);
        return;
      }
      const request = this.requests.get(frame.id);
      if (request !== undefined) {
        this.onRequestError(request, error);
        return;
      }
    } else if (frame.code === ErrorCode.RateLimited) {
      this.onAnonymousRateLimit();
    }
    // A relayed send refused by its home cell after this device's connection that sent it ended.
    const refused = frame.conv === undefined || frame.cmid === undefined ? undefined : this.outboxEntryOf({ conv: frame.conv, cmid: frame.cmid });
    if (refused !== undefined) {
      this.onSendError(refused, error);
      return;
    }
    this.events.emit('error', error);
  }

  private onReply(frame: ReplyFrame): void {
    // A pong without an id answers the heartbeat, which needs nothing but the frame's arrival.
    if (frame.id === undefined) return;
    const request = this.requests.get(frame.id);
    // A late reply to a request that timed out or was aborted.
    if (request === undefined) return;
    if (request.expect !== frame.t) {
      this.settleRequest(
        request,
        new ClientError(ClientErrorCode.ProtocolError, `expected '${request.expect}' in reply to '${request.frame.op}', got '${frame.t}'`),
      );
      return;
    }
    this.settleRequest(request, frame);
  }

  // ---------------------------------------------------------------------------------------------
  // Sending

  private pumpOutbox(): void {
    const pacer = this.pacer;
    if (this.sessionValue === undefined || pacer === undefined) return;
    const nowMs = this.clock.now();
    if (nowMs < this.sendsPausedUntilMs) {
      this.resumeSendsAfter(this.sendsPausedUntilMs - nowMs);
      return;
    }
    for (const entry of this.outbox.values()) {
      if (this.inFlightSends >= this.settings.maxInFlightSends) return;
      if (entry.phase !== 'waiting') continue;
      // A send the cell refused already waited what it asked; it need not wait for the reserve.
      const reserve = entry.transientFailures > 0 ? 0 : Math.floor(pacer.burst / 4);
      if (!pacer.take(nowMs, reserve)) {
        this.resumeSendsAfter(pacer.waitMs(nowMs, reserve));
        return;
      }
      entry.phase = 'inflight';
      this.inFlightSends++;
      this.transmit({ op: 'send', id: entry.id, conv: entry.conv, cmid: entry.cmid, body: entry.body });
    }
  }

  private resumeSendsAfter(delayMs: number): void {
    this.resumeSendsTimer ??= this.clock.setTimer(delayMs, () => {
      this.resumeSendsTimer = undefined;
      this.pumpOutbox();
    });
  }

  private pauseSends(delayMs: number): void {
    const untilMs = this.clock.now() + Math.max(0, delayMs);
    if (untilMs <= this.sendsPausedUntilMs) return;
    this.sendsPausedUntilMs = untilMs;
    this.resumeSendsTimer = cancelTimer(this.resumeSendsTimer);
    this.pumpOutbox();
  }

  private onSent(frame: SentFrame): void {
    const entry = this.outboxEntryOf(frame);
    // Only this client's sends are confirmed on its connection; an unknown one is a repeat.
    if (entry === undefined) return;
    this.confirm(entry, { conv: frame.conv, cmid: frame.cmid, seq: frame.seq, ts: frame.ts });
    const session = this.sessionValue;
    // A `sent` listener may have closed the client.
    if (session === undefined) return;
    const conversation = this.conversation(frame.conv);
    // The first delivery of a conversation in this session being this device's own seq 1 means
    // this device just started it, and the cell does not track it for this connection yet.
    // Anything later existed when the connection attached.
    if (conversation.deliveredLowSeq === 0 && !conversation.ackable) conversation.ackable = frame.seq > 1;
    this.noteDelivered(conversation, frame.seq);
    const own: ChatMessage = {
      conv: frame.conv,
      seq: frame.seq,
      from: session.user,
      role: session.role,
      device: session.device,
      cmid: entry.cmid,
      body: entry.body,
      ts: frame.ts,
    };
    this.accept(conversation, own, false);
    this.noteAck(conversation);
    this.flushAcksIfWindowHalfUsed();
    this.pumpOutbox();
  }

  private confirm(entry: OutboxEntry, result: SendResult): void {
    this.removeEntry(entry);
    if (!entry.abandoned) entry.resolve(result);
    this.events.emit('sent', result);
  }

  /** The send a frame answers: by request id, else by conversation and cmid among those on the wire or queued. */
  private outboxEntryOf(frame: { id?: string; conv: string; cmid: string }): OutboxEntry | undefined {
    if (frame.id !== undefined) {
      const entry = this.outbox.get(frame.id);
      if (entry !== undefined) return entry;
    }
    for (const entry of this.outbox.values()) {
      if (entry.phase !== 'waiting' && entry.conv === frame.conv && entry.cmid === frame.cmid) return entry;
    }
    return undefined;
  }

  /**
   * The access cell holds the send durably and forwards it; it stops counting as in flight (a
   * partition between the cells must not stall this device's other sends) and waits for `sent`.
   */
  private onQueued(frame: QueuedFrame): void {
    const entry = this.outboxEntryOf(frame);
    if (entry === undefined || entry.phase !== 'inflight') return;
    entry.phase = 'queued';
    entry.queuedAt = this.sessionValue?.cell;
    this.inFlightSends--;
    this.events.emit('queued', { conv: entry.conv, cmid: entry.cmid });
    this.pumpOutbox();
  }

  /**
   * A pushed message that is this user's own send still waiting for `sent`: the confirmation
   * that a restarted access cell can no longer give (or that went to an earlier connection).
   * The message itself is delivered by the push.
   */
  private confirmOwnPush(message: ChatMessage): void {
    if (message.from !== this.sessionValue?.user) return;
    for (const entry of this.outbox.values()) {
      if (entry.conv === message.conv && entry.cmid === message.cmid) {
        this.confirm(entry, { conv: message.conv, cmid: message.cmid, seq: message.seq, ts: message.ts });
        return;
      }
    }
  }

  private onSendError(entry: OutboxEntry, error: ClientError): void {
    if (entry.phase === 'inflight') this.inFlightSends--;
    entry.phase = 'waiting';
    entry.queuedAt = undefined;
    if (TRANSIENT_ERROR_CODES.has(error.code) && !entry.abandoned) {
      // Later sends wait too: sending them now would likely be refused as well, and overtaking
      // this one would store the user's messages out of the order they were written.
      entry.transientFailures++;
      if (error.code === ErrorCode.RateLimited) this.pacer?.drain(this.clock.now());
      this.pauseSends(error.details.retryAfterMs ?? backoffDelayMs(this.backoff, entry.transientFailures, this.random));
      return;
    }
    this.removeEntry(entry);
    if (!entry.abandoned) entry.reject(new ClientError(error.code, error.message, { ...error.details, conv: entry.conv }));
    this.pumpOutbox();
  }

  private abandonSend(entry: OutboxEntry): void {
    if (this.outbox.get(entry.id) !== entry || entry.abandoned) return;
    entry.abandoned = true;
    entry.detachSignal();
    entry.reject(abortedError());
    // One already on the wire may still be stored; its confirmation is awaited so that the
    // message still joins the conversation's stream in order.
    if (entry.phase === 'waiting') this.outbox.delete(entry.id);
  }

  private removeEntry(entry: OutboxEntry): void {
    this.outbox.delete(entry.id);
    if (entry.phase === 'inflight') this.inFlightSends--;
    entry.detachSignal();
  }

  // ---------------------------------------------------------------------------------------------
  // Requests with replies

  private request<Type extends ReplyType>(
    expect: Type,
    build: (id: string) => RequestFrame,
    signal: AbortSignal | undefined,
  ): Promise<{ reply: ReplyOf<Type>; sentAtMs: number }> {
    const refusal = this.refusal(signal);
    if (refusal !== undefined) return Promise.reject(refusal);
    if (this.requests.size >= this.settings.maxPendingRequests) {
      return Promise.reject(
        new ClientError(ClientErrorCode.RequestQueueFull, `${this.requests.size} requests already wait for replies`),
      );
    }
    const frame = build(this.nextId('r'));
    const invalid = invalidFrame(frame);
    if (invalid !== undefined) return Promise.reject(invalid);
    return new Promise((resolve, reject) => {
      const request: PendingRequest = {
        id: frame.id ?? '',
        frame,
        expect,
        transmitted: false,
        lastSentAtMs: 0,
        transientFailures: 0,
        timeoutTimer: this.clock.setTimer(this.settings.requestTimeoutMs, () => {
          this.settleRequest(
            request,
            new ClientError(ClientErrorCode.RequestTimeout, `no reply to ${frame.op} within ${this.settings.requestTimeoutMs} ms`),
          );
        }),
        retryTimer: undefined,
        resolve: (reply) => resolve({ reply: reply as ReplyOf<Type>, sentAtMs: request.lastSentAtMs }),
        reject,
        detachSignal: () => {},
      };
      request.detachSignal = onAbort(signal, () => this.settleRequest(request, abortedError()));
      this.requests.set(request.id, request);
      if (this.sessionValue !== undefined) this.transmitRequest(request);
    });
  }

  private transmitRequest(request: PendingRequest): void {
    request.transmitted = true;
    request.lastSentAtMs = this.clock.now();
    // Requests are few and someone waits for each; they go out at once and only use the budget.
    this.pacer?.spend(request.lastSentAtMs);
    this.transmit(request.frame);
  }

  private onRequestError(request: PendingRequest, error: ClientError): void {
    if (!TRANSIENT_ERROR_CODES.has(error.code)) {
      this.settleRequest(request, error);
      return;
    }
    // Repeated until it succeeds or its timeout, which keeps running, ends it.
    request.transientFailures++;
    request.transmitted = false;
    const delayMs = error.details.retryAfterMs ?? backoffDelayMs(this.backoff, request.transientFailures, this.random);
    request.retryTimer = cancelTimer(request.retryTimer);
    const generation = this.generation;
    request.retryTimer = this.clock.setTimer(delayMs, () => {
      request.retryTimer = undefined;
      if (generation === this.generation && this.requests.get(request.id) === request) this.transmitRequest(request);
    });
  }

  private settleRequest(request: PendingRequest, outcome: ClientError | ReplyFrame): void {
    if (this.requests.get(request.id) !== request) return;
    this.requests.delete(request.id);
    request.timeoutTimer.cancel();
    request.retryTimer = cancelTimer(request.retryTimer);
    request.detachSignal();
    if (outcome instanceof ClientError) request.reject(outcome);
    else request.resolve(outcome);
  }

  // ---------------------------------------------------------------------------------------------
  // Ordered, once-only delivery

  private conversation(conv: string): ConversationState {
    let conversation = this.conversations.get(conv);
    if (conversation === undefined) {
      conversation = {
        conv,
        cursor: undefined,
        held: new Map(),
        deliveredLowSeq: 0,
        ackable: false,
        ackedSeq: 0,
        fillBefore: undefined,
        fillFailures: 0,
        fillRetryTimer: undefined,
        gapCheckTimer: undefined,
      };
      this.conversations.set(conv, conversation);
    }
    return conversation;
  }

  private onPushedMessage(message: ChatMessage): void {
    this.confirmOwnPush(message);
    // A `sent` listener may have closed the client.
    if (this.sessionValue === undefined) return;
    const conversation = this.conversation(message.conv);
    conversation.ackable = true;
    this.noteDelivered(conversation, message.seq);
    this.accept(conversation, message, true);
    this.noteAck(conversation);
    this.flushAcksIfWindowHalfUsed();
  }

  /**
   * Counts a delivery toward the cell's window: a push, or a `sent` (which the cell counts as
   * delivering the own message to this device). The cell stops pushing when a window of
   * deliveries is unacknowledged, so acks go out at once when half of it is used.
   */
  private noteDelivered(conversation: ConversationState, seq: number): void {
    conversation.deliveredLowSeq = conversation.deliveredLowSeq === 0 ? seq : Math.min(conversation.deliveredLowSeq, seq);
    this.unackedDeliveries++;
  }

  private flushAcksIfWindowHalfUsed(): void {
    const session = this.sessionValue;
    if (session !== undefined && this.unackedDeliveries >= Math.max(1, Math.floor(session.limits.deliveryWindow / 2))) {
      this.flushAcks();
    }
  }

  private accept(conversation: ConversationState, message: ChatMessage, pushed: boolean): void {
    if (conversation.cursor === undefined) {
      if (!pushed) {
        // Without a baseline an own message cannot tell whether earlier ones are still to be
        // pushed (the catch-up may not have reached this conversation yet); it waits for them.
        this.hold(conversation, message, false);
        this.scheduleGapCheck(conversation);
        return;
      }
      // The cell pushes from this device's delivery cursor: the first push is the baseline.
      conversation.cursor = Math.min(message.seq, this.lowestHeld(conversation) ?? message.seq) - 1;
    }
    if (message.seq <= conversation.cursor) return;
    if (message.seq === conversation.cursor + 1) this.deliver(conversation, message);
    else this.hold(conversation, message, pushed);
    this.advance(conversation);
  }

  /** Delivers what became contiguous, then sees to what is still missing. */
  private advance(conversation: ConversationState): void {
    // Each delivery moves the cursor on by one, so this ends after at most `held.size` rounds.
    for (;;) {
      const cursor = conversation.cursor;
      const next = cursor === undefined ? undefined : conversation.held.get(cursor + 1);
      if (next === undefined) break;
      this.deliver(conversation, next.message);
    }
    if (conversation.held.size === 0) {
      conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
      return;
    }
    // The cell's pushes have no gaps, so messages missing before a pushed one will not be
    // pushed: fetch them now. Before an own message they may still come; give them a while.
    if (this.holdsPushed(conversation)) this.fillGap(conversation);
    else this.scheduleGapCheck(conversation);
  }

  private deliver(conversation: ConversationState, message: ChatMessage): void {
    conversation.cursor = message.seq;
    if (conversation.held.delete(message.seq)) this.heldCount--;
    if (this.terminalError === undefined) this.events.emit('message', message);
  }

  private hold(conversation: ConversationState, message: ChatMessage, pushed: boolean): void {
    const existing = conversation.held.get(message.seq);
    if (existing !== undefined) {
      existing.pushed ||= pushed;
      return;
    }
    // Past the bound the message is dropped unacknowledged: the cell pushes it again after a
    // reconnect, and a later gap fill fetches it.
    if (this.heldCount >= this.settings.maxBufferedMessages) return;
    conversation.held.set(message.seq, { message, pushed });
    this.heldCount++;
  }

  private lowestHeld(conversation: ConversationState): number | undefined {
    let lowest: number | undefined;
    for (const seq of conversation.held.keys()) if (lowest === undefined || seq < lowest) lowest = seq;
    return lowest;
  }

  private holdsPushed(conversation: ConversationState): boolean {
    for (const held of conversation.held.values()) if (held.pushed) return true;
    return false;
  }

  /** Fetches the next page of missing messages below the lowest held one. */
  private fillGap(conversation: ConversationState): void {
    if (conversation.fillBefore !== undefined || conversation.fillRetryTimer !== undefined) return;
    const cursor = conversation.cursor;
    const first = this.lowestHeld(conversation);
    if (cursor === undefined || first === undefined || first <= cursor + 1) return;
    conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
    // History pages count back from `before`; asking for exactly the next `limit` seqs makes the
    // page start right after the cursor, so pages can be delivered as they come.
    const limit = Math.min(HISTORY_PAGE_LIMIT, first - cursor - 1);
    const before = cursor + 1 + limit;
    conversation.fillBefore = before;
    this.fillsInFlight++;
    this.request('history', (id) => ({ op: 'history', id, conv: conversation.conv, before, limit }), undefined).then(
      ({ reply }) => this.onGapPage(conversation, reply.messages, reply.hasMore),
      (error: unknown) => this.onGapFailure(conversation, error),
    );
  }

  private onGapPage(conversation: ConversationState, messages: ChatMessage[], hasMore: boolean): void {
    const before = conversation.fillBefore;
    this.endFill(conversation);
    if (this.terminalError !== undefined || before === undefined) return;
    const page = messages.filter((message) => message.conv === conversation.conv).map(chatMessageOf);
    const delivered = this.deliverContiguous(conversation, page);
    const cursor = conversation.cursor ?? 0;
    // A page cut short is held, and the fill goes on below it (advance, below).
    const cutShort = delivered === 0 && hasMore && this.holdCutShortPage(conversation, page, cursor);
    if (!cutShort && delivered === 0 && cursor + 1 < before) {
      // The cell has no message right after the cursor: skip to the next one it has.
      const next = page.find((message) => message.seq > cursor)?.seq ?? Math.min(this.lowestHeld(conversation) ?? before, before);
      this.skipTo(conversation, next - 1);
      this.deliverContiguous(conversation, page);
    }
    conversation.fillFailures = 0;
    this.advance(conversation);
    this.noteAck(conversation);
    this.maybeEmitSynced();
  }

  /**
   * A page the cell cut short by its byte bound (docs/protocol.md, `history`) holds the newest
   * messages of the window asked for; the older ones exist. Holds it, so that the next fill asks
   * for what lies below; returns false when that made no progress (nothing new could be held).
   */
  private holdCutShortPage(conversation: ConversationState, page: ChatMessage[], cursor: number): boolean {
    const lowestBefore = this.lowestHeld(conversation) ?? Number.POSITIVE_INFINITY;
    for (const message of page) if (message.seq > cursor + 1) this.hold(conversation, message, true);
    return (this.lowestHeld(conversation) ?? Number.POSITIVE_INFINITY) < lowestBefore;
  }

  private deliverContiguous(conversation: ConversationState, page: ChatMessage[]): number {
    let delivered = 0;
    for (const message of page) {
      if (conversation.cursor !== undefined && message.seq === conversation.cursor + 1) {
        this.deliver(conversation, message);
        delivered++;
      }
    }
    return delivered;
  }

  private onGapFailure(conversation: ConversationState, failure: unknown): void {
    this.endFill(conversation);
    if (this.terminalError !== undefined) return;
    const error =
      failure instanceof ClientError ? failure : new ClientError(ClientErrorCode.ProtocolError, messageOf(failure));
    // Timing out while disconnected says nothing about the gap; the next session fills it.
    if (!(error.code === ClientErrorCode.RequestTimeout && this.sessionValue === undefined)) {
      conversation.fillFailures++;
      this.events.emit(
        'error',
        new ClientError(error.code, `fetching missing messages of ${conversation.conv} failed: ${error.message}`, {
          ...error.details,
          conv: conversation.conv,
        }, error),
      );
      if (conversation.fillFailures >= this.settings.maxGapFillFailures) {
        // Holding on would stall delivery of this conversation, and through the unacknowledged
        // window, of all of them.
        conversation.fillFailures = 0;
        const first = this.lowestHeld(conversation);
        if (first !== undefined) this.skipTo(conversation, first - 1);
        this.advance(conversation);
        this.noteAck(conversation);
      } else {
        const delayMs = backoffDelayMs(this.backoff, conversation.fillFailures, this.random);
        conversation.fillRetryTimer = this.clock.setTimer(delayMs, () => {
          conversation.fillRetryTimer = undefined;
          this.advance(conversation);
        });
      }
    }
    this.maybeEmitSynced();
  }

  private endFill(conversation: ConversationState): void {
    if (conversation.fillBefore === undefined) return;
    conversation.fillBefore = undefined;
    this.fillsInFlight--;
  }

  private skipTo(conversation: ConversationState, seq: number): void {
    const fromSeq = (conversation.cursor ?? 0) + 1;
    if (seq < fromSeq) return;
    this.events.emit(
      'error',
      new ClientError(ClientErrorCode.GapUnfilled, `messages ${fromSeq}-${seq} of ${conversation.conv} could not be fetched`, {
        conv: conversation.conv,
        fromSeq,
        toSeq: seq,
      }),
    );
    conversation.cursor = seq;
    for (const held of [...conversation.held.keys()]) {
      if (held <= seq && conversation.held.delete(held)) this.heldCount--;
    }
  }

  /**
   * After the catch-up, an own message whose predecessors did not arrive within `gapWaitMs`
   * gets them fetched. Without a baseline the own message becomes the baseline instead: nothing
   * before it was pushed, so the cell considers this device past them.
   */
  private scheduleGapCheck(conversation: ConversationState): void {
    if (!this.sessionSynced || conversation.gapCheckTimer !== undefined || conversation.held.size === 0) return;
    conversation.gapCheckTimer = this.clock.setTimer(this.settings.gapWaitMs, () => {
      conversation.gapCheckTimer = undefined;
      const first = this.lowestHeld(conversation);
      if (first === undefined) return;
      conversation.cursor ??= first - 1;
      if (conversation.cursor + 1 === first) this.advance(conversation);
      else this.fillGap(conversation);
      this.noteAck(conversation);
    });
  }

  private onSynced(): void {
    this.sessionSynced = true;
    for (const conversation of this.conversations.values()) {
      if (conversation.held.size > 0) this.advance(conversation);
    }
    this.syncedPending = true;
    this.maybeEmitSynced();
  }

  /** `synced` waits until gaps found during the catch-up are filled, so it means "all caught up". */
  private maybeEmitSynced(): void {
    const session = this.sessionValue;
    if (!this.syncedPending || session === undefined || this.fillsInFlight > 0) return;
    this.syncedPending = false;
    this.events.emit('synced', { session: session.session });
  }

  // ---------------------------------------------------------------------------------------------
  // Acknowledgements and heartbeat

  /**
   * What an ack of the conversation would say now, or 0 when none is due: the cursor, once the
   * cell delivered something in this session that the cursor covers. (Below the first delivery
   * of the session the cell already knows this device has everything.)
   */
  private ackTarget(conversation: ConversationState): number {
    const cursor = conversation.cursor ?? 0;
    if (!conversation.ackable || conversation.deliveredLowSeq === 0 || cursor < conversation.deliveredLowSeq) return 0;
    return cursor;
  }

  private noteAck(conversation: ConversationState): void {
    if (this.sessionValue === undefined || this.ackTarget(conversation) <= conversation.ackedSeq) return;
    this.ackDirty.add(conversation.conv);
    this.scheduleAckFlush(this.settings.ackDelayMs);
  }

  private scheduleAckFlush(delayMs: number): void {
    this.ackTimer ??= this.clock.setTimer(delayMs, () => {
      this.ackTimer = undefined;
      this.flushAcks();
    });
  }

  /**
   * One cumulative ack per conversation with news, at most one flush per delivery (the cell's
   * ack budget grows by one per delivery, docs/protocol.md "Limits of a connection"). A cell
   * that announces `limits.maxAcksPerFrame` gets them together, that many conversations per
   * frame; an older cell one frame per conversation.
   */
  private flushAcks(): void {
    this.ackTimer = cancelTimer(this.ackTimer);
    this.unackedDeliveries = 0;
    const session = this.sessionValue;
    if (session === undefined) {
      this.ackDirty.clear();
      return;
    }
    const perFrame = session.limits.maxAcksPerFrame;
    let acks: Record<string, number> = {};
    let inFrame = 0;
    for (const conv of this.ackDirty) {
      this.ackDirty.delete(conv);
      const conversation = this.conversations.get(conv);
      const target = conversation === undefined ? 0 : this.ackTarget(conversation);
      if (conversation === undefined || target <= conversation.ackedSeq) continue;
      conversation.ackedSeq = target;
      if (perFrame === undefined) {
        this.transmit({ op: 'ack', conv, seq: target });
        continue;
      }
      acks[conv] = target;
      if (++inFrame === perFrame) {
        this.transmit({ op: 'ack', acks });
        acks = {};
        inFrame = 0;
      }
    }
    if (inFrame > 0) this.transmit({ op: 'ack', acks });
  }

  /** The cell refused a frame without an id (a heartbeat ping) for the rate limit: its bucket is empty. */
  private onAnonymousRateLimit(): void {
    this.pacer?.drain(this.clock.now());
  }

  /**
   * Pings after `heartbeatIntervalMs` without any frame and gives the connection up when nothing
   * arrives within `requestTimeoutMs` after that: a half-open TCP connection otherwise looks
   * healthy for many minutes while messages pile up unseen.
   */
  private armHeartbeat(generation: number, delayMs: number): void {
    this.heartbeatTimer = this.clock.setTimer(delayMs, () => {
      this.heartbeatTimer = undefined;
      if (generation !== this.generation || this.sessionValue === undefined) return;
      const nowMs = this.clock.now();
      const awaitingSinceMs = this.awaitingPongSinceMs;
      if (awaitingSinceMs !== undefined) {
        const waitedMs = nowMs - awaitingSinceMs;
        if (waitedMs >= this.settings.requestTimeoutMs) {
          this.dropConnection(
            generation,
            new ClientError(ClientErrorCode.HeartbeatTimeout, `nothing from the cell for ${nowMs - this.lastReceivedMs} ms`),
          );
          return;
        }
        this.armHeartbeat(generation, this.settings.requestTimeoutMs - waitedMs);
        return;
      }
      const silentMs = nowMs - this.lastReceivedMs;
      if (silentMs >= this.settings.heartbeatIntervalMs) {
        this.awaitingPongSinceMs = nowMs;
        this.pacer?.spend(nowMs);
        this.transmit({ op: 'ping' });
        this.armHeartbeat(generation, this.settings.requestTimeoutMs);
        return;
      }
      this.armHeartbeat(generation, this.settings.heartbeatIntervalMs - silentMs);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  private transmit(frame: ClientFrame): void {
    this.connection?.send(JSON.stringify(frame));
  }

  private refusal(signal: AbortSignal | undefined): ClientError | undefined {
    if (this.terminalError !== undefined) return this.terminalError;
    if (signal?.aborted) return abortedError();
    return undefined;
  }

  /** Ids of requests and sends: unique within this client, which is all the cell needs. */
  private nextId(prefix: string): string {
    this.lastId++;
    return `${prefix}${this.lastId}`;
  }

  private newCmid(): string {
    let cmid = '';
    for (let index = 0; index < CMID_LENGTH; index++) {
      cmid += CMID_ALPHABET[Math.floor(this.random.next() * CMID_ALPHABET.length)];
    }
    return cmid;
  }
}

function endpointOf(url: string): URL {
  const endpoint = new URL(url);
  if (endpoint.protocol !== 'ws:' && endpoint.protocol !== 'wss:') {
    throw new TypeError(`url must start with ws: or wss:, got ${endpoint.protocol}`);
  }
  if (endpoint.pathname === '/' || endpoint.pathname === '') endpoint.pathname = DEFAULT_WEBSOCKET_PATH;
  endpoint.searchParams.delete('token');
  return endpoint;
}

/** The protocol's code for a rejected upgrade whose body named none. */
function codeOfStatus(status: number): ClientErrorCodeValue {
  switch (status) {
    case 401:
      return ErrorCode.Unauthenticated;
    case 403:
      return ErrorCode.OriginForbidden;
    case 409:
      return ErrorCode.DeviceLimit;
    case 426:
      return ErrorCode.UnsupportedVersion;
    case 429:
      return ErrorCode.RateLimited;
    default:
      return ClientErrorCode.ConnectionFailed;
  }
}

/** Validates a frame with the protocol's own schema, so bad input fails here with BAD_FRAME. */
function invalidFrame(frame: ClientFrame): ClientError | undefined {
  const schema: { safeParse(data: unknown): { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } } } =
    clientFrameSchemas[frame.op];
  const result = schema.safeParse(frame);
  if (result.success) return undefined;
  const issue = result.error?.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? frame.op : issue.path.map(String).join('.');
  return new ClientError(ErrorCode.BadFrame, `invalid ${frame.op}: ${where}: ${issue?.message ?? 'rejected'}`);
}

function abortedError(): ClientError {
  return new ClientError(ClientErrorCode.Aborted, 'the operation was aborted');
}

function onAbort(signal: AbortSignal | undefined, handler: () => void): () => void {
  if (signal === undefined) return () => {};
  signal.addEventListener('abort', handler, { once: true });
  return () => signal.removeEventListener('abort', handler);
}

function cancelTimer(timer: TimerHandle | undefined): undefined {
  timer?.cancel();
  return undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Makes a client on the given ports and resolves once the cell welcomed it; on failure (or
 * `signal`) the client is closed and the error thrown. `connectNode` and `connectBrowser` wire
 * their world's ports and call this.
 */
export async function openClient(options: CellmeshClientOptions, signal?: AbortSignal): Promise<CellmeshClient> {
  const client = new CellmeshClient(options);
  try {
    await client.connect(signal);
  } catch (error) {
    await client.close();
    throw error;
  }
  return client;
}
