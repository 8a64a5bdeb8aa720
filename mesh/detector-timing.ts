/**
 * How long the failure detector waits: the heartbeat interval for a cluster's size, Lifeguard's
 * suspicion timeout, and the silence a cell is allowed before it is probed. Pure functions of the
 * membership options.
 */
import { budgetedIntervalMs, type MembershipOptions } from './membership-config.js';

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

/**
 * The interval at which a cell publishes its heartbeat when it knows `servingCells` serving cells
 * (itself included): `heartbeatIntervalMs`, stretched when needed so that the others' heartbeats
 * add up to at most `heartbeatReceiveBudgetPerSecond` per cell, whatever the size of the cluster
 * (each of the n - 1 others receives one heartbeat per interval from each cell). With the
 * presets' budgets nothing changes up to 51 cells; at 1,000 cells on the LAN preset a cell
 * publishes every 10 s instead of every 500 ms. A budget of 0 turns the stretching off.
 */
export function heartbeatIntervalMs(servingCells: number, options: MembershipOptions): number {
  return budgetedIntervalMs(servingCells, options.heartbeatIntervalMs, options.heartbeatReceiveBudgetPerSecond, options.maxCells);
}

/**
 * How long a cell may stay silent before it is probed, health multiplier aside:
 * `suspectAfterMs` stretched by the longer of this cell's heartbeat interval (`ownIntervalMs`)
 * and the one that cell announced (`announcedMs`, 0 when none), relative to `heartbeatIntervalMs`.
 */
export function silenceAllowedMs(options: MembershipOptions, ownIntervalMs: number, announcedMs: number): number {
  const { suspectAfterMs, heartbeatIntervalMs: baseMs } = options;
  const intervalMs = Math.max(ownIntervalMs, announcedMs);
  return intervalMs <= baseMs ? suspectAfterMs : Math.ceil((suspectAfterMs * intervalMs) / baseMs);
}
