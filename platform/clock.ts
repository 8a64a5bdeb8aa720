import { setChainedTimer } from './chained-timer.js';

/**
 * The clock and timer port. Core code (cell, mesh, router, client SDK logic) reads time and
 * schedules work only through a Clock, so the same code runs on the system clock in production
 * and on a virtual clock in tests and the simulator.
 */
export interface TimerHandle {
  /** Cancels the timer; calling it after the timer fired or twice is harmless. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch (virtual in the simulator). */
  now(): number;
  /**
   * Runs `callback` once after `delayMs`, however long: adapters on platform timers that cap
   * delays (setTimeout at 2^31-1 ms) chain them (chained-timer.ts). The callback must not throw.
   */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
}

/** The production clock: wall time and Node timers. */
export class SystemClock implements Clock {
  now(): number {
    return Date.now(); // real-clock-ok: this is the adapter
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    return setChainedTimer(setNodeTimer, delayMs, callback);
  }
}

/** One Node timer, of at most MAX_TIMER_DELAY_MS. */
function setNodeTimer(delayMs: number, callback: () => void): TimerHandle {
  const timer = setTimeout(callback, delayMs); // real-clock-ok: this is the adapter
  // Timers of the core never keep the process alive on their own; servers and sockets do.
  timer.unref();
  return { cancel: () => clearTimeout(timer) };
}
