// Requests that expect a reply (history, inbox, presence, read, ping): each waits under its id
// until the reply of the expected type arrives, its timeout ends it, or its caller aborts. A
// request is transmitted again after a reconnect and after a transient refusal.
import type {
  CloseFrame,
  DeskFrame,
  HistoryFrame,
  InboxFrame,
  PingFrame,
  PresenceFrame,
  RateFrame,
  ReadFrame,
  ServerFrame,
  StatusFrame,
  TransferFrame,
} from '../cell/protocol/frames.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { abortedError, onAbort } from './abort.js';
import { backoffDelayMs } from './backoff.js';
import { cancelTimer } from './cancel-timer.js';
import type { BackoffSettings } from './defaults.js';
import { ClientError, ClientErrorCode, isTransient } from './errors.js';
import type { SessionLink } from './session-link.js';
import type { ClientSettings } from './settings.js';
import { invalidFrame } from './validate-frame.js';

export type ReplyType = 'history' | 'inbox' | 'presence' | 'ok' | 'pong' | 'desk';
export type ReplyFrame = Extract<ServerFrame, { t: ReplyType }>;
export type ReplyOf<Type extends ReplyType> = Extract<ServerFrame, { t: Type }>;
export type RequestFrame = HistoryFrame | InboxFrame | PresenceFrame | ReadFrame | PingFrame | StatusFrame | CloseFrame | TransferFrame | RateFrame | DeskFrame;

/** A reply and when its request was last transmitted (for the round trip of a ping). */
export interface Answer<Type extends ReplyType> {
  reply: ReplyOf<Type>;
  sentAtMs: number;
}

export interface RequestTrackerPorts {
  readonly clock: Clock;
  readonly random: Random;
  readonly backoff: BackoffSettings;
  readonly settings: Pick<ClientSettings, 'requestTimeoutMs' | 'maxPendingRequests'>;
  readonly link: SessionLink;
  /** A request id unique within the client (shared with sends). */
  nextId(prefix: string): string;
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

export class RequestTracker {
  private readonly requests = new Map<string, PendingRequest>();

  constructor(private readonly ports: RequestTrackerPorts) {}

  /**
   * Sends the frame `build` makes with a fresh id (at once if a session is open, else when one
   * opens) and resolves with the reply of type `expect`. Rejects with the cell's error, with
   * REQUEST_TIMEOUT after `requestTimeoutMs` (counted across reconnects), or with ABORTED.
   */
  request<Type extends ReplyType>(expect: Type, build: (id: string) => RequestFrame, signal: AbortSignal | undefined): Promise<Answer<Type>> {
    const { clock, settings } = this.ports;
    if (this.requests.size >= settings.maxPendingRequests) {
      return Promise.reject(new ClientError(ClientErrorCode.RequestQueueFull, `${this.requests.size} requests already wait for replies`));
    }
    const frame = build(this.ports.nextId('r'));
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
        timeoutTimer: clock.setTimer(settings.requestTimeoutMs, () => {
          this.settle(request, new ClientError(ClientErrorCode.RequestTimeout, `no reply to ${frame.op} within ${settings.requestTimeoutMs} ms`));
        }),
        retryTimer: undefined,
        resolve: (reply) => resolve({ reply: reply as ReplyOf<Type>, sentAtMs: request.lastSentAtMs }),
        reject,
        detachSignal: () => {},
      };
      request.detachSignal = onAbort(signal, () => this.settle(request, abortedError()));
      this.requests.set(request.id, request);
      if (this.ports.link.session !== undefined) this.transmit(request);
    });
  }

  /** A session opened: requests that wait for one go out. */
  transmitWaiting(): void {
    for (const request of this.requests.values()) {
      if (!request.transmitted) this.transmit(request);
    }
  }

  /** A reply frame: settles the request of its id (a late reply to a settled request is ignored). */
  onReply(frame: ReplyFrame): void {
    // A pong without an id answers the heartbeat, which needs nothing but the frame's arrival.
    if (frame.id === undefined) return;
    const request = this.requests.get(frame.id);
    if (request === undefined) return;
    if (request.expect !== frame.t) {
      this.settle(
        request,
        new ClientError(ClientErrorCode.ProtocolError, `expected '${request.expect}' in reply to '${request.frame.op}', got '${frame.t}'`),
      );
      return;
    }
    this.settle(request, frame);
  }

  /**
   * The cell refused the request with id `id`; returns whether there was one. A transient
   * refusal is repeated until the request succeeds or its timeout, which keeps running, ends it.
   */
  failById(id: string, error: ClientError): boolean {
    const request = this.requests.get(id);
    if (request === undefined) return false;
    if (!isTransient(error)) {
      this.settle(request, error);
      return true;
    }
    request.transientFailures++;
    request.transmitted = false;
    const delayMs = error.details.retryAfterMs ?? backoffDelayMs(this.ports.backoff, request.transientFailures, this.ports.random);
    request.retryTimer = cancelTimer(request.retryTimer);
    // The retry timer is cancelled when the session ends, so it only fires within this one.
    request.retryTimer = this.ports.clock.setTimer(delayMs, () => {
      request.retryTimer = undefined;
      if (this.requests.get(request.id) === request) this.transmit(request);
    });
    return true;
  }

  /** The connection ended: every pending request waits to be transmitted on the next. */
  onSessionEnd(): void {
    for (const request of this.requests.values()) {
      request.transmitted = false;
      request.retryTimer = cancelTimer(request.retryTimer);
    }
  }

  /** The client stopped: every pending request is rejected with `rejection`. */
  rejectAll(rejection: ClientError): void {
    const requests = [...this.requests.values()];
    this.requests.clear();
    for (const request of requests) {
      request.timeoutTimer.cancel();
      request.detachSignal();
      request.reject(rejection);
    }
  }

  private transmit(request: PendingRequest): void {
    request.transmitted = true;
    request.lastSentAtMs = this.ports.clock.now();
    // Requests are few and someone waits for each; they go out at once and only use the budget.
    this.ports.link.pacer?.spend(request.lastSentAtMs);
    this.ports.link.transmit(request.frame);
  }

  private settle(request: PendingRequest, outcome: ClientError | ReplyFrame): void {
    if (this.requests.get(request.id) !== request) return;
    this.requests.delete(request.id);
    request.timeoutTimer.cancel();
    request.retryTimer = cancelTimer(request.retryTimer);
    request.detachSignal();
    if (outcome instanceof ClientError) request.reject(outcome);
    else request.resolve(outcome);
  }
}
