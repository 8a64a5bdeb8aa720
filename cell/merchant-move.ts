import { z } from 'zod';
import type { Clock } from '../platform/clock.js';
import { decodeJson, encodeJson } from '../platform/wire-json.js';
import type { Logger } from './logger.js';
import type { ClusterPort } from './messaging/cluster-port.js';
import { keys, lastField, prefixRange } from './messaging/keys.js';
import { CellError, ErrorCode } from './protocol/errors.js';
import { IDENTIFIER_PATTERN } from './protocol/frames.js';
import type { Store, StoreOp } from './store/store.js';

/**
 * Moving a merchant to another cell at runtime (docs/mesh.md, "Moving a merchant").
 *
 * The source cell fences the merchant (new writes to its conversations wait), lets the writes
 * under way finish and flushes delivery cursors, copies every key of the merchant to the target
 * over `/cellmesh/handover/1.0.0` (messages, idempotency keys, read cursors, the conversation
 * indexes, delivery cursors), then asks the target to commit: the target hosts the merchant and
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
const REQUEST_TIMEOUT_MS = 10_000;
/** How long the source waits for its own directory to route the merchant to the target. */
const ROUTE_SWITCH_TIMEOUT_MS = 10_000;
const ROUTE_POLL_MS = 20;

/** What a move needs from the cell core. */
export interface MoveHost {
  hosts(tenant: string, merchant: string): boolean;
  /** New writes to the merchant's conversations wait until the returned release is called. */
  fence(tenant: string, merchant: string): () => void;
  /** Resolves once the writes under way to the merchant's conversations are durable. */
  whenMerchantIdle(tenant: string, merchant: string): Promise<void>;
  /** Writes the delivery cursors acked so far. */
  cursorsFlushed(): Promise<void>;
  hostMerchant(tenant: string, merchant: string): void;
  /** Stops hosting; the merchant's agents connected here are told to reconnect (to the new home). */
  releaseMerchant(tenant: string, merchant: string): void;
}

/** What a move needs from the cell's membership (its record's merchant claims). */
export interface MerchantClaims {
  epochOf(tenant: string, merchant: string): number | undefined;
  /** Claims the merchant at `epoch` (persisted, then gossiped). */
  claim(tenant: string, merchant: string, epoch: number): Promise<void>;
  /** Drops this cell's claim (persisted, then gossiped). */
  release(tenant: string, merchant: string, epoch: number): Promise<void>;
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
  z.object({ v: z.literal(1), stage: z.literal('copy'), tenant: identifier, merchant: identifier, entries: z.array(z.tuple([z.string().max(1024), z.string()])).max(PAGE_KEYS) }),
  z.object({ v: z.literal(1), stage: z.literal('commit'), tenant: identifier, merchant: identifier, epoch: z.number().int().min(1) }),
]);
type HandoverRequest = z.infer<typeof HandoverRequest>;
const HandoverAnswer = z.union([z.object({ ok: z.literal(true) }), z.object({ ok: z.literal(false), code: z.string(), message: z.string() })]);

/** Largest handover request or answer accepted: a page of keys and values with room to spare. */
const MAX_WIRE_BYTES = 4 * PAGE_BYTES;

export interface MerchantMoverComponents {
  cellId: string;
  store: Store;
  cluster: ClusterPort;
  clock: Clock;
  logger: Logger;
  host: MoveHost;
  claims: MerchantClaims;
}

export class MerchantMover {
  /** Moves under way from this cell, by tenant/merchant: one at a time per merchant. */
  private readonly moving = new Set<string>();

  constructor(private readonly components: MerchantMoverComponents) {
    components.cluster.handle(HANDOVER_PROTOCOL, (from, data) => this.serve(from, data));
  }

  /** Moves `merchant` of `tenant` from this cell to cell `to`. */
  async move(tenant: string, merchant: string, to: string): Promise<MoveResult> {
    const { host, claims, cellId, clock, logger } = this.components;
    if (!host.hosts(tenant, merchant)) throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by cell ${cellId}`);
    if (to === cellId) throw new CellError(ErrorCode.BadFrame, `merchant ${merchant} is already hosted by cell ${cellId}`);
    const key = `${tenant}/${merchant}`;
    if (this.moving.has(key)) throw new CellError(ErrorCode.MoveInProgress, `merchant ${merchant} is being moved already`);
    this.moving.add(key);
    const epoch = (claims.epochOf(tenant, merchant) ?? 0) + 1;
    const release = host.fence(tenant, merchant);
    const fencedAtMs = clock.now();
    let committed = false;
    try {
      await host.whenMerchantIdle(tenant, merchant);
      await host.cursorsFlushed();
      const { conversations, keysCopied } = await this.copy(tenant, merchant, to);
      await this.call(to, { v: 1, stage: 'commit', tenant, merchant, epoch });
      committed = true;
      host.releaseMerchant(tenant, merchant);
      await claims.release(tenant, merchant, epoch);
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
      await this.call(to, { v: 1, stage: 'copy', tenant, merchant, entries: page });
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
    // Tables keyed by conversation: every conversation id of the merchant starts with `<merchant>:`.
    for (const table of ['m', 'i', 'r']) {
      for await (const [key, value] of scan(store, prefixRange(`${table}/${tenant}/${merchant}:`))) await add(key, value);
    }
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

  private async waitRoutedTo(tenant: string, merchant: string, to: string): Promise<void> {
    const { claims, clock } = this.components;
    const deadlineMs = clock.now() + ROUTE_SWITCH_TIMEOUT_MS;
    while (claims.homeOf(tenant, merchant) !== to) {
      if (clock.now() > deadlineMs) throw new CellError(ErrorCode.MoveFailed, `the directory of this cell did not route ${merchant} to ${to} within ${ROUTE_SWITCH_TIMEOUT_MS} ms`);
      await new Promise<void>((resolve) => clock.setTimer(ROUTE_POLL_MS, resolve));
    }
  }

  private async call(to: string, request: HandoverRequest): Promise<void> {
    const data = await this.components.cluster.request(to, HANDOVER_PROTOCOL, encodeJson(request), { timeoutMs: REQUEST_TIMEOUT_MS });
    const answer = decodeJson(HandoverAnswer, data, MAX_WIRE_BYTES);
    if (answer === undefined) throw new CellError(ErrorCode.MoveFailed, `cell ${to} answered the ${request.stage} with something that is not a handover answer`);
    if (!answer.ok) throw new CellError(ErrorCode.MoveFailed, `cell ${to} refused the ${request.stage}: ${answer.code} ${answer.message}`);
  }

  /** Target side: store copied keys; on commit, host the merchant and claim it. */
  private async serve(from: string, data: Uint8Array): Promise<Uint8Array> {
    const answer = (body: z.infer<typeof HandoverAnswer>): Uint8Array => encodeJson(body);
    const request = decodeJson(HandoverRequest, data, MAX_WIRE_BYTES);
    if (request === undefined) return answer({ ok: false, code: 'BAD_REQUEST', message: 'not a handover request' });
    const { host, claims, store, logger } = this.components;
    if (claims.homeOf(request.tenant, request.merchant) !== from) {
      return answer({ ok: false, code: 'NOT_HOME', message: `cell ${from} is not the home of ${request.merchant} here` });
    }
    if (request.stage === 'copy') {
      const allowed = request.entries.every(([key]) => belongsToMerchant(key, request.tenant, request.merchant));
      if (!allowed) return answer({ ok: false, code: 'BAD_REQUEST', message: 'a key outside the merchant' });
      const ops: StoreOp[] = request.entries.map(([key, value]) => ({ type: 'put', key, value }));
      await store.write(ops);
      return answer({ ok: true });
    }
    host.hostMerchant(request.tenant, request.merchant);
    await claims.claim(request.tenant, request.merchant, request.epoch);
    logger.info({ tenant: request.tenant, merchant: request.merchant, from, epoch: request.epoch }, 'merchant moved in');
    return answer({ ok: true });
  }
}

/** Whether a copied key is one of the merchant's (the target refuses anything else). */
function belongsToMerchant(key: string, tenant: string, merchant: string): boolean {
  const conversationOfMerchant = (conv: string): boolean => conv.startsWith(`${merchant}:`);
  if (key.startsWith(`mc/${tenant}/${merchant}/`)) return true;
  for (const table of ['m', 'i', 'r']) if (key.startsWith(`${table}/${tenant}/${merchant}:`)) return true;
  if (key.startsWith(`uc/${tenant}/`) || key.startsWith(`d/${tenant}/`)) return conversationOfMerchant(lastField(key));
  return false;
}

/** All entries of a range, page by page. */
async function* scan(store: Store, range: { gte: string; lt: string }): AsyncGenerator<[string, string]> {
  let gte = range.gte;
  for (;;) {
    const page = await store.range({ gte, lt: range.lt, limit: PAGE_KEYS });
    yield* page;
    if (page.length < PAGE_KEYS) return;
    gte = `${page[page.length - 1]![0]}\u0000`;
  }
}
