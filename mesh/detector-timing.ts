/**
 * How long the failure detector waits for a suspect: Lifeguard's suspicion timeout, a pure
 * function of the membership options.
 */
import type { MembershipOptions } from './membership-config.js';

/**
 * Lifeguard's dynamic suspicion timeout: `max` with no confirmation, shrinking logarithmically
 * to `min` as `confirmations` (other cells' independent suspicions) reach K; scaled by the
 * local health multiplier + 1. As in memberlist, a cluster too small to give K confirmations
 * (fewer than K cells besides this one and the suspect: `servingCells` counts both) expects
 * none and waits `min` alone, or a crash in a three-cell cluster would take the full `max`.
 */
export function suspicionTimeoutMs(confirmations: number, options: MembershipOptions, healthMultiplier: number, servingCells = Number.POSITIVE_INFINITY): number {
  const { suspicionMinMs: minMs, suspicionMaxMs: maxMs, suspicionConfirmations: k } = options;
  if (servingCells - 2 < k) return minMs * (healthMultiplier + 1);
  const counted = Math.max(0, Math.min(confirmations, k));
  const fraction = Math.log(counted + 1) / Math.log(k + 1);
  return Math.max(minMs, Math.floor(maxMs - (maxMs - minMs) * fraction)) * (healthMultiplier + 1);
}
