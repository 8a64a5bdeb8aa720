/**
 * SWIM's dissemination: the membership updates a cell piggybacks on its pings and ping answers,
 * each sent a bounded number of times, instead of a heartbeat every cell broadcasts to every other.
 */
import { invariant } from '../platform/invariant.js';
import { compareRecordOrder } from './cell-record.js';
import type { Directory, DirectoryEntry } from './directory.js';
import { MAX_PIGGYBACKED_UPDATES, type OwnOrder } from './membership-wire.js';

/** How many times each update is sent: this multiple of log10(cells + 1), rounded up (memberlist's RetransmitMult). */
export const RETRANSMIT_MULTIPLIER = 4;

/** The times an update is piggybacked in a cluster of `servingCells`: λ·⌈log10(n + 1)⌉ (4 up to 9 cells, 12 up to 999). */
export function retransmitLimit(servingCells: number): number {
  return RETRANSMIT_MULTIPLIER * Math.max(1, Math.ceil(Math.log10(Math.max(1, servingCells) + 1)));
}

interface Pending {
  order: OwnOrder;
  sent: number;
}

/**
 * The orders `{cellId, incarnation, version}` of other cells' records that changed lately (this
 * cell's own order rides in every ping and answer it sends anyway), at most one per cell (a newer order replaces an older one and starts its
 * count again) and at most `maxCells` in all. `take()` hands out the least-sent ones first and
 * drops each after `retransmitLimit(n)` sends: with every cell probing one peer per probe
 * interval, an update reaches every cell in O(log n) intervals (SWIM's infection-style
 * dissemination) while a quiet cluster sends none. Records themselves still travel by gossip;
 * a receiver that missed one sees a newer order here and pulls it (ViewRepairs).
 */
export class Dissemination {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly directory: Directory,
    private readonly maxCells: number,
  ) {}

  /** Follows the directory: every record that moved forward is announced. Returns the unsubscribe. */
  follow(): () => void {
    return this.directory.onChange((cellId, before, after) => this.recordChanged(cellId, before, after));
  }

  /** Announces `order` (a record held here) until it has been sent its share of times. */
  private announce(order: OwnOrder): void {
    const held = this.pending.get(order.cellId);
    if (held !== undefined && compareRecordOrder(held.order, order) >= 0) return;
    if (held === undefined && this.pending.size >= this.maxCells) return;
    this.pending.set(order.cellId, { order: { cellId: order.cellId, incarnation: order.incarnation, version: order.version }, sent: 0 });
    invariant(this.pending.size <= this.maxCells, () => `${this.pending.size} updates to disseminate, above maxCells ${this.maxCells}`);
  }

  /** The updates for one message (at most MAX_PIGGYBACKED_UPDATES, least sent first, `except` left out); undefined when none. */
  take(servingCells: number, except: string | undefined): OwnOrder[] | undefined {
    if (this.pending.size === 0) return undefined;
    const limit = retransmitLimit(servingCells);
    const candidates: Pending[] = [];
    for (const [cellId, pending] of this.pending) {
      if (pending.sent >= limit) {
        this.pending.delete(cellId);
        continue;
      }
      if (cellId !== except) candidates.push(pending);
    }
    if (candidates.length > MAX_PIGGYBACKED_UPDATES) candidates.sort((a, b) => a.sent - b.sent);
    const chosen = candidates.slice(0, MAX_PIGGYBACKED_UPDATES);
    for (const pending of chosen) pending.sent++;
    return chosen.length === 0 ? undefined : chosen.map((pending) => pending.order);
  }

  clear(): void {
    this.pending.clear();
  }

  private recordChanged(cellId: string, before: DirectoryEntry | undefined, after: DirectoryEntry | undefined): void {
    if (cellId === this.directory.selfCellId) return;
    if (after === undefined) {
      this.pending.delete(cellId);
      return;
    }
    if (before !== undefined && compareRecordOrder(after.record, before.record) <= 0) return;
    this.announce(after.record);
  }
}
