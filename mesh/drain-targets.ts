import { isRouterRecord } from './cell-record.js';
import type { DirectoryView } from './directory.js';

/** A cell that may take merchants of a draining cell, with the load its record gossips. */
export interface DrainTarget {
  readonly cellId: string;
  readonly devices: number;
  readonly maxDevices: number;
}

/**
 * The cells a drain may move merchants to: alive (not suspect, leaving or gone), hosting cells
 * (not routers), not the draining cell itself. A cell that drains too refuses the move
 * (CELL_DRAINING), which the drain records as that merchant's failure.
 */
export function liveDrainTargets(directory: DirectoryView, selfCellId: string): DrainTarget[] {
  const targets: DrainTarget[] = [];
  for (const entry of directory.values()) {
    const { record } = entry;
    if (record.cellId === selfCellId || entry.liveness !== 'alive' || isRouterRecord(record)) continue;
    targets.push({ cellId: record.cellId, devices: record.load.devices, maxDevices: record.capacity.maxDevices });
  }
  return targets;
}

/**
 * The target with the most room: the lowest share of its device capacity in use, counting the
 * devices this drain sent it already (the gossiped figure shows them only after its next load
 * update), then the fewest merchants sent, then the cell id, so that merchants without devices
 * spread evenly instead of all landing on the first cell. Undefined when there is no target.
 */
export function chooseDrainTarget(targets: readonly DrainTarget[], sentDevices: ReadonlyMap<string, number>, sentMerchants: ReadonlyMap<string, number>): string | undefined {
  let best: { cellId: string; share: number; merchants: number } | undefined;
  for (const target of targets) {
    const share = (target.devices + (sentDevices.get(target.cellId) ?? 0)) / Math.max(1, target.maxDevices);
    const merchants = sentMerchants.get(target.cellId) ?? 0;
    const better =
      best === undefined ||
      share < best.share ||
      (share === best.share && (merchants < best.merchants || (merchants === best.merchants && target.cellId < best.cellId)));
    if (better) best = { cellId: target.cellId, share, merchants };
  }
  return best?.cellId;
}
