import type { TimerHandle } from './clock.js';

/**
 * The longest delay Node's and browsers' setTimeout honour: 2^31-1 ms, about 24.8 days. A longer
 * one (a 30-day token's expiry, say) fires after 1 ms instead, with only a warning.
 */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** One timer of a platform whose delays are limited (setTimeout, in an adapter). */
export type SetPlatformTimer = (delayMs: number, callback: () => void) => TimerHandle;

/**
 * Runs `callback` once after `delayMs` of any length on a platform timer limited to
 * `maxDelayMs`: a longer delay is waited out as a chain of steps of at most that much. Cancelling
 * the returned handle cancels whichever step is pending.
 */
export function setChainedTimer(setPlatformTimer: SetPlatformTimer, delayMs: number, callback: () => void, maxDelayMs = MAX_TIMER_DELAY_MS): TimerHandle {
  let step: TimerHandle;
  let cancelled = false;
  const wait = (remainingMs: number): void => {
    // Written so that NaN takes the platform's own path (which runs it at once), not a chain.
    if (!(remainingMs > maxDelayMs)) {
      step = setPlatformTimer(remainingMs, callback);
      return;
    }
    step = setPlatformTimer(maxDelayMs, () => {
      if (!cancelled) wait(remainingMs - maxDelayMs);
    });
  };
  wait(delayMs);
  return {
    cancel: () => {
      cancelled = true;
      step.cancel();
    },
  };
}
