/**
 * `gone` hints: an access cell tells a home cell, once, that a user it forwards to has no device
 * here any more, until the user connects again.
 */
import { clusterErrorCode } from './cluster-port.js';
import type { CrossCellContext } from './cross-cell-context.js';

/** The hints sent and not yet taken back, at most `maxGoneHints` users (the oldest are forgotten). */
export class GoneHints {
  /** `tenant/user` to the cells a `gone` was sent to; insertion-ordered for eviction. */
  private readonly goneSent = new Map<string, Set<string>>();

  constructor(private readonly context: CrossCellContext) {}

  /**
   * Tells `source` once that the user has no device here any more (until the user connects
   * again), so it forgets this cell as the user's location. A hint: losing it costs only the
   * home cell's further forwards into this mirror, which stays correct.
   */
  hint(source: string, tenant: string, user: string): void {
    if (this.context.host.customerHasDevices(tenant, user)) return;
    const userKey = `${tenant}/${user}`;
    let cells = this.goneSent.get(userKey);
    if (cells?.has(source) === true) return;
    if (cells === undefined) {
      this.goneSent.set(userKey, (cells = new Set()));
      while (this.goneSent.size > this.context.settings.maxGoneHints) this.goneSent.delete(this.goneSent.keys().next().value as string);
    }
    cells.add(source);
    this.context.counts.goneHints++;
    this.context.enqueue(source, { v: 1, kind: 'gone', tenant, user }).catch((error: unknown) => {
      this.context.logger.warn({ err: error, code: clusterErrorCode(error), source, user }, 'could not tell a home cell that a user left');
    });
  }

  /** A device of the user connected here: a later departure is hinted again. */
  userReturned(tenant: string, user: string): void {
    this.goneSent.delete(`${tenant}/${user}`);
  }
}
