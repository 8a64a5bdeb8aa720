import type { Random } from '../platform/random.js';
import type { BackoffSettings } from './defaults.js';

/**
 * The wait before reconnect attempt number `attempt` (1 for the first after a failure):
 * exponential growth from `initialDelayMs`, capped at `maxDelayMs`, with the top `jitter`
 * fraction drawn at random. A policy rejection waits at least `policyDelayMs` (also jittered).
 */
export function backoffDelayMs(
  settings: BackoffSettings,
  attempt: number,
  random: Random,
  policy = false,
): number {
  const exponent = Math.max(0, attempt - 1);
  const ceilingMs = Math.min(settings.maxDelayMs, settings.initialDelayMs * settings.multiplier ** exponent);
  const baseMs = policy ? Math.max(ceilingMs, settings.policyDelayMs) : ceilingMs;
  return Math.round(baseMs * (1 - settings.jitter * random.next()));
}
