import { stringHash32 } from '../platform/string-hash.js';
import { isRouterRecord } from './cell-record.js';
import type { DirectoryEntry, DirectoryView } from './directory.js';

/**
 * The fallback cell of a merchant whose home is down (docs/routing.md, "A home cell that is
 * down"): the cell its customers are routed to meanwhile, to leave messages that the cell's
 * outbox forwards once the home is back.
 *
 * The choice is weighted rendezvous hashing (highest random weight) over the live cells (alive or
 * suspect, routers left out, as `CellMesh.liveCells`), each weighted by the devices it advertises
 * it can take (`capacity.maxDevices`; a cell advertising 0 takes none):
 * - deterministic: every cell and router holding the same records picks the same cell, asking
 *   nobody, so a customer routed twice (or through two routers) lands on the same fallback;
 * - stable while the set of live cells is stable: the score of (merchant, cell) depends on
 *   nothing else, so a cell joining takes only the merchants it now wins, and a cell leaving
 *   hands on only its own; load figures, which change with every gossip round, play no part;
 * - by load: a cell wins a share of the merchants of a dead home proportional to its capacity,
 *   so the dead home's customers spread over the live cells as the cells can take them.
 * The cost is one small hash per live cell, paid only while a home is down.
 */
export function fallbackCellOf(directory: Pick<DirectoryView, 'values'>, tenant: string, merchant: string): DirectoryEntry | undefined {
  let best: DirectoryEntry | undefined;
  let bestScore = 0;
  for (const entry of directory.values()) {
    if (!isLiveCell(entry)) continue;
    const weight = entry.record.capacity.maxDevices;
    if (weight <= 0) continue;
    const score = rendezvousScore(weight, rendezvousHash(tenant, merchant, entry.record.cellId));
    // Ties (equal weight and hash: practically never) go to the lowest cell id, as homes do.
    if (best === undefined || score > bestScore || (score === bestScore && entry.record.cellId < best.record.cellId)) {
      best = entry;
      bestScore = score;
    }
  }
  return best;
}

/** A cell that can take work now: alive or merely suspect, and not a router (which hosts nothing). */
export function isLiveCell(entry: DirectoryEntry): boolean {
  return (entry.liveness === 'alive' || entry.liveness === 'suspect') && !isRouterRecord(entry.record);
}

/**
 * The weighted rendezvous score: `weight / -ln(u)` for `u` uniform in (0, 1) drawn from the
 * hash. The highest of these picks each cell with probability weight / (sum of weights)
 * (Schindelhauer and Schomaker's logarithmic method), and a cell's score never depends on the others.
 */
function rendezvousScore(weight: number, hash: number): number {
  const uniform = (hash + 0.5) / 2 ** 32;
  return weight / -Math.log(uniform);
}

/** A 32-bit hash of (tenant, merchant, cell). */
export function rendezvousHash(tenant: string, merchant: string, cellId: string): number {
  return stringHash32(`${tenant}\u0000${merchant}\u0000${cellId}`);
}
