import { scan } from '../platform/store/scan.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import type { AttachmentReference, AttachmentStore } from './attachments/index.js';
import type { CellCore } from './cell-core.js';
import { ConsultationRecord, LastConsultation, Rating, deskKeys, parseStored } from './desk/desk-records.js';
import type { DeviceConnection } from './messaging/device.js';
import { keys, lastField, prefixRange } from './messaging/keys.js';
import { storedReadCursors } from './messaging/read-cursors.js';
import { customerPrincipal, partyId } from './messaging/principal.js';
import { CloseCode } from './protocol/errors.js';
import { parseConversationId, type ChatMessage } from './protocol/frames.js';

/**
 * Everything one cell holds of one customer (docs/desk.md, "Retention, export and erasure"): the
 * customer's conversations (its index `uc/`), in each the messages, idempotency records, read
 * cursors and delivery cursors, the attachments uploaded to them, and, for conversations whose
 * merchant this cell hosts, the desk's records of the customer (open and last consultation,
 * ratings). Mirrors of cross-cell
 * conversations are held under the same keys, so they are exported and erased the same way.
 *
 * Export is paged: a page holds at most EXPORT_PAGE_MESSAGES messages and
 * EXPORT_PAGE_CONVERSATIONS conversations; `next` says where the next page starts. Erasure
 * deletes in store batches of ERASE_BATCH_OPS, so no conversation sits in memory whole.
 */

export const EXPORT_PAGE_MESSAGES = 500;
export const EXPORT_PAGE_CONVERSATIONS = 100;
const ERASE_BATCH_OPS = 512;
/** Delivery cursors of one customer read per export page at most (devices times conversations). */
const MAX_DELIVERY_CURSORS = 10_000;

/** What export and erasure need of the cell. */
export interface CustomerDataHost {
  hosts(tenant: string, merchant: string): boolean;
  customerDevices(tenant: string, customer: string): Iterable<DeviceConnection>;
  agentDevices(tenant: string, merchant: string): Iterable<DeviceConnection>;
  /** Closes the customer's open consultation at its merchant's desk (its system message is erased with the rest). */
  closeConsultation(tenant: string, conv: string): void;
  /** Resolves once no append to the merchant's conversations is under way. */
  whenMerchantIdle(tenant: string, merchant: string): Promise<void>;
  /** Resolves once every acknowledged delivery cursor is written. */
  cursorsFlushed(): Promise<void>;
  /** Drops the cached heads of the merchant's conversations (their keys were deleted). */
  forgetConversations(tenant: string, merchant: string): void;
}

export function customerDataHostOf(core: CellCore): CustomerDataHost {
  const move = core.moveHost();
  return {
    hosts: move.hosts,
    customerDevices: (tenant, customer) => core.presence.devicesOf(customerPrincipal(tenant, customer)),
    agentDevices: (tenant, merchant) => core.presence.agentsOf(tenant, merchant),
    closeConsultation: (tenant, conv) => core.desk.closeIfOpen(tenant, conv),
    whenMerchantIdle: move.whenMerchantIdle,
    cursorsFlushed: move.cursorsFlushed,
    forgetConversations: (tenant, merchant) => core.forgetConversations(tenant, merchant),
  };
}

export interface ExportedConversation {
  conv: string;
  merchant: string;
  /** Whether this cell hosts the merchant (false: a mirror of a conversation whose home is another cell). */
  hostedHere: boolean;
  /** Ascending; on a page that continues the conversation, from where the previous page stopped. */
  messages: ChatMessage[];
  /** On the conversation's first page: read cursors by party id. */
  readCursors?: Record<string, number>;
  /** On the conversation's first page: the customer's delivery cursors by device. */
  deliveryCursors?: Record<string, number>;
  /** On the conversation's first page: the attachments uploaded to it (their metadata; the bytes are served to its parties). */
  attachments?: Array<AttachmentReference & { id: string }>;
  /** On the first page, when the merchant is hosted here: its desk's records of the customer. */
  consultation?: ConsultationRecord;
  lastConsultation?: LastConsultation;
  /** The ratings whose `rated` message is on this page. */
  ratings?: Rating[];
}

export interface ExportPage {
  tenant: string;
  customer: string;
  conversations: ExportedConversation[];
  /** Where the next page starts (`after`); absent on the last page. */
  next?: string;
}

/** `after` of an export page: conversations after `conv`, or `conv` itself from the message after `seq`. */
export const EXPORT_AFTER_PATTERN = /^([A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64})(?:\/(\d{1,16}))?$/;

export interface ErasedCounts {
  conversations: number;
  messages: number;
  idempotencyRecords: number;
  readCursors: number;
  deliveryCursors: number;
  deskRecords: number;
  ratings: number;
  /** References of the conversations to attachments; an attachment's bytes go with the last reference to them. */
  attachments: number;
}

export interface LocalErasure {
  deleted: ErasedCounts;
  /** The customer's devices connected here, closed. */
  devicesClosed: number;
}

export class CustomerData {
  constructor(private readonly components: { store: Store; host: CustomerDataHost; attachments: Pick<AttachmentStore, 'forget'> }) {}

  /** One page of the customer's data held here, from `after` (EXPORT_AFTER_PATTERN) or the start. */
  async exportPage(tenant: string, customer: string, after: string | undefined): Promise<ExportPage> {
    const { store, host } = this.components;
    const match = after === undefined ? undefined : EXPORT_AFTER_PATTERN.exec(after);
    if (match === null) throw new RangeError(`not an export position: ${after}`);
    const continued = match?.[2] === undefined ? undefined : { conv: match[1]!, seq: Number(match[2]) };
    const index = keys.customerConversations(tenant, customer);
    const gte = match === undefined ? index.gte : continued !== undefined ? keys.customerConversation(tenant, customer, continued.conv) : `${keys.customerConversation(tenant, customer, match[1]!)}\u0000`;
    const convs = (await store.range({ gte, lt: index.lt, limit: EXPORT_PAGE_CONVERSATIONS + 1 })).map(([key]) => lastField(key));
    const deliveryCursors = await this.deliveryCursorsOf(tenant, customer);
    const page: ExportPage = { tenant, customer, conversations: [] };
    let budget = EXPORT_PAGE_MESSAGES;
    for (const [position, conv] of convs.entries()) {
      if (position === EXPORT_PAGE_CONVERSATIONS || budget === 0) {
        page.next = page.conversations.at(-1)!.conv;
        break;
      }
      const merchant = parseConversationId(conv)!.merchant;
      const fromSeq = continued?.conv === conv ? continued.seq + 1 : 1;
      const stored = await store.range({ ...keys.messageRange(tenant, conv, fromSeq, Number.MAX_SAFE_INTEGER), limit: budget + 1 });
      const messages = stored.slice(0, budget).map(([, value]) => JSON.parse(value) as ChatMessage);
      budget -= messages.length;
      const exported: ExportedConversation = { conv, merchant, hostedHere: host.hosts(tenant, merchant), messages };
      if (fromSeq === 1) await this.addRecords(exported, tenant, customer, deliveryCursors);
      const ratings = await this.ratingsRatedIn(tenant, merchant, messages);
      if (ratings.length > 0) exported.ratings = ratings;
      page.conversations.push(exported);
      if (stored.length > messages.length) {
        page.next = `${conv}/${messages.at(-1)!.seq}`;
        break;
      }
    }
    return page;
  }

  /**
   * Deletes everything of the customer held here. Its devices here are closed first, then its
   * open consultations closed and the writes under way awaited, so nothing of it is written
   * after the deletion (a device that connects again meanwhile starts a new conversation).
   * Idempotent: erasing again deletes nothing more. `only`: the conversations with these
   * merchants alone (a process of a cell of several processes, for the merchants it owns); the
   * customer's devices here and its delivery cursors go in any case.
   */
  async eraseHere(tenant: string, customer: string, only?: ReadonlySet<string>): Promise<LocalErasure> {
    const { store, host } = this.components;
    let devicesClosed = 0;
    for (const device of [...host.customerDevices(tenant, customer)]) {
      device.port.close(CloseCode.Forbidden, 'your data was erased at your request');
      devicesClosed++;
    }
    const convs = (await this.conversationsOf(tenant, customer)).filter((conv) => only === undefined || only.has(parseConversationId(conv)!.merchant));
    const merchants = new Set(convs.map((conv) => parseConversationId(conv)!.merchant));
    const hosted = [...merchants].filter((merchant) => host.hosts(tenant, merchant));
    for (const conv of convs) {
      const merchant = parseConversationId(conv)!.merchant;
      if (!host.hosts(tenant, merchant)) continue;
      host.closeConsultation(tenant, conv);
      // Agents' devices following it would keep its seqs in memory; they reload on reconnecting.
      for (const device of [...host.agentDevices(tenant, merchant)]) {
        if (device.cursors.has(conv)) device.port.close(CloseCode.GoingAway, `conversation ${conv} was erased; reconnect`);
      }
    }
    for (const merchant of hosted) await host.whenMerchantIdle(tenant, merchant);
    await host.cursorsFlushed();
    const counts: ErasedCounts = { conversations: convs.length, messages: 0, idempotencyRecords: 0, readCursors: 0, deliveryCursors: 0, deskRecords: 0, ratings: 0, attachments: 0 };
    const batch = new DeleteBatch(store);
    for (const conv of convs) {
      const merchant = parseConversationId(conv)!.merchant;
      counts.attachments += await this.forgetAttachments(tenant, conv);
      await deleteConversation(batch, tenant, customer, conv, counts);
      if (!host.hosts(tenant, merchant)) continue;
      // The agents' delivery cursors of the conversation, under each agent's device.
      counts.deliveryCursors += await batch.deleteRange(prefixRange(`d/${tenant}/${partyId({ role: 'agent', merchant, user: '' })}`), (key) => lastField(key) === conv);
    }
    counts.deliveryCursors += await batch.deleteRange(prefixRange(`d/${tenant}/${partyId({ role: 'customer', user: customer })}/`));
    for (const merchant of hosted) {
      counts.deskRecords += await batch.deleteIfPresent(deskKeys.consultation(tenant, merchant, customer));
      counts.deskRecords += await batch.deleteIfPresent(deskKeys.last(tenant, merchant, customer));
      counts.ratings += await batch.deleteRange(keys.merchantDeskTable(tenant, merchant, 'rating'), (_key, value) => (JSON.parse(value) as { customer?: unknown }).customer === customer);
    }
    await batch.flush();
    // The system message closing a consultation waits for its conversation to load when it was
    // not in memory: it may land after the first pass, with the desk's last record. Once more.
    for (const merchant of hosted) await host.whenMerchantIdle(tenant, merchant);
    for (const conv of convs) {
      const merchant = parseConversationId(conv)!.merchant;
      if (!host.hosts(tenant, merchant)) continue;
      await deleteConversation(batch, tenant, customer, conv, counts);
      counts.deskRecords += await batch.deleteIfPresent(deskKeys.last(tenant, merchant, customer));
    }
    await batch.flush();
    for (const merchant of merchants) host.forgetConversations(tenant, merchant);
    return { deleted: counts, devicesClosed };
  }

  /** The merchants the customer has conversations with, in this cell's store. */
  async merchantsOf(tenant: string, customer: string): Promise<string[]> {
    return [...new Set((await this.conversationsOf(tenant, customer)).map((conv) => parseConversationId(conv)!.merchant))];
  }

  private async conversationsOf(tenant: string, customer: string): Promise<string[]> {
    const convs: string[] = [];
    for await (const [key] of scan(this.components.store, keys.customerConversations(tenant, customer))) convs.push(lastField(key));
    return convs;
  }

  /** Deletes the conversation's references to attachments (and the bytes no other conversation references), one at a time. */
  private async forgetAttachments(tenant: string, conv: string): Promise<number> {
    const ids: string[] = [];
    for await (const [key] of scan(this.components.store, keys.attachmentReferences(tenant, conv))) ids.push(lastField(key));
    for (const id of ids) await this.components.attachments.forget(tenant, conv, id);
    return ids.length;
  }

  private async deliveryCursorsOf(tenant: string, customer: string): Promise<Map<string, Record<string, number>>> {
    const byConv = new Map<string, Record<string, number>>();
    const entries = await this.components.store.range({ ...prefixRange(`d/${tenant}/${partyId({ role: 'customer', user: customer })}/`), limit: MAX_DELIVERY_CURSORS });
    for (const [key, value] of entries) {
      const [, , , device, conv] = key.split('/');
      const cursors = byConv.get(conv!) ?? {};
      cursors[device!] = Number(value);
      byConv.set(conv!, cursors);
    }
    return byConv;
  }

  private async addRecords(exported: ExportedConversation, tenant: string, customer: string, deliveryCursors: Map<string, Record<string, number>>): Promise<void> {
    const { store } = this.components;
    exported.readCursors = Object.fromEntries(await storedReadCursors(store, tenant, exported.conv));
    exported.deliveryCursors = deliveryCursors.get(exported.conv) ?? {};
    const attachments = await store.range({ ...keys.attachmentReferences(tenant, exported.conv), limit: EXPORT_PAGE_MESSAGES });
    exported.attachments = attachments.map(([key, value]) => ({ id: lastField(key), ...(JSON.parse(value) as AttachmentReference) }));
    if (!exported.hostedHere) return;
    const [consultation, last] = await store.getMany([deskKeys.consultation(tenant, exported.merchant, customer), deskKeys.last(tenant, exported.merchant, customer)]);
    if (consultation !== undefined) exported.consultation = parseStored(ConsultationRecord, deskKeys.consultation(tenant, exported.merchant, customer), consultation);
    if (last !== undefined) exported.lastConsultation = parseStored(LastConsultation, deskKeys.last(tenant, exported.merchant, customer), last);
  }

  /** The ratings announced by the `rated` messages among `messages` (a rating is keyed by its consultation). */
  private async ratingsRatedIn(tenant: string, merchant: string, messages: readonly ChatMessage[]): Promise<Rating[]> {
    const rated = messages.flatMap((message) => (message.event?.type === 'rated' ? [message.event.consultation] : []));
    if (rated.length === 0) return [];
    const ratingKeys = rated.map((consultation) => deskKeys.rating(tenant, merchant, consultation));
    const stored = await this.components.store.getMany(ratingKeys);
    return stored.flatMap((value, index) => (value === undefined ? [] : [parseStored(Rating, ratingKeys[index]!, value)]));
  }
}

/** Deletes a conversation's messages, idempotency records, read cursors and index entries. */
async function deleteConversation(batch: DeleteBatch, tenant: string, customer: string, conv: string, counts: ErasedCounts): Promise<void> {
  counts.messages += await batch.deleteRange(keys.allMessages(tenant, conv));
  counts.idempotencyRecords += await batch.deleteRange(prefixRange(`i/${tenant}/${conv}/`));
  counts.readCursors += await batch.deleteRange(keys.readCursors(tenant, conv));
  await batch.delete(keys.customerConversation(tenant, customer, conv));
  await batch.delete(keys.merchantConversation(tenant, parseConversationId(conv)!.merchant, conv));
}

/** Deletes collected keys in store batches of ERASE_BATCH_OPS. */
class DeleteBatch {
  private ops: StoreOp[] = [];

  constructor(private readonly store: Store) {}

  async delete(key: string): Promise<void> {
    this.ops.push({ type: 'del', key });
    if (this.ops.length >= ERASE_BATCH_OPS) await this.flush();
  }

  /** Deletes `key` when it is stored; resolves with how many (0 or 1). */
  async deleteIfPresent(key: string): Promise<number> {
    if ((await this.store.get(key)) === undefined) return 0;
    await this.delete(key);
    return 1;
  }

  /** Deletes the keys of `range` that `which` selects (all by default); resolves with how many. */
  async deleteRange(range: { gte: string; lt: string }, which: (key: string, value: string) => boolean = () => true): Promise<number> {
    let count = 0;
    for await (const [key, value] of scan(this.store, range)) {
      if (!which(key, value)) continue;
      await this.delete(key);
      count++;
    }
    return count;
  }

  async flush(): Promise<void> {
    if (this.ops.length === 0) return;
    const ops = this.ops;
    this.ops = [];
    await this.store.write(ops);
  }
}

