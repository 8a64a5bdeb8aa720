import type { Clock, TimerHandle } from './clock.js';

interface PendingTimer {
  readonly dueMs: number;
  readonly order: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/**
 * A virtual clock that moves only when told to. Timers fire in due order, ties in the order
 * they were set, which makes runs deterministic. Used by unit tests and the simulator.
 */
export class ManualClock implements Clock {
  private nowMs: number;
  private nextOrder = 0;
  private readonly timers: PendingTimer[] = [];

  constructor(startMs = 1_700_000_000_000) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const timer: PendingTimer = {
      dueMs: this.nowMs + Math.max(0, delayMs),
      order: this.nextOrder++,
      callback,
      cancelled: false,
    };
    this.insert(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }

  /** Number of timers that have not fired nor been cancelled. */
  pendingTimers(): number {
    return this.timers.filter((timer) => !timer.cancelled).length;
  }

  /** Moves time forward by `deltaMs`, firing every timer that falls due on the way. */
  advance(deltaMs: number): void {
    this.advanceTo(this.nowMs + deltaMs);
  }

  advanceTo(targetMs: number): void {
    for (;;) {
      const next = this.timers[0];
      if (next === undefined || next.dueMs > targetMs) break;
      this.timers.shift();
      if (next.cancelled) continue;
      this.nowMs = Math.max(this.nowMs, next.dueMs);
      next.callback();
    }
    this.nowMs = Math.max(this.nowMs, targetMs);
  }

  private insert(timer: PendingTimer): void {
    // Binary search keeps the list sorted by (dueMs, order).
    let low = 0;
    let high = this.timers.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const other = this.timers[middle]!;
      if (other.dueMs < timer.dueMs || (other.dueMs === timer.dueMs && other.order < timer.order)) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    this.timers.splice(low, 0, timer);
  }
}
