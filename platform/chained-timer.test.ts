import { describe, expect, it } from 'vitest';
import { MAX_TIMER_DELAY_MS, setChainedTimer } from './chained-timer.js';
import { SystemClock } from './clock.js';
import { ManualClock } from './manual-clock.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/** A platform timer on a manual clock that, like setTimeout, refuses delays beyond its maximum. */
function cappedTimers(clock: ManualClock): { set: Parameters<typeof setChainedTimer>[0]; longest: () => number } {
  let longest = 0;
  return {
    set: (delayMs, callback) => {
      expect(delayMs).toBeLessThanOrEqual(MAX_TIMER_DELAY_MS);
      longest = Math.max(longest, delayMs);
      return clock.setTimer(delayMs, callback);
    },
    longest: () => longest,
  };
}

describe('setChainedTimer', () => {
  it('fires a 30-day timer exactly after 30 days, in steps the platform accepts', () => {
    const clock = new ManualClock();
    const timers = cappedTimers(clock);
    let fired = 0;
    setChainedTimer(timers.set, 30 * DAY_MS, () => fired++);
    clock.advance(MAX_TIMER_DELAY_MS);
    expect(fired).toBe(0);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(30 * DAY_MS - MAX_TIMER_DELAY_MS - 1);
    expect(fired).toBe(0);
    clock.advance(1);
    expect(fired).toBe(1);
    expect(timers.longest()).toBe(MAX_TIMER_DELAY_MS);
    clock.advance(100 * DAY_MS);
    expect(fired).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('cancels whichever step is pending', () => {
    const clock = new ManualClock();
    const timers = cappedTimers(clock);
    let fired = 0;
    const early = setChainedTimer(timers.set, 60 * DAY_MS, () => fired++);
    const late = setChainedTimer(timers.set, 60 * DAY_MS, () => fired++);
    early.cancel();
    clock.advance(26 * DAY_MS);
    late.cancel();
    clock.advance(100 * DAY_MS);
    expect(fired).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('chains as many steps as the delay needs, and short delays take one', () => {
    const clock = new ManualClock();
    const firedAt: number[] = [];
    const start = clock.now();
    let steps = 0;
    const set = (delayMs: number, callback: () => void) => {
      steps++;
      return clock.setTimer(delayMs, callback);
    };
    setChainedTimer(set, 25, () => firedAt.push(clock.now() - start), 10);
    setChainedTimer(set, 7, () => firedAt.push(clock.now() - start), 10);
    clock.advance(100);
    expect(firedAt).toEqual([7, 25]);
    expect(steps).toBe(3 + 1);
  });
});

describe('SystemClock', () => {
  it('does not fire a 30-day timer at once (setTimeout alone would, after 1 ms)', async () => {
    let fired = false;
    const timer = new SystemClock().setTimer(30 * DAY_MS, () => (fired = true));
    // Node's own timers are the point here. They run in the order they fall due, so once this
    // later 50 ms one has fired, an overflowed one (due after 1 ms) would have fired before it.
    await new Promise((resolve) => setTimeout(resolve, 50));
    timer.cancel();
    expect(fired).toBe(false);
  });
});
