// Cancelling an optional timer and clearing the field that held it, in one expression:
// `this.timer = cancelTimer(this.timer)`.
import type { TimerHandle } from '../platform/clock.js';

export function cancelTimer(timer: TimerHandle | undefined): undefined {
  timer?.cancel();
  return undefined;
}
