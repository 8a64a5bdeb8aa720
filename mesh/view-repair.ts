/**
 * Repairing a view that disagrees with what a cell announces of itself: pulling its newer record,
 * or reannouncing the claim held against it, at once in a small cluster and after a random wait
 * (and only if still needed) in a large one.
 */
import type { Clock, TimerHandle } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import type { Random } from '../platform/random.js';
import { compareRecordOrder } from './cell-record.js';
import type { Directory, DirectoryEntry, LivenessClaim } from './directory.js';
import type { MembershipOptions } from './membership-config.js';
import type { PeerId } from './transport.js';

/** The (incarnation, version) a cell announced of itself (heartbeat or ping answer). */
export interface AnnouncedOrder {
  readonly incarnation: number;
  readonly version: number;
}

export interface ViewRepairsInit {
  readonly directory: Directory;
  readonly clock: Clock;
  readonly random: Random;
  readonly options: MembershipOptions;
  readonly isRunning: () => boolean;
  /** This cell's heartbeat interval now: longer than `heartbeatIntervalMs` in a large cluster. */
  readonly ownIntervalMs: () => number;
  /** Pull `cellId`'s record from `peer`. */
  readonly pull: (peer: PeerId, cellId: string) => void;
  /** Tell `cellId` the claim held against it, so it refutes. */
  readonly reannounce: (cellId: string, claim: LivenessClaim) => void;
}

/** The order a deferred repair judges the view by when it fires. */
interface DeferredRepair {
  readonly order: AnnouncedOrder;
  readonly timer: TimerHandle;
}

/** A cell announcing `order` has a record newer than `entry`, the one held of it, or none is held: pull it. */
export function pullCalledFor(entry: DirectoryEntry | undefined, order: AnnouncedOrder): boolean {
  return entry === undefined || compareRecordOrder(order, entry.record) > 0;
}

/** The claim to reannounce to a cell announcing `order`: held suspect or dead at its incarnation, it must refute. */
export function claimToReannounce(entry: DirectoryEntry | undefined, order: AnnouncedOrder): LivenessClaim | undefined {
  return entry?.claim !== undefined && order.incarnation <= entry.claim.incarnation ? entry.claim : undefined;
}

/** The repairs waiting to see whether gossip makes them needless, at most `maxCells`. */
export class ViewRepairs {
  private readonly deferred = new Map<string, DeferredRepair>();

  constructor(private readonly init: ViewRepairsInit) {}

  /**
   * `peer`, the owner of `cellId`, announced `order`, which disagrees with the view held here
   * (pullCalledFor, claimToReannounce). In a small cluster the repair runs at once (cheap, and the earliest).
   * In a cluster past the heartbeat budget every cell hears the owner at about the same time:
   * after a join, a restart or a heal, every cell pulling would be n full-directory exchanges
   * per changed record, and every cell reannouncing n floods per cell held dead (at a heal, n x
   * the cells cut off, both ways). So the repair waits a random time of up to 2 x
   * `probeTimeoutMs` and runs only if the view still disagrees then. The first few to run
   * settle it for the rest: the owner refutes a reannounced claim with a new record, and
   * republishes a record a pull shows was missed (AntiEntropy, onOwnRecordLacked); a record
   * and the heartbeat announcing it are published together, and the record often follows.
   */
  disagreementHeard(peer: PeerId, cellId: string, order: AnnouncedOrder): void {
    const { options } = this.init;
    if (this.init.ownIntervalMs() <= options.heartbeatIntervalMs) {
      this.repair(peer, cellId, order);
      return;
    }
    const waiting = this.deferred.get(cellId);
    if (waiting !== undefined && compareRecordOrder(waiting.order, order) >= 0) return;
    if (waiting === undefined && this.deferred.size >= options.maxCells) return;
    waiting?.timer.cancel();
    const delayMs = Math.round(2 * options.probeTimeoutMs * this.init.random.next());
    const timer = this.init.clock.setTimer(delayMs, () => {
      this.deferred.delete(cellId);
      if (this.init.isRunning()) this.repair(peer, cellId, order);
    });
    this.deferred.set(cellId, { order: { incarnation: order.incarnation, version: order.version }, timer });
    invariant(this.deferred.size <= options.maxCells, () => `${this.deferred.size} deferred repairs, above maxCells ${options.maxCells}`);
  }

  /** Cancels every waiting repair (the detector stopped). */
  clear(): void {
    for (const repair of this.deferred.values()) repair.timer.cancel();
    this.deferred.clear();
  }

  private repair(peer: PeerId, cellId: string, order: AnnouncedOrder): void {
    const entry = this.init.directory.get(cellId);
    if (pullCalledFor(entry, order)) this.init.pull(peer, cellId);
    const claim = claimToReannounce(entry, order);
    if (claim !== undefined) this.init.reannounce(cellId, claim);
  }
}
