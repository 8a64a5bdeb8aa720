import { z } from 'zod';
import type { Logger } from '../platform/logger.js';
import type { Store } from '../platform/store/store.js';
import type { AttachmentStore } from './attachments/index.js';
import type { AuditLog } from './audit-log.js';
import type { CellCore } from './cell-core.js';
import { CustomerData, customerDataHostOf, type ErasedCounts } from './customer-data.js';
import { clusterErrorCode, type ClusterForwardedEntry, type ClusterPort } from './messaging/cluster-port.js';
import { IDENTIFIER_PATTERN } from './protocol/frames.js';

/**
 * The erasure of one customer across the cluster (docs/desk.md, "Retention, export and erasure").
 * The cell the admin asks erases what it holds, then enqueues an `erase` entry in its outbox for
 * every other cell of the directory that has not left the cluster for good: the outbox keeps it
 * durably and retries it until that cell applied it, so a cell that is down or cut off applies
 * it when it is back. Each cell then erases what it holds of the customer: its mirrors of the
 * customer's conversations with merchants of other cells, or the conversations of its own
 * merchants with a customer whose devices connect elsewhere.
 *
 * Erase entries travel the same outbox as the cross-cell messages, in order: messages enqueued
 * for a cell before the erasure are applied there before it, so none of them survives it. This
 * class sits between the cluster port and the cross-cell relay (`attach`): it takes the erase
 * entries out of each forwarded batch and applies them in their place, passing the others on.
 */

const ERASE_KIND = 'customer-erase';
const EraseEntry = z.strictObject({
  v: z.literal(1),
  kind: z.literal(ERASE_KIND),
  tenant: z.string().regex(IDENTIFIER_PATTERN),
  customer: z.string().regex(IDENTIFIER_PATTERN),
});
type EraseEntry = z.infer<typeof EraseEntry>;

export interface ErasureAnswer {
  tenant: string;
  customer: string;
  /** What this cell deleted. */
  deleted: ErasedCounts;
  /** The customer's devices connected to this cell, closed. */
  devicesClosed: number;
  /** The cells whose outbox entry is durable here: each applies the erasure, now or when it is back. */
  cellsAsked: string[];
  /** Cells the entry could not be enqueued for (the outbox full or failing): erase again to ask them. */
  cellsFailed: Array<{ cell: string; code: string }>;
}

export interface CustomerErasureComponents {
  store: Store;
  core: CellCore;
  /** The cell's one attachment store (its deletions are serialised per content within the instance). */
  attachments: AttachmentStore;
  /** Absent: erasures are not recorded (tests of messaging alone). */
  audit?: AuditLog | undefined;
  logger?: Logger | undefined;
}

export class CustomerErasure {
  private readonly data: CustomerData;
  private cluster: { port: ClusterPort; otherCells: () => string[] } | undefined;

  constructor(private readonly components: CustomerErasureComponents) {
    this.data = new CustomerData({ store: components.store, host: customerDataHostOf(components.core), attachments: components.attachments });
  }

  /**
   * Puts the erasure between `port` and the cell: the port returned hands the cell's forward
   * handler every entry but the erase entries, which are applied here in their place.
   * `otherCells` names the other cells of the cluster that may hold a copy.
   */
  attach(port: ClusterPort, otherCells: () => string[]): ClusterPort {
    this.cluster = { port, otherCells };
    // Delegates method by method: a port may be a class instance, whose methods a spread would miss.
    return {
      selfCellId: port.selfCellId,
      homeCellOf: (tenant, merchant) => port.homeCellOf(tenant, merchant),
      locate: (tenant, user, options) => port.locate(tenant, user, options),
      forget: (tenant, user, cellId) => port.forget(tenant, user, cellId),
      remember: (tenant, user, cellId) => port.remember(tenant, user, cellId),
      invalidate: (tenant, user) => port.invalidate(tenant, user),
      userArrived: (tenant, user) => port.userArrived(tenant, user),
      enqueue: (destination, entries) => port.enqueue(destination, entries),
      onCellGone: (listener) => port.onCellGone(listener),
      request: (cellId, protocol, data, options) => port.request(cellId, protocol, data, options),
      handle: (protocol, handler) => port.handle(protocol, handler),
      onForward: (handler) =>
        port.onForward(async (source, entries) => {
          let run: ClusterForwardedEntry[] = [];
          for (const entry of entries) {
            const erase = EraseEntry.safeParse(entry.payload);
            if (!erase.success) {
              run.push(entry);
              continue;
            }
            // Entries before the erasure are applied first, so that it erases them too.
            if (run.length > 0) await handler(source, run);
            run = [];
            await this.applyForwarded(source, erase.data);
          }
          if (run.length > 0) await handler(source, run);
        }),
    };
  }

  /** Erases the customer here and asks every other cell to; recorded in the audit log once done (a failure is the caller's to record). */
  async erase(tenant: string, customer: string): Promise<ErasureAnswer> {
    const local = await this.data.eraseHere(tenant, customer);
    const answer: ErasureAnswer = { tenant, customer, ...local, cellsAsked: [], cellsFailed: [] };
    if (this.cluster !== undefined) {
      const entry: EraseEntry = { v: 1, kind: ERASE_KIND, tenant, customer };
      for (const cell of this.cluster.otherCells()) {
        try {
          await this.cluster.port.enqueue(cell, [{ key: `erase/${tenant}/${customer}`, payload: entry }]);
          answer.cellsAsked.push(cell);
        } catch (error) {
          answer.cellsFailed.push({ cell, code: clusterErrorCode(error) ?? 'INTERNAL' });
        }
      }
    }
    await this.components.audit?.record({
      actor: 'admin',
      action: 'customer.erase',
      tenant,
      target: customer,
      details: { deleted: answer.deleted, devicesClosed: answer.devicesClosed, cellsAsked: answer.cellsAsked, cellsFailed: answer.cellsFailed },
    });
    return answer;
  }

  /** Another cell asked: erase what this cell holds (idempotent, so a resent entry does no harm). */
  private async applyForwarded(source: string, entry: EraseEntry): Promise<void> {
    const { deleted, devicesClosed } = await this.data.eraseHere(entry.tenant, entry.customer);
    this.components.logger?.info({ source, tenant: entry.tenant, customer: entry.customer, deleted, devicesClosed }, 'erased a customer at the request of another cell');
    await this.components.audit?.record({ actor: 'admin', action: 'customer.erase', tenant: entry.tenant, target: entry.customer, details: { requestedBy: source, deleted, devicesClosed } });
  }
}
