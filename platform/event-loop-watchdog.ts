import type { Clock, TimerHandle } from './clock.js';

/**
 * Tells whether the process's event loop is stuck, for the liveness probe (`/v1/healthz`). A
 * timer is set every `intervalMs`; when it runs, the time between when it was due and when it
 * ran is how long the loop was kept from running timers (a synchronous computation, a runaway
 * loop, a huge JSON parse). A lag above `maxStallMs` is a stall: the watchdog reports it for
 * `maxStallMs` after it ended, so that the probe asked right after the loop came back sees it
 * (a loop still blocked answers no probe at all, which the orchestrator counts as a failure).
 *
 * Only the loop counts: a slow store or a lost mesh keep the loop turning and the cell live.
 */
export interface EventLoopWatchdogInit {
  readonly clock: Clock;
  /** A lag of the loop above this is a stall. */
  readonly maxStallMs: number;
  /** How often the loop is sampled; default a quarter of `maxStallMs`, at most 500 ms. */
  readonly intervalMs?: number | undefined;
  /** Told of each stall, with its length, when the loop comes back. */
  readonly onStall?: ((stalledMs: number) => void) | undefined;
}

export type LivenessVerdict = { readonly live: true } | { readonly live: false; readonly stalledMs: number };

export class EventLoopWatchdog {
  private readonly intervalMs: number;
  private timer: TimerHandle | undefined;
  private dueAtMs = 0;
  /** The last stall: when the loop came back, and how long it had been kept. */
  private lastStall: { endedAtMs: number; stalledMs: number } | undefined;

  constructor(private readonly init: EventLoopWatchdogInit) {
    if (!(init.maxStallMs > 0)) throw new Error(`maxStallMs must be positive, not ${init.maxStallMs}`);
    this.intervalMs = init.intervalMs ?? Math.max(1, Math.min(500, Math.floor(init.maxStallMs / 4)));
  }

  /** Starts sampling; idempotent. */
  start(): void {
    if (this.timer === undefined) this.schedule();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Live unless the loop stalled longer than the bound in the last `maxStallMs`, or is late by more than that now. */
  verdict(): LivenessVerdict {
    const nowMs = this.init.clock.now();
    const lateMs = this.timer === undefined ? 0 : nowMs - this.dueAtMs;
    if (lateMs > this.init.maxStallMs) return { live: false, stalledMs: lateMs };
    const stall = this.lastStall;
    if (stall !== undefined && nowMs - stall.endedAtMs <= this.init.maxStallMs) return { live: false, stalledMs: stall.stalledMs };
    return { live: true };
  }

  private schedule(): void {
    this.dueAtMs = this.init.clock.now() + this.intervalMs;
    this.timer = this.init.clock.setTimer(this.intervalMs, this.tick);
  }

  private readonly tick = (): void => {
    const nowMs = this.init.clock.now();
    const lagMs = nowMs - this.dueAtMs;
    if (lagMs > this.init.maxStallMs) {
      this.lastStall = { endedAtMs: nowMs, stalledMs: lagMs };
      this.init.onStall?.(lagMs);
    }
    this.schedule();
  };
}
