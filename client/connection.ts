// The connection to the cell: each attempt (token, upgrade, the cell's `welcome`), the session
// the welcome opens, its heartbeat, reconnecting with exponential backoff and jitter, and the
// final states. What travels over the session is the business of the parts the hooks reach.
import { PROTOCOL_VERSION, SUBPROTOCOL_V1, type ClientFrame, type MerchantHome, type ServerFrame } from '../cell/protocol/frames.js';
import { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { TokenBucket } from '../platform/token-bucket.js';
import { abortedError, onAbort } from './abort.js';
import { backoffDelayMs } from './backoff.js';
import { cancelTimer } from './cancel-timer.js';
import type { ClientEvents, ConnectionState, SessionInfo, StateChange } from './client-types.js';
import { classifyEnd, codeOfStatus, type ConnectionEnd } from './connection-end.js';
import type { BackoffSettings } from './defaults.js';
import type { EndpointSource } from './endpoints.js';
import type { TypedEmitter } from './emitter.js';
import { ClientError, ClientErrorCode, messageOf } from './errors.js';
import { Heartbeat } from './heartbeat.js';
import { parseServerFrame } from './server-frames.js';
import type { SessionLink } from './session-link.js';
import type { ClientSettings } from './settings.js';
import type { TokenKeeper } from './token.js';
import type { ClientConnection, ClientTransport, ConnectionListener, TransportErrorInfo } from './transport.js';

type WelcomeFrame = Extract<ServerFrame, { t: 'welcome' }>;
/** Every frame of a session but the welcome that opens it. */
export type SessionFrame = Exclude<ServerFrame, WelcomeFrame>;

/** What the connection tells the rest of the client. */
export interface ConnectionHooks {
  /** The cell welcomed this device: work that waited for a session goes out. */
  sessionOpened(session: SessionInfo): void;
  /** The session (or the attempt) ended: what belonged to it is forgotten; pending work stays. */
  sessionEnded(): void;
  /** The client stopped for good: pending work is rejected with `rejection`. */
  stopped(rejection: ClientError): void;
  /** A frame of the session, or an error frame the cell sent before refusing the session. */
  frame(frame: SessionFrame): void;
}

export interface ConnectionPorts {
  readonly transport: ClientTransport;
  readonly clock: Clock;
  readonly random: Random;
  /** Where each attempt connects: a fixed cell, or a merchant's home found by routing (endpoints.ts). */
  readonly endpoints: EndpointSource;
  readonly tokens: TokenKeeper;
  readonly backoff: BackoffSettings;
  readonly settings: Pick<
    ClientSettings,
    'maxReconnectAttempts' | 'connectTimeoutMs' | 'requestTimeoutMs' | 'heartbeatIntervalMs' | 'maxAuthFailures' | 'closeTimeoutMs'
  >;
  /** Where `state` and connection `error` events go. */
  readonly events: TypedEmitter<ClientEvents>;
  readonly hooks: ConnectionHooks;
}

interface OpenWaiter {
  resolve(session: SessionInfo): void;
  reject(error: ClientError): void;
}

export class Connection implements SessionLink {
  private readonly heartbeat: Heartbeat;
  private stateValue: ConnectionState = 'idle';
  private sessionValue: SessionInfo | undefined;
  private pacerValue: TokenBucket | undefined;
  private socket: ClientConnection | undefined;
  /** Bumped whenever a connection ends: events and timers of older generations are ignored. */
  private generation = 0;
  private failedAttempts = 0;
  private authFailures = 0;
  private lastTransportError: TransportErrorInfo | undefined;
  /** The home named by a MERCHANT_ELSEWHERE frame of this connection, followed when the cell closes it (4307). */
  private redirectHome: MerchantHome | undefined;
  /** Aborts the route request of the current attempt when it ends. */
  private attemptAbort: AbortController | undefined;
  private openedAtMs: number | undefined;
  private attemptTimer: TimerHandle | undefined;
  private reconnectTimer: TimerHandle | undefined;
  /** Set once the client stopped for good; pending and later calls are rejected with it. */
  private terminalError: ClientError | undefined;
  private closing: { generation: number; done: () => void } | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly openWaiters = new Set<OpenWaiter>();

  constructor(private readonly ports: ConnectionPorts) {
    this.heartbeat = new Heartbeat(ports.clock, ports.settings.heartbeatIntervalMs, ports.settings.requestTimeoutMs);
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  get session(): SessionInfo | undefined {
    return this.sessionValue;
  }

  get pacer(): TokenBucket | undefined {
    return this.pacerValue;
  }

  transmit(frame: ClientFrame): void {
    this.socket?.send(JSON.stringify(frame));
  }

  /** Why a call must be refused now: the client stopped, or the caller's signal aborted. */
  refusal(signal: AbortSignal | undefined): ClientError | undefined {
    if (this.terminalError !== undefined) return this.terminalError;
    if (signal?.aborted) return abortedError();
    return undefined;
  }

  /** Starts connecting (on the first call); resolves with the session once the cell welcomed this device. */
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
   * Closes the connection normally and stops reconnecting; resolves when the connection
   * confirmed the close, or after `closeTimeoutMs`.
   */
  close(): Promise<void> {
    if (this.closePromise !== undefined) return this.closePromise;
    if (this.terminalError !== undefined) return Promise.resolve();
    const closingGeneration = this.generation;
    const hasConnection = this.socket !== undefined;
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
      const timer = this.ports.clock.setTimer(this.ports.settings.closeTimeoutMs, finish);
      this.closing = { generation: closingGeneration, done: finish };
    });
    this.stop('closed', new ClientError(ClientErrorCode.ClientClosed, 'the client was closed'), undefined);
    return this.closePromise;
  }

  private beginAttempt(): void {
    this.reconnectTimer = cancelTimer(this.reconnectTimer);
    this.setState('connecting', {});
    // A state listener may have closed the client.
    if (this.terminalError !== undefined) return;
    const generation = ++this.generation;
    this.lastTransportError = undefined;
    const { clock, settings, tokens } = this.ports;
    this.attemptTimer = clock.setTimer(settings.connectTimeoutMs, () => {
      this.dropConnection(generation, new ClientError(ClientErrorCode.ConnectTimeout, `no session within ${settings.connectTimeoutMs} ms`));
    });
    const ready = tokens.ready();
    if (ready !== undefined) {
      this.locateCell(generation, ready);
      return;
    }
    tokens.fetch().then(
      (fresh) => {
        if (generation !== this.generation) return;
        const error = tokens.accept(fresh);
        if (error !== undefined) this.connectionEnded(generation, { error });
        else this.locateCell(generation, fresh);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        this.connectionEnded(generation, { error: tokens.failed(error) });
      },
    );
  }

  /** Finds the cell of this attempt (at once for a fixed URL or a redirect; a route request otherwise), then connects. */
  private locateCell(generation: number, token: string): void {
    this.attemptAbort = new AbortController();
    let endpoint: URL | Promise<URL>;
    try {
      endpoint = this.ports.endpoints.next(this.attemptAbort.signal);
    } catch (error) {
      this.connectionEnded(generation, { error: new ClientError(ClientErrorCode.RouteFailed, `no cell to connect to: ${messageOf(error)}`, {}, error) });
      return;
    }
    if (endpoint instanceof URL) {
      this.openConnection(generation, endpoint, token);
      return;
    }
    endpoint.then(
      (found) => {
        if (generation === this.generation) this.openConnection(generation, found, token);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        const routeError = error instanceof ClientError ? error : new ClientError(ClientErrorCode.RouteFailed, `routing failed: ${messageOf(error)}`, {}, error);
        this.ports.events.emit('error', routeError);
        this.connectionEnded(generation, { error: routeError });
      },
    );
  }

  private openConnection(generation: number, endpoint: URL, token: string): void {
    const url = new URL(endpoint.href);
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
      this.socket = this.ports.transport.connect(url.href, [SUBPROTOCOL_V1], listener);
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
    this.ports.events.emit('error', new ClientError(code, info.message, status === undefined ? {} : { httpStatus: status }));
  }

  private onText(generation: number, text: string): void {
    this.heartbeat.noteReceived();
    const parsed = parseServerFrame(text);
    if (parsed.kind === 'unknown') return; // a push of a newer protocol revision
    if (parsed.kind === 'malformed') {
      this.ports.events.emit('error', new ClientError(ClientErrorCode.ProtocolError, `unreadable frame from the cell: ${parsed.reason}`));
      return;
    }
    const frame = parsed.frame;
    if (this.sessionValue === undefined) {
      if (frame.t === 'welcome') this.onWelcome(generation, frame);
      else if (frame.t === 'error') {
        // A refused upgrade explained in band, then closed (4401/4403/4429 for browsers, 4307 for everyone).
        this.lastTransportError = { message: frame.message, code: frame.code };
        this.noteRedirect(frame);
        this.ports.hooks.frame(frame);
      } else this.dropConnection(generation, new ClientError(ClientErrorCode.ProtocolError, `expected 'welcome' first, got '${frame.t}'`));
      return;
    }
    if (frame.t === 'welcome') {
      this.dropConnection(generation, new ClientError(ClientErrorCode.ProtocolError, 'a second welcome in one session'));
      return;
    }
    if (frame.t === 'error') this.noteRedirect(frame);
    this.ports.hooks.frame(frame);
  }

  /** A redirect frame (no request id) names the home that the close (4307) following it sends the device to. */
  private noteRedirect(frame: Extract<ServerFrame, { t: 'error' }>): void {
    if (frame.code === ErrorCode.MerchantElsewhere && frame.id === undefined && frame.home !== undefined) this.redirectHome = frame.home;
  }

  private onWelcome(generation: number, frame: WelcomeFrame): void {
    if (frame.v !== PROTOCOL_VERSION) {
      const error = new ClientError(ErrorCode.UnsupportedVersion, `the cell speaks protocol ${frame.v}, this client ${PROTOCOL_VERSION}`);
      this.stop('closed', error, error);
      return;
    }
    const { clock } = this.ports;
    this.attemptTimer = cancelTimer(this.attemptTimer);
    const { t: _type, v: protocolVersion, ...welcome } = frame;
    const session: SessionInfo = { ...welcome, protocolVersion };
    this.sessionValue = session;
    this.openedAtMs = clock.now();
    this.authFailures = 0;
    this.ports.endpoints.opened();
    this.pacerValue = new TokenBucket(frame.limits.ratePerSecond, frame.limits.rateBurst, this.openedAtMs);
    this.ports.hooks.sessionOpened(session);
    this.heartbeat.start({
      isCurrent: () => generation === this.generation && this.sessionValue !== undefined,
      ping: () => {
        this.pacerValue?.spend(clock.now());
        this.transmit({ op: 'ping' });
      },
      giveUp: (error) => this.dropConnection(generation, error),
    });
    const waiters = [...this.openWaiters];
    this.openWaiters.clear();
    for (const waiter of waiters) waiter.resolve(session);
    this.setState('open', { session });
  }

  /** Gives the connection of `generation` up from this side, then handles it as ended. */
  private dropConnection(generation: number, error: ClientError): void {
    if (generation !== this.generation) return;
    const socket = this.socket;
    this.connectionEnded(generation, { error });
    // The generation moved on, so this connection's own close event is ignored.
    socket?.close(1000, error.code);
  }

  private connectionEnded(generation: number, end: ConnectionEnd): void {
    if (generation !== this.generation || this.terminalError !== undefined) return;
    const { clock, backoff, settings } = this.ports;
    const wasOpen = this.sessionValue !== undefined;
    const transportError = this.lastTransportError;
    const redirectHome = this.redirectHome;
    const stable = wasOpen && this.openedAtMs !== undefined && clock.now() - this.openedAtMs >= backoff.stableAfterMs;
    this.endSession();
    if (stable) this.failedAttempts = 0;
    const outcome = classifyEnd(end, transportError, wasOpen);
    if (outcome.kind === 'replaced') {
      this.stop('replaced', outcome.error, outcome.error);
      return;
    }
    if (outcome.kind === 'redirect') {
      this.followRedirect(redirectHome, outcome.error);
      return;
    }
    const reroutes = outcome.kind === 'fatal' && outcome.error.code === ErrorCode.MerchantNotHosted && this.ports.endpoints.routes;
    if ((outcome.kind === 'fatal' && !reroutes) || (outcome.kind === 'auth' && !this.mayRetryAuth(outcome.counts))) {
      this.stop('closed', outcome.error, outcome.error);
      return;
    }
    if (outcome.kind === 'auth') this.ports.tokens.markStale();
    this.failedAttempts++;
    if (this.failedAttempts > settings.maxReconnectAttempts) {
      const error = new ClientError(
        ClientErrorCode.ReconnectFailed,
        `gave up after ${this.failedAttempts} failed attempts: ${outcome.error.message}`,
        outcome.error.details,
        outcome.error,
      );
      this.stop('closed', error, error);
      return;
    }
    const policy = outcome.kind === 'retry' && outcome.policy;
    const delayMs = backoffDelayMs(backoff, this.failedAttempts, this.ports.random, policy);
    this.reconnectTimer = clock.setTimer(delayMs, () => {
      this.reconnectTimer = undefined;
      this.beginAttempt();
    });
    this.setState('reconnecting', {
      delayMs,
      error: outcome.error,
      ...(end.closeCode === undefined ? {} : { closeCode: end.closeCode }),
    });
  }

  /**
   * The cell sent the device to the merchant's home (4307): the next attempt goes there at once,
   * without backoff and without counting as a failure; the endpoint source bounds the redirects
   * in a row, and a fixed URL does not follow them.
   */
  private followRedirect(home: MerchantHome | undefined, error: ClientError): void {
    const refusal = this.ports.endpoints.redirected(home, CloseCode.MerchantElsewhere);
    if (refusal !== undefined) {
      this.stop('closed', refusal, refusal);
      return;
    }
    this.reconnectTimer = this.ports.clock.setTimer(0, () => {
      this.reconnectTimer = undefined;
      this.beginAttempt();
    });
    this.setState('reconnecting', { delayMs: 0, error, closeCode: CloseCode.MerchantElsewhere });
  }

  /**
   * Whether a refused or expired token is worth another attempt with a fresh one: only from a
   * provider, and only while the refusals that `count` stay under `maxAuthFailures`.
   */
  private mayRetryAuth(counts: boolean): boolean {
    if (!this.ports.tokens.hasProvider) return false;
    if (counts && ++this.authFailures >= this.ports.settings.maxAuthFailures) return false;
    return true;
  }

  /** Forgets everything that belonged to the current connection; pending work stays. */
  private endSession(): void {
    this.generation++;
    this.attemptTimer = cancelTimer(this.attemptTimer);
    this.heartbeat.stop();
    this.ports.tokens.abort();
    this.attemptAbort?.abort();
    this.attemptAbort = undefined;
    this.redirectHome = undefined;
    this.socket = undefined;
    this.sessionValue = undefined;
    this.pacerValue = undefined;
    this.openedAtMs = undefined;
    this.lastTransportError = undefined;
    this.ports.hooks.sessionEnded();
  }

  /** Stops for good: `closed` (with `stateError` unless the app closed) or `replaced`. */
  private stop(state: 'closed' | 'replaced', rejection: ClientError, stateError: ClientError | undefined): void {
    const socket = this.socket;
    this.endSession();
    this.terminalError = rejection;
    this.reconnectTimer = cancelTimer(this.reconnectTimer);
    this.ports.hooks.stopped(rejection);
    const waiters = [...this.openWaiters];
    this.openWaiters.clear();
    for (const waiter of waiters) waiter.reject(rejection);
    socket?.close(1000, rejection.code);
    this.setState(state, stateError === undefined ? {} : { error: stateError });
  }

  private setState(state: ConnectionState, change: Omit<StateChange, 'state' | 'previous' | 'attempt'>): void {
    const previous = this.stateValue;
    this.stateValue = state;
    this.ports.events.emit('state', { state, previous, attempt: this.failedAttempts, ...change });
  }
}
