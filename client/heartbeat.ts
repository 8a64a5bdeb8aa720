// The heartbeat of a session: pings the cell after a silence and gives the connection up when
// nothing at all comes back, since a half-open TCP connection otherwise looks healthy for many
// minutes while messages pile up unseen.
import type { Clock, TimerHandle } from '../platform/clock.js';
import { cancelTimer } from './cancel-timer.js';
import { ClientError, ClientErrorCode } from './errors.js';

/** The session a heartbeat watches. */
export interface WatchedSession {
  /** Whether the session is still the current one (a stale timer does nothing). */
  isCurrent(): boolean;
  /** Sends a ping without id; any frame from the cell answers it. */
  ping(): void;
  /** Gives the connection up with HEARTBEAT_TIMEOUT. */
  giveUp(error: ClientError): void;
}

export class Heartbeat {
  private lastReceivedMs = 0;
  private awaitingPongSinceMs: number | undefined;
  private timer: TimerHandle | undefined;

  /**
   * Pings after `intervalMs` without any frame (0 turns the heartbeat off) and gives the
   * connection up when nothing arrives within `timeoutMs` after that.
   */
  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
  ) {}

  /** Any frame from the cell shows the connection alive. */
  noteReceived(): void {
    this.lastReceivedMs = this.clock.now();
    this.awaitingPongSinceMs = undefined;
  }

  start(session: WatchedSession): void {
    if (this.intervalMs > 0) this.arm(session, this.intervalMs);
  }

  stop(): void {
    this.timer = cancelTimer(this.timer);
    this.awaitingPongSinceMs = undefined;
  }

  private arm(session: WatchedSession, delayMs: number): void {
    this.timer = this.clock.setTimer(delayMs, () => {
      this.timer = undefined;
      if (!session.isCurrent()) return;
      const nowMs = this.clock.now();
      const awaitingSinceMs = this.awaitingPongSinceMs;
      if (awaitingSinceMs !== undefined) {
        const waitedMs = nowMs - awaitingSinceMs;
        if (waitedMs >= this.timeoutMs) {
          session.giveUp(new ClientError(ClientErrorCode.HeartbeatTimeout, `nothing from the cell for ${nowMs - this.lastReceivedMs} ms`));
          return;
        }
        this.arm(session, this.timeoutMs - waitedMs);
        return;
      }
      const silentMs = nowMs - this.lastReceivedMs;
      if (silentMs >= this.intervalMs) {
        this.awaitingPongSinceMs = nowMs;
        session.ping();
        this.arm(session, this.timeoutMs);
        return;
      }
      this.arm(session, this.intervalMs - silentMs);
    });
  }
}
