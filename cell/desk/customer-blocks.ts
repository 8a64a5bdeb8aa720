import { z } from 'zod';
import type { Clock } from '../../platform/clock.js';
import type { Store } from '../../platform/store/store.js';
import type { AuditActor, AuditLog } from '../audit-log.js';

/** Where blocks are recorded: the cell's audit log. */
export type BlocksAudit = Pick<AuditLog, 'record'>;
import { keys } from '../messaging/keys.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN, MAX_NOTE_CHARS, parseConversationId } from '../protocol/frames.js';
import { parseStored } from './desk-records.js';

/**
 * The customers a merchant blocked (docs/desk.md, "Blocks"): a blocked customer's sends to that
 * merchant are refused with CUSTOMER_BLOCKED, whichever cell they come through. Kept under the
 * merchant's desk range (`k/<tenant>/<merchant>/block/<customer>`), so a block moves with the
 * merchant; every block and unblock is recorded in the audit log with who did it.
 *
 * The send path asks `whenAllowed` for every customer message, so the blocks of a merchant are
 * held in memory: read from the store as the cell starts (`preload`) and when the merchant moves
 * in (`reloadMerchant`), so that the check is synchronous and a send is queued in the turn it
 * arrived; a merchant whose read failed is read again at its next send.
 */

export const BlockRecord = z.object({
  customer: z.string().regex(IDENTIFIER_PATTERN),
  atMs: z.number().int().min(0),
  /** Who blocked: `admin`, or `agent:<merchant>:<agent>`. */
  by: z.string().max(200),
  reason: z.string().max(MAX_NOTE_CHARS).optional(),
});
export type BlockRecord = z.infer<typeof BlockRecord>;

/** Blocks one `list` answers at most. */
export const MAX_BLOCKS_PAGE = 1000;

export class CustomerBlocks {
  /** Blocked customers by merchant (`<tenant>/<merchant>`), once read from the store. */
  private readonly loaded = new Map<string, Map<string, BlockRecord>>();
  private readonly loading = new Map<string, Promise<void>>();

  constructor(private readonly components: { store: Store; clock: Clock; audit?: BlocksAudit | undefined; preload?: ReadonlyArray<{ tenant: string; merchant: string }> }) {
    // The store is open: a failed read is tried again at the merchant's next send.
    for (const { tenant, merchant } of components.preload ?? []) this.load(tenant, merchant).catch(() => undefined);
  }

  /**
   * Undefined when the customer of `conv` may send to its merchant; throws CUSTOMER_BLOCKED when
   * it may not; a promise (that does either) while the merchant's blocks are being read.
   */
  whenAllowed(tenant: string, conv: string): Promise<void> | undefined {
    const { merchant, customer } = parseConversationId(conv)!;
    const blocked = this.loaded.get(merchantKey(tenant, merchant));
    if (blocked === undefined) return this.load(tenant, merchant).then(() => this.whenAllowed(tenant, conv));
    if (blocked.has(customer)) throw new CellError(ErrorCode.CustomerBlocked, `merchant ${merchant} blocked you: your messages to it are refused`);
    return undefined;
  }

  async get(tenant: string, merchant: string, customer: string): Promise<BlockRecord | undefined> {
    await this.load(tenant, merchant);
    return this.loaded.get(merchantKey(tenant, merchant))!.get(customer);
  }

  /** The merchant's blocks in order of customer id, from after `after`; at most `limit`. */
  async list(tenant: string, merchant: string, after: string | undefined, limit: number): Promise<{ blocks: BlockRecord[]; next?: string }> {
    await this.load(tenant, merchant);
    const all = [...this.loaded.get(merchantKey(tenant, merchant))!.values()].filter((record) => after === undefined || record.customer > after);
    all.sort((a, b) => (a.customer < b.customer ? -1 : 1));
    const blocks = all.slice(0, Math.min(limit, MAX_BLOCKS_PAGE));
    return all.length > blocks.length ? { blocks, next: blocks.at(-1)!.customer } : { blocks };
  }

  /** Blocks (or blocks again, with the new reason) the customer; recorded in the audit log. */
  async block(tenant: string, merchant: string, customer: string, by: AuditActor, reason: string | undefined): Promise<BlockRecord> {
    await this.load(tenant, merchant);
    const record: BlockRecord = { customer, atMs: this.components.clock.now(), by, ...(reason === undefined ? {} : { reason }) };
    await this.components.store.write([{ type: 'put', key: blockKey(tenant, merchant, customer), value: JSON.stringify(record) }]);
    this.loaded.get(merchantKey(tenant, merchant))!.set(customer, record);
    await this.components.audit?.record({ actor: by, action: 'customer.block', tenant, merchant, target: customer, details: reason === undefined ? undefined : { reason } });
    return record;
  }

  /** Lifts the block; undefined when the customer was not blocked (nothing is recorded then). */
  async unblock(tenant: string, merchant: string, customer: string, by: AuditActor): Promise<BlockRecord | undefined> {
    await this.load(tenant, merchant);
    const blocked = this.loaded.get(merchantKey(tenant, merchant))!;
    const record = blocked.get(customer);
    if (record === undefined) return undefined;
    await this.components.store.write([{ type: 'del', key: blockKey(tenant, merchant, customer) }]);
    blocked.delete(customer);
    await this.components.audit?.record({ actor: by, action: 'customer.unblock', tenant, merchant, target: customer });
    return record;
  }

  /** The merchant moved in: its blocks came with it and are read again from the store. */
  reloadMerchant(tenant: string, merchant: string): void {
    this.loaded.delete(merchantKey(tenant, merchant));
    this.load(tenant, merchant).catch(() => undefined);
  }

  private load(tenant: string, merchant: string): Promise<void> {
    const key = merchantKey(tenant, merchant);
    if (this.loaded.has(key)) return Promise.resolve();
    let loading = this.loading.get(key);
    if (loading === undefined) {
      loading = this.read(tenant, merchant).finally(() => this.loading.delete(key));
      this.loading.set(key, loading);
    }
    return loading;
  }

  private async read(tenant: string, merchant: string): Promise<void> {
    const range = keys.merchantDeskTable(tenant, merchant, 'block');
    const blocked = new Map<string, BlockRecord>();
    let gte = range.gte;
    for (;;) {
      const page = await this.components.store.range({ gte, lt: range.lt, limit: MAX_BLOCKS_PAGE });
      for (const [key, value] of page) {
        const record = parseStored(BlockRecord, key, value);
        blocked.set(record.customer, record);
      }
      if (page.length < MAX_BLOCKS_PAGE) break;
      gte = `${page.at(-1)![0]}\u0000`;
    }
    this.loaded.set(merchantKey(tenant, merchant), blocked);
  }
}

function merchantKey(tenant: string, merchant: string): string {
  return `${tenant}/${merchant}`;
}

function blockKey(tenant: string, merchant: string, customer: string): string {
  return `${keys.merchantDeskTable(tenant, merchant, 'block').gte}${customer}`;
}
