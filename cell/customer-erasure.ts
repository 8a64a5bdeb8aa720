import { z } from 'zod';
import type { Logger } from '../platform/logger.js';
import type { Store } from '../platform/store/store.js';
import type { AttachmentStore } from './attachments/index.js';
import type { AuditLog } from './audit-log.js';
import type { CellCore } from './cell-core.js';
import type { SiblingServer } from './access/sibling-relay.js';
import { CustomerData, customerDataHostOf, type ErasedCounts, type LocalErasure } from './customer-data.js';
import { clusterErrorCode, type ClusterForwardedEntry, type ClusterPort } from './messaging/cluster-port.js';
import { CellError, ErrorCode } from './protocol/errors.js';
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
 *
 * In a cell of several processes (docs/operations.md, "A cell of several processes"), each
 * merchant's conversations are held in memory by its owner: the process asked sends every other
 * live process its share (the conversations with the merchants it owns, and the customer's
 * devices it serves), over HTTP (in a mesh the internal channel, under the cell's secret; else
 * the admin API with the admin token and the relay marker), erases its own share once they all
 * answered, and only then answers and records the erasure, once. An erasure another cell asked
 * reaches the speaker, which runs it the same way.
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

/** A cell of several processes: the processes an erasure reaches (cell/processes/sibling-access.ts). */
export interface ErasureProcesses {
  /** Here, or the sibling that owns the merchant now; throws OWNER_UNAVAILABLE when none does. */
  serverOf(tenant: string, merchant: string): SiblingServer;
  /** The HTTP bases of the other live processes of the cell, as of the last round. */
  siblings(): readonly string[];
  /**
   * Asks the sibling at `http` for its share: the customer's conversations with `merchants` (it
   * must own them) and its devices there. `adminToken` is undefined when another cell asked.
   */
  eraseAt(http: string, tenant: string, customer: string, merchants: readonly string[], adminToken: string | undefined): Promise<LocalErasure>;
}

const SHARE_RETRY_MS = 1_000;

export interface CustomerErasureComponents {
  store: Store;
  core: CellCore;
  /** The cell's one attachment store (its deletions are serialised per content within the instance). */
  attachments: AttachmentStore;
  /** Absent: erasures are not recorded (tests of messaging alone). */
  audit?: AuditLog | undefined;
  logger?: Logger | undefined;
  /** A cell of several processes: the other processes hold their merchants' conversations. */
  processes?: ErasureProcesses | undefined;
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

  /**
   * Erases the customer here (in every process of the cell) and asks every other cell to;
   * recorded in the audit log once done (a failure is the caller's to record). `adminToken`
   * authorizes the calls on the other processes of the cell.
   */
  async erase(tenant: string, customer: string, adminToken = ''): Promise<ErasureAnswer> {
    const { processes } = this.components;
    const local = processes === undefined ? await this.data.eraseHere(tenant, customer) : await this.eraseInEveryProcess(processes, tenant, customer, adminToken);
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

  /**
   * A sibling's share of an erasure asked of another process of the cell: the customer's
   * conversations with `merchants`, which this process must own (OWNER_UNAVAILABLE, retryable,
   * when one changed owner since the other looked), and its devices here. Not recorded: the
   * process asked records the erasure.
   */
  async eraseShare(tenant: string, customer: string, merchants: readonly string[]): Promise<LocalErasure> {
    const { hosts } = this.components.core.moveHost();
    const elsewhere = merchants.filter((merchant) => !hosts(tenant, merchant));
    if (elsewhere.length > 0) throw new CellError(ErrorCode.OwnerUnavailable, `merchants ${elsewhere.join(', ')} are changing owner; retry the erasure`, { retryAfterMs: SHARE_RETRY_MS });
    return this.data.eraseHere(tenant, customer, new Set(merchants));
  }

  /**
   * The siblings' shares first (all of them, as any may serve the customer's devices), then this
   * process's, which deletes what is left of the customer's delivery cursors after every device
   * is closed. A merchant without an owner right now, or an owner that cannot be reached, fails
   * the erasure with OWNER_UNAVAILABLE: erasing again is harmless and finishes it.
   */
  private async eraseInEveryProcess(processes: ErasureProcesses, tenant: string, customer: string, adminToken: string | undefined): Promise<LocalErasure> {
    const here = new Set<string>();
    const shares = new Map<string, string[]>(processes.siblings().map((http) => [http, []]));
    for (const merchant of await this.data.merchantsOf(tenant, customer)) {
      const server = processes.serverOf(tenant, merchant);
      if (server.here) here.add(merchant);
      else shares.set(server.http, [...(shares.get(server.http) ?? []), merchant]);
    }
    const answers = await Promise.all(
      [...shares].map(async ([http, merchants]) => {
        try {
          return await processes.eraseAt(http, tenant, customer, merchants, adminToken);
        } catch (error) {
          if (merchants.length > 0) throw error;
          // A process owning none of them only served some of the customer's devices: it is going away, and they with it.
          this.components.logger?.warn({ err: error, sibling: http, tenant, customer }, 'a process of the cell could not close the devices of an erased customer');
          return undefined;
        }
      }),
    );
    const total = await this.data.eraseHere(tenant, customer, here);
    for (const answer of answers) {
      if (answer === undefined) continue;
      total.devicesClosed += answer.devicesClosed;
      for (const [name, count] of Object.entries(answer.deleted) as Array<[keyof ErasedCounts, number]>) total.deleted[name] += count;
    }
    return total;
  }

  /**
   * Another cell asked: erase what this cell holds (idempotent, so a resent entry does no harm).
   * In a cell of several processes the speaker applies it, in every process as an admin's; a
   * share that fails fails the batch, which the other cell sends again.
   */
  private async applyForwarded(source: string, entry: EraseEntry): Promise<void> {
    const { processes } = this.components;
    const { deleted, devicesClosed } = processes === undefined ? await this.data.eraseHere(entry.tenant, entry.customer) : await this.eraseInEveryProcess(processes, entry.tenant, entry.customer, undefined);
    this.components.logger?.info({ source, tenant: entry.tenant, customer: entry.customer, deleted, devicesClosed }, 'erased a customer at the request of another cell');
    await this.components.audit?.record({ actor: 'admin', action: 'customer.erase', tenant: entry.tenant, target: entry.customer, details: { requestedBy: source, deleted, devicesClosed } });
  }
}
