import { describe, expect, test } from 'vitest';
import type { Clock, TimerHandle } from './clock.js';
import { EventLoopWatchdog } from './event-loop-watchdog.js';
import { ManualClock } from './manual-clock.js';

/**
 * The manual clock, with a loop that can be blocked: `block(ms)` lets time pass while no timer
 * runs, as a synchronous computation does to the real loop.
 */
class BlockableClock implements Clock {
  readonly manual = new ManualClock();
  private blockedMs = 0;

  now(): number {
    return this.manual.now() + this.blockedMs;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    return this.manual.setTimer(delayMs, callback);
  }

  block(ms: number): void {
    this.blockedMs += ms;
  }

  /** Lets the loop turn for `ms`: every timer due in that time runs. */
  run(ms: number): void {
    this.manual.advance(ms);
  }
}

describe('EventLoopWatchdog', () => {
  test('stays live while the loop turns, however long', () => {
    const clock = new BlockableClock();
    const watchdog = new EventLoopWatchdog({ clock, maxStallMs: 1_000 });
    watchdog.start();
    for (let second = 0; second < 60; second++) {
      clock.run(1_000);
      expect(watchdog.verdict()).toEqual({ live: true });
    }
    // A lag under the bound is no stall.
    clock.block(900);
    clock.run(250);
    expect(watchdog.verdict()).toEqual({ live: true });
  });

  test('reports a stall above the bound once the loop is back, for the length of the bound, and counts it', () => {
    const clock = new BlockableClock();
    const stalls: number[] = [];
    const watchdog = new EventLoopWatchdog({ clock, maxStallMs: 1_000, onStall: (stalledMs) => stalls.push(stalledMs) });
    watchdog.start();
    clock.run(100);
    clock.block(3_000);
    // The verdict asked while the loop is late (from a handler that runs before the timers) already says so.
    expect(watchdog.verdict()).toMatchObject({ live: false });
    clock.run(250);
    const verdict = watchdog.verdict();
    expect(verdict.live).toBe(false);
    expect(verdict.live === false && verdict.stalledMs).toBeGreaterThan(2_500);
    expect(stalls).toHaveLength(1);
    // Still reported within the bound after the loop came back, live again after it.
    clock.run(900);
    expect(watchdog.verdict().live).toBe(false);
    clock.run(200);
    expect(watchdog.verdict()).toEqual({ live: true });
  });

  test('keeps one timer at a time, and stops', () => {
    const clock = new BlockableClock();
    const watchdog = new EventLoopWatchdog({ clock, maxStallMs: 400 });
    watchdog.start();
    watchdog.start();
    expect(clock.manual.pendingTimers()).toBe(1);
    watchdog.stop();
    expect(clock.manual.pendingTimers()).toBe(0);
    clock.block(10_000);
    expect(watchdog.verdict()).toEqual({ live: true });
    expect(() => new EventLoopWatchdog({ clock, maxStallMs: 0 })).toThrow(/positive/);
  });
});
