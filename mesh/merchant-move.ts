import { z } from 'zod';
import { ClaimProofSchema, type ClaimProof } from './cell-record.js';
import type { Clock } from '../platform/clock.js';
import { decodeJson, encodeJson } from '../platform/wire-json.js';
import type { Logger } from '../platform/logger.js';
import type { ClusterPort } from '../cell/messaging/cluster-port.js';
import type { MoveHost } from '../cell/move-host.js';
import { KeyedSerializer } from '../cell/messaging/keyed-serializer.js';
import { keys, lastField, prefixRange } from '../cell/messaging/keys.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';
import { IDENTIFIER_PATTERN } from '../cell/protocol/frames.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import { attachmentContentId, isMerchantAttachmentReference, merchantAttachmentEntries, referencedByMerchant } from './merchant-move-attachments.js';
import { deleteRange, scan } from '../platform/store/scan.js';

/**
 * Moving a merchant to another cell at runtime (docs/mesh.md, "Moving a merchant").
 *
 * The source first asks the target to prepare (is it reachable, does it agree the source is the
 * home?) without holding anything up, so a move towards a cell behind a partition fails at once
 * instead of stalling the merchant's conversations. Then it fences the merchant (new writes to its conversations wait), lets the writes
 * under way finish and flushes delivery cursors, copies every key of the merchant to the target
 * over `/cellmesh/handover/1.0.0` (messages, idempotency keys, read cursors, the conversation
 * indexes, delivery cursors, the desk, attachments, the records of a runtime merchant and tenant),
 * then asks the target to commit: the target hosts the merchant and
 * claims it at a higher epoch, which makes it the home in every directory. The source drops its
 * claim, waits until its own directory routes the merchant to the target, and lifts the fence:
 * the writes that waited, and every later one that reaches the old cell, take the cross-cell
 * path to the new home (forwarded, not lost). The old cell keeps its copy, which is a complete
 * mirror of each conversation, so devices connected there go on as cross-cell customers.
 */
export const HANDOVER_PROTOCOL = '/cellmesh/handover/1.0.0';

/** Keys per handover request, and their bytes: bounded so one request never holds a huge batch. */
const PAGE_KEYS = 512;
const PAGE_BYTES = 512 * 1024;
const PREPARE_TIMEOUT_MS = 10_000;
/**
 * Requests made while the merchant is fenced: short, since every write to the merchant waits
 * for them (a page of 512 keys takes milliseconds between two healthy cells).
 */
const FENCED_REQUEST_TIMEOUT_MS = 3_000;
/** Retries of an abort while the outcome of a commit is unknown: 250 ms, doubling to 5 s. */
const UNKNOWN_OUTCOME_FIRST_RETRY_MS = 250;
const UNKNOWN_OUTCOME_MAX_RETRY_MS = 5_000;
/** Handover requests waiting per target cell, over all merchants. */
const MAX_SERVING_TASKS = 64;
/** How long the source waits for its own directory to route the merchant to the target. */
const ROUTE_SWITCH_TIMEOUT_MS = 10_000;
const ROUTE_POLL_MS = 20;


/** What a move needs from the cell's membership (its record's merchant claims). */
export interface MerchantClaims {
  epochOf(tenant: string, merchant: string): number | undefined;
  /**
   * This cell's signed handover of a merchant it claims to cell `to` at `epoch`: the proof the
   * new home's claim carries (undefined when this cell does not know `to`).
   */
  handoverProof(tenant: string, merchant: string, to: string, epoch: number): ClaimProof | undefined;
  /**
   * Claims the merchant at `epoch` with `proof` of its right to: persisted, then `whenDurable`
   * runs to its end (the cell starts hosting it), then the claim is gossiped. So no cell routes to
   * this one before it serves the merchant, and a claim whose write failed is neither hosted nor gossiped.
   */
  claim(tenant: string, merchant: string, epoch: number, proof: ClaimProof | undefined, whenDurable: () => void | Promise<void>): Promise<void>;
  /** Drops this cell's claim, noting that cell `to` claims it at `epoch` now (persisted, then gossiped). */
  release(tenant: string, merchant: string, epoch: number, to: string): Promise<void>;
  /** The merchant's home in this cell's directory now. */
  homeOf(tenant: string, merchant: string): string | undefined;
}

export interface MoveResult {
  tenant: string;
  merchant: string;
  from: string;
  to: string;
  epoch: number;
  conversations: number;
  keysCopied: number;
  /** How long writes to the merchant's conversations waited. */
  fencedMs: number;
}

const identifier = z.string().regex(IDENTIFIER_PATTERN);
const HandoverRequest = z.discriminatedUnion('stage', [
  z.object({ v: z.literal(1), stage: z.literal('prepare'), tenant: identifier, merchant: identifier }),
  z.object({ v: z.literal(1), stage: z.literal('abort'), tenant: identifier, merchant: identifier, epoch: z.number().int().min(1) }),
  z.object({ v: z.literal(1), stage: z.literal('copy'), tenant: identifier, merchant: identifier, entries: z.array(z.tuple([z.string().max(1024), z.string()])).max(PAGE_KEYS) }),
  z.object({ v: z.literal(1), stage: z.literal('commit'), tenant: identifier, merchant: identifier, epoch: z.number().int().min(1), proof: ClaimProofSchema.optional() }),
]);
type HandoverRequest = z.infer<typeof HandoverRequest>;
const HandoverAnswer = z.union([z.object({ ok: z.literal(true) }), z.object({ ok: z.literal(false), code: z.string(), message: z.string() })]);

/** Largest handover request or answer accepted: a page of keys and values with room to spare. */
const MAX_WIRE_BYTES = 4 * PAGE_BYTES;

export interface MerchantMoverComponents {
  cellId: string;
  store: Store;
  /** Only requests to other cells, and serving the handover protocol. */
  cluster: Pick<ClusterPort, 'request' | 'handle'>;
  clock: Clock;
  logger: Logger;
  host: MoveHost;
  claims: MerchantClaims;
  /**
   * A cell of several processes: makes this process (the speaker) the merchant's owner before it
   * moves out, resolving with the release to call once the move ended, moved or not.
   */
  acquire?: ((tenant: string, merchant: string) => Promise<() => Promise<void>>) | undefined;
}

export class MerchantMover {
  /** Moves under way from this cell, by tenant/merchant: one at a time per merchant. */
  private readonly moving = new Set<string>();
  /** Target side: one handover request per merchant at a time. */
  private readonly serving = new KeyedSerializer(MAX_SERVING_TASKS);
  /** Why this cell takes no merchant now (a drain: CELL_DRAINING); undefined while it takes them. */
  private movesInRefusal: () => CellError | undefined = () => undefined;

  constructor(private readonly components: MerchantMoverComponents) {
    components.cluster.handle(HANDOVER_PROTOCOL, (from, data) => this.serve(from, data));
  }

  /** Refuses moves in (their prepare and commit) while `refusal` answers an error: a draining cell takes no merchants. */
  refuseMovesIn(refusal: () => CellError | undefined): void {
    this.movesInRefusal = refusal;
  }

  /** Moves `merchant` of `tenant` from this cell to cell `to`. */
  async move(tenant: string, merchant: string, to: string): Promise<MoveResult> {
    const { acquire } = this.components;
    if (acquire === undefined) return this.moveHosted(tenant, merchant, to);
    let release: () => Promise<void>;
    try {
      release = await acquire(tenant, merchant);
    } catch (error) {
      throw new CellError(ErrorCode.MoveFailed, `moving ${merchant} to ${to} failed: ${error instanceof Error ? error.message : String(error)}`);
    }
    try {
      return await this.moveHosted(tenant, merchant, to);
    } finally {
      await release();
    }
  }

  private async moveHosted(tenant: string, merchant: string, to: string): Promise<MoveResult> {
    const { host, claims, cellId, clock, logger } = this.components;
    if (!host.hosts(tenant, merchant)) throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by cell ${cellId}`);
    if (to === cellId) throw new CellError(ErrorCode.BadFrame, `merchant ${merchant} is already hosted by cell ${cellId}`);
    const key = `${tenant}/${merchant}`;
    if (this.moving.has(key)) throw new CellError(ErrorCode.MoveInProgress, `merchant ${merchant} is being moved already`);
    this.moving.add(key);
    const epoch = (claims.epochOf(tenant, merchant) ?? 0) + 1;
    // Signed before anything starts: without it, no cell would let the target displace this home.
    const proof = claims.handoverProof(tenant, merchant, to, epoch);
    if (proof === undefined) throw new CellError(ErrorCode.MoveFailed, `cell ${to} is not in this cell's directory`);
    try {
      await this.call(to, { v: 1, stage: 'prepare', tenant, merchant }, PREPARE_TIMEOUT_MS);
    } catch (error) {
      this.moving.delete(key);
      logger.warn({ err: error, tenant, merchant, to }, 'merchant move refused before it began; the merchant stays here');
      throw error instanceof CellError ? error : new CellError(ErrorCode.MoveFailed, `moving ${merchant} to ${to} failed: ${(error as Error).message}`);
    }
    const release = host.fence(tenant, merchant);
    const fencedAtMs = clock.now();
    let committed = false;
    try {
      await host.whenMerchantIdle(tenant, merchant);
      await host.cursorsFlushed();
      const { conversations, keysCopied } = await this.copy(tenant, merchant, to);
      committed = await this.commit(tenant, merchant, to, epoch, proof);
      if (!committed) throw new CellError(ErrorCode.MoveFailed, `cell ${to} did not commit ${merchant}; it stays here`);
      host.releaseMerchant(tenant, merchant, { cellId: to, epoch });
      await claims.release(tenant, merchant, epoch, to);
      await this.waitRoutedTo(tenant, merchant, to);
      const result: MoveResult = { tenant, merchant, from: cellId, to, epoch, conversations, keysCopied, fencedMs: clock.now() - fencedAtMs };
      logger.info(result, 'merchant moved');
      return result;
    } catch (error) {
      // Before the commit nothing changed: the merchant stays here. After it, the target is
      // the home (higher epoch) whatever happens here.
      if (!committed) logger.warn({ err: error, tenant, merchant, to }, 'merchant move failed; the merchant stays here');
      throw error instanceof CellError ? error : new CellError(ErrorCode.MoveFailed, `moving ${merchant} to ${to} failed: ${(error as Error).message}`);
    } finally {
      release();
      this.moving.delete(key);
    }
  }

  /** Copies every key of the merchant to the target, page by page. */
  private async copy(tenant: string, merchant: string, to: string): Promise<{ conversations: number; keysCopied: number }> {
    const { store } = this.components;
    let keysCopied = 0;
    let page: Array<[string, string]> = [];
    let pageBytes = 0;
    const flush = async (): Promise<void> => {
      if (page.length === 0) return;
      await this.call(to, { v: 1, stage: 'copy', tenant, merchant, entries: page }, FENCED_REQUEST_TIMEOUT_MS);
      keysCopied += page.length;
      page = [];
      pageBytes = 0;
    };
    const add = async (key: string, value: string): Promise<void> => {
      page.push([key, value]);
      pageBytes += key.length + value.length;
      if (page.length >= PAGE_KEYS || pageBytes >= PAGE_BYTES) await flush();
    };
    const conversations: string[] = [];
    for await (const [key, value] of scan(store, keys.merchantConversations(tenant, merchant))) {
      conversations.push(lastField(key));
      await add(key, value);
    }
    // The merchant's desk (agents, consultations, queues) moves with it: nothing is reassigned by a move.
    for await (const [key, value] of scan(store, keys.merchantDesk(tenant, merchant))) await add(key, value);
    // A merchant created through the admin API, and its tenant's record if that was too: the
    // target may not serve the tenant yet, and needs its secrets to verify the merchant's tokens.
    for (const key of [keys.tenantRecord(tenant), keys.tenantMerchant(tenant, merchant)]) {
      const value = await store.get(key);
      if (value !== undefined) await add(key, value);
    }
    // Tables keyed by conversation: every conversation id of the merchant starts with `<merchant>:`.
    for (const table of ['m', 'i', 'r']) {
      for await (const [key, value] of scan(store, prefixRange(`${table}/${tenant}/${merchant}:`))) await add(key, value);
    }
    // Attachments of its conversations: references first, then the content they reference.
    for await (const [key, value] of merchantAttachmentEntries(store, tenant, merchant)) await add(key, value);
    for (const conv of conversations) {
      const customer = conv.slice(merchant.length + 1);
      const indexKey = keys.customerConversation(tenant, customer, conv);
      const value = await store.get(indexKey);
      if (value !== undefined) await add(indexKey, value);
    }
    // Delivery cursors are keyed by user and device; the merchant's are those of its conversations.
    for await (const [key, value] of scan(store, prefixRange(`d/${tenant}/`))) {
      if (lastField(key).startsWith(`${merchant}:`)) await add(key, value);
    }
    await flush();
    return { conversations: conversations.length, keysCopied };
  }

  /**
   * Asks the target to commit. A refusal means it did not. A commit whose answer never came
   * (lost, timed out, the target restarted) may have happened or not, and guessing wrong makes
   * two homes: the merchant stays fenced until the outcome is known, from the directory (the
   * target's claim arrived) or from an abort the target either accepts (it will never commit
   * this epoch) or refuses because it committed.
   */
  private async commit(tenant: string, merchant: string, to: string, epoch: number, proof: ClaimProof): Promise<boolean> {
    const { claims, clock, logger } = this.components;
    try {
      await this.call(to, { v: 1, stage: 'commit', tenant, merchant, epoch, proof }, FENCED_REQUEST_TIMEOUT_MS);
      return true;
    } catch (error) {
      if (error instanceof HandoverRefused) return false;
      logger.warn({ err: error, tenant, merchant, to, epoch }, 'the commit of a merchant move went unanswered; finding out whether it happened');
    }
    for (let attempt = 0; ; attempt++) {
      if (claims.homeOf(tenant, merchant) === to) return true;
      try {
        await this.call(to, { v: 1, stage: 'abort', tenant, merchant, epoch }, FENCED_REQUEST_TIMEOUT_MS);
        return false;
      } catch (error) {
        if (error instanceof HandoverRefused && error.refusal === 'COMMITTED') return true;
        if (error instanceof HandoverRefused) throw error;
      }
      const delayMs = Math.min(UNKNOWN_OUTCOME_MAX_RETRY_MS, UNKNOWN_OUTCOME_FIRST_RETRY_MS * 2 ** attempt);
      await new Promise<void>((resolve) => clock.setTimer(delayMs, resolve));
    }
  }

  private async waitRoutedTo(tenant: string, merchant: string, to: string): Promise<void> {
    const { claims, clock } = this.components;
    const deadlineMs = clock.now() + ROUTE_SWITCH_TIMEOUT_MS;
    while (claims.homeOf(tenant, merchant) !== to) {
      if (clock.now() > deadlineMs) throw new CellError(ErrorCode.MoveFailed, `the directory of this cell did not route ${merchant} to ${to} within ${ROUTE_SWITCH_TIMEOUT_MS} ms`);
      await new Promise<void>((resolve) => clock.setTimer(ROUTE_POLL_MS, resolve));
    }
  }

  private async call(to: string, request: HandoverRequest, timeoutMs: number): Promise<void> {
    const data = await this.components.cluster.request(to, HANDOVER_PROTOCOL, encodeJson(request), { timeoutMs });
    const answer = decodeJson(HandoverAnswer, data, MAX_WIRE_BYTES);
    if (answer === undefined) throw new CellError(ErrorCode.MoveFailed, `cell ${to} answered the ${request.stage} with something that is not a handover answer`);
    if (!answer.ok) throw new HandoverRefused(answer.code, `cell ${to} refused the ${request.stage}: ${answer.code} ${answer.message}`);
  }

  /**
   * Target side: store copied keys; on commit, claim the merchant and host it; on abort, promise
   * never to commit that epoch. One request per merchant at a time, so an abort cannot slip in
   * between a commit's claim and its hosting.
   */
  private serve(from: string, data: Uint8Array): Promise<Uint8Array> {
    const request = decodeJson(HandoverRequest, data, MAX_WIRE_BYTES);
    if (request === undefined) return Promise.resolve(encodeJson({ ok: false, code: 'BAD_REQUEST', message: 'not a handover request' }));
    return this.serving.run(`${request.tenant}/${request.merchant}`, () => this.serveInTurn(from, request));
  }

  private async serveInTurn(from: string, request: HandoverRequest): Promise<Uint8Array> {
    const answer = (body: z.infer<typeof HandoverAnswer>): Uint8Array => encodeJson(body);
    const { host, claims, store, logger } = this.components;
    // A repeated commit (a retry, or a duplicate) of what happened already, and aborts, are
    // answered whoever the home is now: after a commit it is this cell.
    const committedHere = (epoch: number): boolean => host.hosts(request.tenant, request.merchant) && (claims.epochOf(request.tenant, request.merchant) ?? -1) >= epoch;
    if (request.stage === 'abort') {
      if (committedHere(request.epoch)) return answer({ ok: false, code: 'COMMITTED', message: `${request.merchant} was committed here at epoch ${request.epoch}` });
      await this.recordAbort(request.tenant, request.merchant, request.epoch);
      return answer({ ok: true });
    }
    if (request.stage === 'commit' && committedHere(request.epoch)) return answer({ ok: true });
    if (claims.homeOf(request.tenant, request.merchant) !== from) {
      return answer({ ok: false, code: 'NOT_HOME', message: `cell ${from} is not the home of ${request.merchant} here` });
    }
    const refusal = request.stage === 'prepare' || request.stage === 'commit' ? this.movesInRefusal() : undefined;
    if (refusal !== undefined) return answer({ ok: false, code: refusal.code, message: refusal.message });
    if (request.stage === 'prepare') {
      // What this cell kept of the merchant's desk from an earlier stay is stale (records deleted
      // since, at the merchant's home, would come back to life): the copy brings all of it.
      if (!host.hosts(request.tenant, request.merchant)) {
        await deleteRange(store, keys.merchantDesk(request.tenant, request.merchant));
        // So is its record of the admin API: the copy brings the current one, if it has one.
        await store.write([{ type: 'del', key: keys.tenantMerchant(request.tenant, request.merchant) }]);
      }
      return answer({ ok: true });
    }
    if (request.stage === 'copy') {
      const { tenant, merchant, entries } = request;
      const contentIds = new Set<string>();
      const allowed = entries.every(([key]) => {
        if (belongsToMerchant(key, tenant, merchant)) return true;
        const id = attachmentContentId(key, tenant);
        if (id !== undefined) contentIds.add(id);
        return id !== undefined;
      });
      // Attachment content is the tenant's, shared between merchants: only what the merchant's conversations reference comes in.
      if (!allowed || !(await referencedByMerchant(store, tenant, merchant, contentIds, entries))) {
        return answer({ ok: false, code: 'BAD_REQUEST', message: 'a key outside the merchant' });
      }
      // A tenant record this cell has already is its own (it may have rotated secrets since): kept.
      const tenantKnown = (await store.get(keys.tenantRecord(tenant))) !== undefined;
      const ops: StoreOp[] = entries.filter(([key]) => !(tenantKnown && key === keys.tenantRecord(tenant))).map(([key, value]) => ({ type: 'put', key, value }));
      await store.write(ops);
      return answer({ ok: true });
    }
    if ((await this.abortedEpoch(request.tenant, request.merchant)) >= request.epoch) {
      return answer({ ok: false, code: 'ABORTED', message: `the move of ${request.merchant} at epoch ${request.epoch} was aborted` });
    }
    // The durable claim is the commit: if writing it fails, nothing changed here (the source
    // may still abort). Hosted once written, gossiped once hosted.
    await claims.claim(request.tenant, request.merchant, request.epoch, request.proof, () => host.hostMerchant(request.tenant, request.merchant));
    logger.info({ tenant: request.tenant, merchant: request.merchant, from, epoch: request.epoch }, 'merchant moved in');
    return answer({ ok: true });
  }

  /** Aborted epochs are kept on disk: a commit delayed in the network must not win after a restart either. */
  private async recordAbort(tenant: string, merchant: string, epoch: number): Promise<void> {
    if ((await this.abortedEpoch(tenant, merchant)) >= epoch) return;
    await this.components.store.write([{ type: 'put', key: abortKey(tenant, merchant), value: String(epoch) }]);
  }

  private async abortedEpoch(tenant: string, merchant: string): Promise<number> {
    const value = await this.components.store.get(abortKey(tenant, merchant));
    return value === undefined ? 0 : Number(value);
  }
}

/** The target refused a handover request: a definite answer, unlike a request that went unanswered. */
class HandoverRefused extends CellError {
  constructor(
    readonly refusal: string,
    message: string,
  ) {
    super(ErrorCode.MoveFailed, message);
    this.name = 'HandoverRefused';
  }
}

function abortKey(tenant: string, merchant: string): string {
  return `mesh/handover-aborted/${tenant}/${merchant}`;
}

/** Whether a copied key is one of the merchant's (the target refuses anything else). */
function belongsToMerchant(key: string, tenant: string, merchant: string): boolean {
  const conversationOfMerchant = (conv: string): boolean => conv.startsWith(`${merchant}:`);
  if (key.startsWith(`mc/${tenant}/${merchant}/`) || key.startsWith(keys.merchantDesk(tenant, merchant).gte)) return true;
  if (key === keys.tenantRecord(tenant) || key === keys.tenantMerchant(tenant, merchant)) return true;
  if (isMerchantAttachmentReference(key, tenant, merchant)) return true;
  for (const table of ['m', 'i', 'r']) if (key.startsWith(`${table}/${tenant}/${merchant}:`)) return true;
  if (key.startsWith(`uc/${tenant}/`) || key.startsWith(`d/${tenant}/`)) return conversationOfMerchant(lastField(key));
  return false;
}
