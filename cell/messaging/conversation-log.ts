import type { Clock } from '../../platform/clock.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ChatMessage, DeskNotice, MessageAttachment, MessageRole } from '../protocol/frames.js';
import { parseConversationId } from '../protocol/frames.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import { invariant } from '../../platform/invariant.js';
import { keys } from './keys.js';
import { conversationParty } from './principal.js';
import { idempotencyConflict, refusedBehind } from './append-errors.js';
import { RefusedSenders } from './refused-senders.js';
import { coverStoredReads, readsFrom, SENT_READ_WINDOW, windowCheckpoints, type LoadedReads } from './read-cursors.js';

/** What a sender asks to append. */
export interface AppendRequest {
  tenant: string;
  conv: string;
  from: string;
  role: MessageRole;
  device: string;
  cmid: string;
  body: string;
  /** Attachments the message carries (their metadata as their conversation references them). */
  attachments?: readonly MessageAttachment[] | undefined;
  /** What a system message records (role `system`). */
  event?: DeskNotice | undefined;
  /**
   * Store ops written in the same atomic batch as the message: the desk's record of the change
   * a system message announces, or of the consultation a customer's message opens, so the two
   * never disagree after a crash.
   */
  alsoWrite?: readonly StoreOp[] | undefined;
  /** Handed back to `onDurable` with the new message (the connection that gets `sent`). */
  context?: object | undefined;
}

export interface AppendResult {
  message: ChatMessage;
  /** True when the cmid had been stored before: nothing new was written. */
  duplicate: boolean;
}

export interface ConversationLogOptions {
  store: Store;
  clock: Clock;
  /**
   * Called once per newly durable message, in seq order per conversation, with the `context`
   * of the append that wrote it and, when this log wrote it, the JSON it stored (so delivery
   * need not serialise the message again). Must not throw.
   */
  onDurable: (tenant: string, message: ChatMessage, firstOfConversation: boolean, context: object | undefined, storedJson: string | undefined) => void;
  /** Called with the time a durable write took, for metrics. */
  onStoreWrite?: (durationMs: number) => void;
  /** Recent messages kept in memory per conversation, so live delivery rarely reads the store. */
  recentMessages?: number;
  /** Conversations kept in memory; the least recently used idle ones are dropped beyond this. */
  maxCachedConversations?: number;
  /** Appends waiting for one conversation before senders get STORE_UNAVAILABLE. */
  maxQueuedAppends?: number;
}

/** A conversation's appends of one batch, with their seqs assigned and their store ops. */
interface SequencedBatch {
  messages: ChatMessage[];
  /** The messages as stored, by index; empty for messages read back from the store. */
  storedJson: string[];
  ops: StoreOp[];
  readsAfter: Map<string, number>;
  /** Cursors written with the batch (read-cursors.ts): parties whose newest message leaves the window. */
  cursorsWritten: Map<string, number>;
  firstOfConversation: boolean;
}

interface PendingAppend {
  request: AppendRequest;
  /** Its key in the conversation's `inFlight`, removed as it settles (resolveAppend, rejectAppend). */
  dedupKey: string;
  resolve: (result: AppendResult) => void;
  reject: (error: unknown) => void;
}

/** One conversation's in-memory head: the durable sequence, read cursors, recent messages. */
export class ConversationState {
  durableSeq: number;
  /** Read cursors by party id (principal.ts): a customer and an agent may share a user id. */
  readonly reads: Map<string, number>;
  /** The read cursors as stored (read-cursors.ts), by party id. */
  readonly storedReads: Map<string, number>;
  /** Parties whose newest durable message is beyond their stored cursor, with its seq (read-cursors.ts). */
  readonly uncoveredSends: Map<string, number>;
  /** The newest durable messages, oldest first, at most `recentLimit`. */
  readonly recent: ChatMessage[] = [];
  /** Appends that wait for the write under way; they share the next batch. */
  readonly queue: PendingAppend[] = [];
  /** Appends by `<sender's party id>/cmid` that are queued or being written, so a resend joins them (with the same body). */
  readonly inFlight = new Map<string, { promise: Promise<AppendResult>; body: string }>();
  /** Read cursor writes under way, by party id; the cursor in `reads` moves once one is durable. */
  readonly readWrites = new Map<string, Promise<void>>();
  readonly refusedSenders = new RefusedSenders();
  writing = false;
  /**
   * How far a device of each side acked (delivered-receipts.ts): derived from the delivery
   * cursors as they move, so never written; after a load it starts at 0 and the next ack sets it.
   */
  deliveredToCustomer = 0;
  deliveredToAgents = 0;
  /** A write of its messages failed yet may have landed (a lost Redis reply, a failed fsync): the head is read again first. */
  headUncertain = false;

  constructor(
    readonly tenant: string,
    readonly conv: string,
    readonly merchant: string,
    readonly customer: string,
    durableSeq: number,
    loaded: LoadedReads,
  ) {
    this.durableSeq = durableSeq;
    this.reads = loaded.reads;
    this.storedReads = loaded.stored;
    this.uncoveredSends = loaded.uncovered;
  }

  get busy(): boolean {
    return this.writing || this.queue.length > 0;
  }
}

const DEFAULT_RECENT_MESSAGES = 64;
const DEFAULT_MAX_CACHED_CONVERSATIONS = 100_000;
const DEFAULT_MAX_QUEUED_APPENDS = 1_000;
/** Appends of one conversation written in one store batch at most. */
const MAX_APPENDS_PER_BATCH = 256;

/**
 * The messaging heart of a cell: assigns each conversation's gap-free sequence, makes messages
 * durable before anyone hears of them, deduplicates resends by client message id, and keeps
 * read cursors.
 *
 * Sequence numbers are assigned only when a batch is handed to the store, from the last durable
 * seq, and one conversation has at most one write under way; so a failed write never leaves a
 * gap (the next batch reuses the numbers) and messages become durable in seq order.
 */
export class ConversationLog {
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly options: Required<Omit<ConversationLogOptions, 'onStoreWrite'>> & Pick<ConversationLogOptions, 'onStoreWrite'>;
  /** Loaded conversations in least-recently-used order (Map keeps insertion order). */
  private readonly cache = new Map<string, ConversationState>();
  private readonly loading = new Map<string, Promise<ConversationState>>();
  private readonly idleWaiters: Array<{ concerns: (cacheKey: string) => boolean; resolve: () => void }> = [];
  /** Conversations with queued appends and no write under way, waiting for the next batch. */
  private readonly ready = new Set<ConversationState>();
  private batchUnderWay = false;

  constructor(options: ConversationLogOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.options = {
      recentMessages: DEFAULT_RECENT_MESSAGES,
      maxCachedConversations: DEFAULT_MAX_CACHED_CONVERSATIONS,
      maxQueuedAppends: DEFAULT_MAX_QUEUED_APPENDS,
      ...options,
    };
  }

  /** The conversation's head, loaded from the store on first use. */
  async conversation(tenant: string, conv: string): Promise<ConversationState> {
    const cacheKey = `${tenant}/${conv}`;
    const cached = this.touch(cacheKey);
    if (cached !== undefined) return cached;
    let load = this.loading.get(cacheKey);
    if (load === undefined) {
      load = this.load(tenant, conv).finally(() => this.loading.delete(cacheKey));
      this.loading.set(cacheKey, load);
    }
    return load;
  }

  /** The cached head under `cacheKey`, moved to the most recently used end; undefined when not in memory. */
  private touch(cacheKey: string): ConversationState | undefined {
    const cached = this.cache.get(cacheKey);
    if (cached === undefined) return undefined;
    this.cache.delete(cacheKey);
    this.cache.set(cacheKey, cached);
    return cached;
  }

  /** The head if it is in memory; used on hot paths that must not wait. */
  cached(tenant: string, conv: string): ConversationState | undefined {
    return this.cache.get(`${tenant}/${conv}`);
  }

  /**
   * Appends a message and resolves once it is durable. A resend with a cmid this sender used
   * before in this conversation resolves with the original message and writes nothing; when its
   * body differs from the original's, it rejects with IDEMPOTENCY_CONFLICT (and writes nothing).
   */
  append(request: AppendRequest): Promise<AppendResult> {
    // A cached head is appended to at once: awaiting conversation() would cost a turn of promises per message.
    const cached = this.touch(`${request.tenant}/${request.conv}`);
    if (cached === undefined) return this.conversation(request.tenant, request.conv).then((state) => this.appendTo(state, request));
    return this.appendTo(cached, request);
  }

  private appendTo(state: ConversationState, request: AppendRequest): Promise<AppendResult> {
    const party = conversationParty(request.conv, request.role, request.from);
    if (state.refusedSenders.refuses(`${party}/${request.device}`, request.cmid, this.clock.now())) return Promise.reject(refusedBehind());
    const dedupKey = `${party}/${request.cmid}`;
    const inFlight = state.inFlight.get(dedupKey);
    if (inFlight !== undefined) {
      if (inFlight.body !== request.body) return Promise.reject(idempotencyConflict(request.cmid));
      return inFlight.promise.then((result) => ({ ...result, duplicate: true }));
    }
    return this.appendNew(state, request, dedupKey);
  }

  /**
   * Resolves a queued append, and first forgets it as in flight (not in a reaction to its promise:
   * two closures and a promise per message). Idle waiters are told at the batch's end (finishBatch).
   */
  private resolveAppend(state: ConversationState, pending: PendingAppend, result: AppendResult): void {
    state.inFlight.delete(pending.dedupKey);
    pending.resolve(result);
  }

  /** Refuses a queued append, as resolveAppend. */
  private rejectAppend(state: ConversationState, pending: PendingAppend, error: unknown): void {
    state.inFlight.delete(pending.dedupKey);
    pending.reject(error);
  }

  /** Messages with seq in [fromSeq, toSeq), ascending, at most `limit`. */
  async messages(tenant: string, conv: string, fromSeq: number, toSeq: number, limit: number): Promise<ChatMessage[]> {
    if (fromSeq >= toSeq || limit <= 0) return [];
    const state = this.cached(tenant, conv);
    const oldestRecent = state?.recent[0];
    if (state !== undefined && oldestRecent !== undefined && fromSeq >= oldestRecent.seq) {
      const start = fromSeq - oldestRecent.seq;
      const end = Math.min(start + limit, toSeq - oldestRecent.seq, state.recent.length);
      if (end - start === Math.min(limit, toSeq - fromSeq)) return state.recent.slice(start, end);
    }
    const entries = await this.store.range({ ...keys.messageRange(tenant, conv, fromSeq, toSeq), limit });
    return entries.map(([, value]) => JSON.parse(value) as ChatMessage);
  }

  /** The newest messages before `beforeSeq`, ascending, at most `limit`; for history paging. */
  async messagesBefore(tenant: string, conv: string, beforeSeq: number, limit: number): Promise<ChatMessage[]> {
    const fromSeq = Math.max(1, beforeSeq - limit);
    return this.messages(tenant, conv, fromSeq, beforeSeq, limit);
  }

  /**
   * Moves the read cursor of `party` (its party id, principal.ts) forward to `seq` (never
   * backwards) and makes it durable. Returns false when the cursor was already there or beyond.
   */
  async markRead(tenant: string, conv: string, party: string, seq: number): Promise<boolean> {
    const state = await this.conversation(tenant, conv);
    if (seq > state.durableSeq) {
      throw new CellError(ErrorCode.SeqOutOfRange, `seq ${seq} is beyond the conversation's last message ${state.durableSeq}`);
    }
    // An earlier read of theirs still being written: a lower value written now could land after
    // it and move the stored cursor back.
    for (let earlier = state.readWrites.get(party); earlier !== undefined; earlier = state.readWrites.get(party)) {
      await earlier.catch(() => undefined);
    }
    if (seq <= (state.reads.get(party) ?? 0)) return false;
    // The cursor in memory moves only once the write is durable: after a failed write it stays
    // where it was, so a retry writes again (and its caller sends the receipt).
    const write = this.timedWrite([{ type: 'put', key: keys.readCursor(tenant, conv, party), value: String(seq) }]);
    state.readWrites.set(party, write);
    try {
      await write;
    } finally {
      if (state.readWrites.get(party) === write) state.readWrites.delete(party);
    }
    if (seq > (state.reads.get(party) ?? 0)) {
      // durableSeq only grows, so the check on entry still holds after the write.
      invariant(seq <= state.durableSeq, () => `read cursor of ${party} in ${conv} moves to ${seq}, beyond the last message ${state.durableSeq}`);
      state.reads.set(party, seq);
    }
    coverStoredReads(state, new Map([[party, seq]]));
    return true;
  }

  /**
   * Writes the read cursors that the conversation's newest messages imply (read-cursors.ts), so
   * that the store's cursors alone hold them: the retention sweeper calls this before it deletes
   * any of those messages.
   */
  async settleReads(tenant: string, conv: string): Promise<void> {
    const state = await this.conversation(tenant, conv);
    // A read being written moves a cursor beyond what memory holds: a value written now could land after it and move it back.
    while (state.readWrites.size > 0) await Promise.allSettled([...state.readWrites.values()]);
    const cursors = new Map([...state.uncoveredSends.keys()].map((party) => [party, state.reads.get(party)!]));
    if (cursors.size === 0) return;
    await this.timedWrite([...cursors].map(([party, seq]) => ({ type: 'put', key: keys.readCursor(tenant, conv, party), value: String(seq) })));
    coverStoredReads(state, cursors);
  }

  /** The message the party `senderParty` sent with `cmid`, if this cell stores it (its seq is known). */
  async storedMessage(tenant: string, conv: string, senderParty: string, cmid: string): Promise<ChatMessage | undefined> {
    const stored = await this.store.get(keys.clientMessageId(tenant, conv, senderParty, cmid));
    if (stored === undefined) return undefined;
    const seq = Number(stored);
    const [message] = await this.messages(tenant, conv, seq, seq + 1, 1);
    return message;
  }

  /**
   * Writes messages of a conversation that another cell hosts (this cell's mirror of it, see
   * cross-cell.ts) under the same keys as its own conversations, so delivery, sync, history and
   * the inbox read a mirror unchanged. The home cell assigned the seqs; `messages` must continue
   * the mirror without a gap (ascending, the first at most `durableSeq + 1`); those at or below
   * `durableSeq` are skipped, so applying the same messages again writes nothing. `reads` (read
   * cursors at the home cell, by party id) move this copy's cursors forward, never beyond its last message.
   * The caller serialises mirror writes per conversation, and never appends to a mirror: the
   * home cell sequences it. `afterDeleted`: the home cell deleted the messages between the
   * mirror's head and the first of `messages` (retention), so the mirror goes on from there.
   * Resolves, once durable, with the messages newly written.
   */
  async mirror(tenant: string, conv: string, messages: readonly ChatMessage[], reads: Iterable<readonly [string, number]>, afterDeleted = false): Promise<ChatMessage[]> {
    const state = await this.conversation(tenant, conv);
    invariant(!state.busy, () => `mirror write to ${conv} while another write is under way`);
    const fresh = messages.filter((message) => message.seq > state.durableSeq);
    const skipped = afterDeleted && fresh[0] !== undefined ? fresh[0].seq - 1 - state.durableSeq : 0;
    fresh.forEach((message, index) => {
      invariant(
        message.conv === conv && message.seq === state.durableSeq + skipped + 1 + index,
        () => `mirror of ${conv} would get a gap: expected seq ${state.durableSeq + skipped + 1 + index}, got ${message.conv}#${message.seq}`,
      );
    });
    const lastSeq = state.durableSeq + skipped + fresh.length;
    // Sending a message means its sender has read everything up to it, as in the home cell.
    const readsAfter = new Map<string, number>();
    for (const message of fresh) if (message.role !== 'system') readsAfter.set(conversationParty(conv, message.role, message.from), message.seq);
    for (const [party, seq] of reads) {
      if (seq <= lastSeq && seq > (readsAfter.get(party) ?? 0)) readsAfter.set(party, seq);
    }
    for (const [party, seq] of readsAfter) if (seq <= (state.reads.get(party) ?? 0)) readsAfter.delete(party);
    if (fresh.length === 0 && readsAfter.size === 0) return [];
    const ops: StoreOp[] = [];
    for (const message of fresh) {
      ops.push({ type: 'put', key: keys.message(tenant, conv, message.seq), value: JSON.stringify(message) });
      ops.push({ type: 'put', key: keys.clientMessageId(tenant, conv, conversationParty(conv, message.role, message.from), message.cmid), value: String(message.seq) });
    }
    // A mirror writes its cursors as the home cell reports them, and those of earlier sends its messages push out of the window.
    const cursorsWritten = new Map([...windowCheckpoints(state, lastSeq, readsAfter), ...readsAfter]);
    for (const [party, seq] of cursorsWritten) ops.push({ type: 'put', key: keys.readCursor(tenant, conv, party), value: String(seq) });
    // Only the customer's index: the merchant's agents work in its home cell, never here.
    if (state.durableSeq === 0 && fresh.length > 0) ops.push({ type: 'put', key: keys.customerConversation(tenant, state.customer, conv), value: '' });
    state.writing = true;
    try {
      await this.timedWrite(ops);
    } finally {
      state.writing = false;
    }
    state.durableSeq = lastSeq;
    // The recent messages must follow each other without a gap (messages()).
    if (skipped > 0) state.recent.length = 0;
    // A receipt may have moved a cursor further while this was written.
    for (const [party, seq] of readsAfter) if (seq > (state.reads.get(party) ?? 0)) state.reads.set(party, seq);
    coverStoredReads(state, cursorsWritten);
    state.recent.push(...fresh);
    if (state.recent.length > this.options.recentMessages) state.recent.splice(0, state.recent.length - this.options.recentMessages);
    this.evictIdle();
    this.notifyIfIdle();
    return fresh;
  }

  /** Resolves once no append is queued or being written (for graceful shutdown). */
  async whenIdle(): Promise<void> {
    await this.whenIdleWhere(() => true);
  }

  /**
   * Resolves once no append to `tenant`'s conversations of `merchant` is queued or being written
   * (a merchant's move waits for this after fencing new ones).
   */
  async whenMerchantIdle(tenant: string, merchant: string): Promise<void> {
    const prefix = `${tenant}/${merchant}:`;
    await this.whenIdleWhere((cacheKey) => cacheKey.startsWith(prefix));
  }

  /** Forgets the cached heads of `tenant`'s conversations of `merchant`: their store was rewritten (a merchant moved in). */
  forgetMerchant(tenant: string, merchant: string): void {
    const prefix = `${tenant}/${merchant}:`;
    for (const [cacheKey, state] of this.cache) {
      if (cacheKey.startsWith(prefix) && !state.busy && state.inFlight.size === 0) this.cache.delete(cacheKey);
    }
  }

  private async whenIdleWhere(concerns: (cacheKey: string) => boolean): Promise<void> {
    if (!this.anyBusy(concerns)) return;
    await new Promise<void>((resolve) => this.idleWaiters.push({ concerns, resolve }));
  }

  private anyBusy(concerns: (cacheKey: string) => boolean): boolean {
    for (const [cacheKey, state] of this.cache) if (concerns(cacheKey) && (state.busy || state.inFlight.size > 0)) return true;
    for (const cacheKey of this.loading.keys()) if (concerns(cacheKey)) return true;
    return false;
  }

  private notifyIfIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const waiting = this.idleWaiters.splice(0);
    for (const waiter of waiting) {
      if (this.anyBusy(waiter.concerns)) this.idleWaiters.push(waiter);
      else waiter.resolve();
    }
  }

  /**
   * Queues the append synchronously, so a conversation's messages are sequenced in the order
   * they arrived (a sender's pipelined messages keep their order); the idempotency lookup
   * happens in the writer, for the whole batch at once.
   */
  private appendNew(state: ConversationState, request: AppendRequest, dedupKey: string): Promise<AppendResult> {
    if (state.queue.length >= this.options.maxQueuedAppends) {
      return Promise.reject(new CellError(ErrorCode.StoreUnavailable, 'too many messages are waiting for the store in this conversation; retry'));
    }
    const promise = new Promise<AppendResult>((resolve, reject) => {
      state.queue.push({ request, dedupKey, resolve, reject });
    });
    state.inFlight.set(dedupKey, { promise, body: request.body });
    if (!state.writing) this.markReady(state);
    return promise;
  }

  private markReady(state: ConversationState): void {
    this.ready.add(state);
    if (!this.batchUnderWay) void this.writeBatches();
  }

  /**
   * Writes the queued appends of every ready conversation as one store write, then repeats
   * with what queued meanwhile. One write (one chain of promises) per batch instead of one per
   * message keeps the work and the garbage per message small; the store's group commit would
   * have merged the writes into one flush anyway.
   */
  private async writeBatches(): Promise<void> {
    this.batchUnderWay = true;
    // One microtask, so that appends from the same synchronous stretch share the first batch.
    await undefined;
    while (this.ready.size > 0) {
      const states = [...this.ready];
      this.ready.clear();
      const queuedByState = states.map((state) => {
        state.writing = true;
        return state.queue.splice(0, MAX_APPENDS_PER_BATCH);
      });
      let batches: PendingAppend[][];
      try {
        await this.settleUncertainHeads(states);
        batches = await this.answerStoredResends(states, queuedByState);
      } catch (error) {
        const failure = new CellError(ErrorCode.StoreUnavailable, 'the store could not be read; retry', { cause: String(error) });
        this.failBatch(states, queuedByState, failure);
        continue;
      }
      const written = states.map((state, index) => this.sequence(state, batches[index]!));
      const ops = written.flatMap((batch) => batch.ops);
      try {
        if (ops.length > 0) await this.timedWrite(ops);
      } catch (error) {
        const failure = new CellError(ErrorCode.StoreUnavailable, 'the store could not make the message durable; retry', {
          cause: String(error),
        });
        states.forEach((state, index) => {
          if (written[index]!.messages.length > 0) state.headUncertain = true;
        });
        this.failBatch(states, batches, failure);
        continue;
      }
      states.forEach((state, index) => this.applyDurable(state, batches[index]!, written[index]!));
      this.finishBatch(states);
    }
    this.batchUnderWay = false;
  }

  /** Assigns the next seqs of `state` to `batch` (nothing is applied until they are durable). */
  private sequence(state: ConversationState, batch: PendingAppend[]): SequencedBatch {
    const firstSeq = state.durableSeq + 1;
    const ts = this.clock.now();
    const messages: ChatMessage[] = [];
    const storedJson: string[] = [];
    const ops: StoreOp[] = [];
    const readsAfter = new Map<string, number>();
    for (let index = 0; index < batch.length; index++) {
      const { request } = batch[index]!;
      const message: ChatMessage = {
        conv: state.conv,
        seq: firstSeq + index,
        from: request.from,
        role: request.role,
        device: request.device,
        cmid: request.cmid,
        body: request.body,
        ts,
      };
      if (request.attachments !== undefined) message.attachments = [...request.attachments];
      if (request.event !== undefined) message.event = request.event;
      messages.push(message);
      const json = JSON.stringify(message);
      storedJson.push(json);
      const senderParty = conversationParty(state.conv, message.role, message.from);
      ops.push({ type: 'put', key: keys.message(state.tenant, state.conv, message.seq), value: json });
      ops.push({ type: 'put', key: keys.clientMessageId(state.tenant, state.conv, senderParty, message.cmid), value: String(message.seq) });
      if (request.alsoWrite !== undefined) ops.push(...request.alsoWrite);
      // Sending a message means its sender has read everything up to it (the desk reads nothing);
      // the message itself says so while it is among the newest (read-cursors.ts).
      if (message.role !== 'system') readsAfter.set(senderParty, message.seq);
    }
    const cursorsWritten = windowCheckpoints(state, firstSeq + batch.length - 1, readsAfter);
    for (const [party, seq] of cursorsWritten) ops.push({ type: 'put', key: keys.readCursor(state.tenant, state.conv, party), value: String(seq) });
    const firstOfConversation = firstSeq === 1 && messages.length > 0;
    if (firstOfConversation) {
      ops.push({ type: 'put', key: keys.customerConversation(state.tenant, state.customer, state.conv), value: '' });
      ops.push({ type: 'put', key: keys.merchantConversation(state.tenant, state.merchant, state.conv), value: '' });
    }
    return { messages, storedJson, ops, readsAfter, cursorsWritten, firstOfConversation };
  }

  /** The batch is durable: move the head, then tell the cell and the senders, in seq order. */
  private applyDurable(state: ConversationState, batch: PendingAppend[], written: SequencedBatch): void {
    this.takeDurable(state, written, (index) => batch[index]!.request.context);
    written.messages.forEach((message, index) => this.resolveAppend(state, batch[index]!, { message, duplicate: false }));
  }

  /** Moves the head over durable `written` messages and tells the cell of each, in seq order. */
  private takeDurable(state: ConversationState, written: SequencedBatch, contextOf: (index: number) => object | undefined): void {
    const { messages, storedJson, readsAfter, cursorsWritten, firstOfConversation } = written;
    if (messages.length === 0) return;
    // One write per conversation at a time, so the head has not moved since `sequence`: the
    // batch continues it, and a seq is never given twice nor skipped.
    invariant(
      messages[0]!.seq === state.durableSeq + 1,
      () => `batch of ${state.conv} starts at seq ${messages[0]!.seq}, but the last durable seq is ${state.durableSeq}`,
    );
    state.durableSeq = messages.at(-1)!.seq;
    for (const [party, seq] of readsAfter) {
      if (seq > (state.reads.get(party) ?? 0)) state.reads.set(party, seq);
      if (seq > (state.storedReads.get(party) ?? 0)) state.uncoveredSends.set(party, seq);
    }
    coverStoredReads(state, cursorsWritten);
    state.recent.push(...messages);
    if (state.recent.length > this.options.recentMessages) state.recent.splice(0, state.recent.length - this.options.recentMessages);
    messages.forEach((message, index) => this.options.onDurable(state.tenant, message, firstOfConversation && index === 0, contextOf(index), storedJson[index]));
  }

  /**
   * Reads again the heads of the conversations whose last write failed: messages found beyond
   * the durable seq reached the store after all, so they are taken as durable (and fanned out,
   * their senders having been refused: a resend of theirs is answered from the store) and their
   * seqs are never given again. A seq given twice would overwrite a stored message and leave its
   * cmid pointing at another body.
   */
  private async settleUncertainHeads(states: readonly ConversationState[]): Promise<void> {
    for (const state of states) {
      if (!state.headUncertain) continue;
      const from = keys.messageRange(state.tenant, state.conv, state.durableSeq + 1, state.durableSeq + 1).gte;
      // One failed batch holds at most MAX_APPENDS_PER_BATCH messages; one more shows a break of that rule.
      const found = await this.store.range({ gte: from, lt: keys.allMessages(state.tenant, state.conv).lt, limit: MAX_APPENDS_PER_BATCH + 1 });
      state.headUncertain = false;
      const messages = found.map(([, value]) => JSON.parse(value) as ChatMessage);
      messages.forEach((message, index) => {
        invariant(message.seq === state.durableSeq + 1 + index, () => `stored messages of ${state.conv} after seq ${state.durableSeq} are not gap-free: found #${message.seq} at ${index}`);
      });
      if (messages.length === 0) continue;
      const readsAfter = new Map<string, number>();
      for (const message of messages) if (message.role !== 'system') readsAfter.set(conversationParty(state.conv, message.role, message.from), message.seq);
      // Whether the failed write's cursors landed is not known: they are written again when due.
      this.takeDurable(state, { messages, storedJson: [], ops: [], readsAfter, cursorsWritten: new Map(), firstOfConversation: messages[0]!.seq === 1 }, () => undefined);
    }
  }

  /**
   * A batch could not be written: its appends are refused, and so are the appends their senders
   * queued behind them meanwhile (and sent later: RefusedSenders), which would otherwise be stored
   * before the refused ones come back, out of the order the sender wrote them.
   */
  private failBatch(states: readonly ConversationState[], batches: readonly PendingAppend[][], failure: CellError): void {
    states.forEach((state, index) => {
      const batch = batches[index]!;
      if (batch.length === 0) return;
      const senders = new Set(batch.map(({ request }) => conversationParty(request.conv, request.role, request.from)));
      for (const pending of batch) this.refuseAppend(state, pending, failure);
      const behind = state.queue.filter(({ request }) => senders.has(conversationParty(request.conv, request.role, request.from)));
      state.queue.splice(0, state.queue.length, ...state.queue.filter((pending) => !behind.includes(pending)));
      for (const pending of behind) this.refuseAppend(state, pending, failure);
    });
    this.finishBatch(states);
  }

  /** Refuses an append the store failed and holds its device's later sends until it comes again (RefusedSenders); not the desk's, which never comes again. */
  private refuseAppend(state: ConversationState, pending: PendingAppend, failure: CellError): void {
    const { conv, role, from, device, cmid } = pending.request;
    if (role !== 'system') state.refusedSenders.refuse(`${conversationParty(conv, role, from)}/${device}`, cmid, this.clock.now());
    this.rejectAppend(state, pending, failure);
  }

  /** The write of `states` ended: those with more queued are ready again. */
  private finishBatch(states: readonly ConversationState[]): void {
    for (const state of states) {
      state.writing = false;
      if (state.queue.length > 0) this.ready.add(state);
    }
    this.evictIdle();
    this.notifyIfIdle();
  }

  /**
   * Resolves the appends whose (sender's party, cmid) is already stored with the stored message
   * (or rejects them when their body differs), and returns the others of each conversation, in order.
   */
  private async answerStoredResends(states: readonly ConversationState[], queuedByState: readonly PendingAppend[][]): Promise<PendingAppend[][]> {
    // Index loops: this runs for every message, and iterators cost an object per step.
    const lookupKeys: string[] = [];
    for (let index = 0; index < queuedByState.length; index++) {
      const queued = queuedByState[index]!;
      for (let item = 0; item < queued.length; item++) {
        const { request } = queued[item]!;
        lookupKeys.push(keys.clientMessageId(request.tenant, request.conv, conversationParty(request.conv, request.role, request.from), request.cmid));
      }
    }
    // Local stores answer at once (memtable, bloom filters); a thread-pool round trip per send
    // would cost more than the lookup itself.
    const storedSeqs = this.store.getManySync?.(lookupKeys) ?? (await this.store.getMany(lookupKeys));
    let lookup = 0;
    const fresh: PendingAppend[][] = [];
    for (let index = 0; index < queuedByState.length; index++) {
      const queued = queuedByState[index]!;
      const state = states[index]!;
      const batch: PendingAppend[] = [];
      for (let item = 0; item < queued.length; item++) {
        const pending = queued[item]!;
        const storedSeq = storedSeqs[lookup++];
        if (storedSeq === undefined) {
          batch.push(pending);
          continue;
        }
        const seq = Number(storedSeq);
        // The stored message is read anyway to answer the resend, so comparing its body costs nothing more.
        const [message] = await this.messages(state.tenant, state.conv, seq, seq + 1, 1);
        if (message === undefined) throw new Error(`idempotency record points at missing message ${state.conv}#${seq}`);
        if (message.body === pending.request.body) this.resolveAppend(state, pending, { message, duplicate: true });
        else this.rejectAppend(state, pending, idempotencyConflict(pending.request.cmid));
      }
      fresh.push(batch);
    }
    return fresh;
  }

  private async timedWrite(ops: StoreOp[]): Promise<void> {
    const startMs = this.clock.now();
    await this.store.write(ops);
    this.options.onStoreWrite?.(this.clock.now() - startMs);
  }

  private async load(tenant: string, conv: string): Promise<ConversationState> {
    const parsed = parseConversationId(conv);
    if (parsed === undefined) throw new CellError(ErrorCode.BadFrame, `'${conv}' is not a conversation id`);
    const [newest, readEntries] = await Promise.all([
      this.store.range({ ...keys.allMessages(tenant, conv), reverse: true, limit: Math.max(this.options.recentMessages, SENT_READ_WINDOW) }),
      this.store.range({ ...keys.readCursors(tenant, conv), limit: 10_000 }),
    ]);
    const loaded = newest.reverse().map(([, value]) => JSON.parse(value) as ChatMessage);
    const recent = loaded.slice(Math.max(0, loaded.length - this.options.recentMessages));
    const durableSeq = recent.at(-1)?.seq ?? 0;
    // The recent messages are served by index arithmetic (messages()): they must be seqs
    // first..durableSeq without a gap (keys are unique and ascending, so the ends tell).
    invariant(
      recent.length === 0 || (Number.isSafeInteger(durableSeq) && durableSeq - recent[0]!.seq === recent.length - 1),
      () => `stored messages of ${conv} are not gap-free: ${recent.length} from seq ${recent[0]?.seq} to ${durableSeq}`,
    );
    const reads = readsFrom(conv, readEntries, loaded);
    // Read cursors are written with or after the messages they cover, never beyond them.
    for (const [party, seq] of reads.stored) {
      invariant(
        Number.isSafeInteger(seq) && seq >= 0 && seq <= durableSeq,
        () => `stored read cursor of ${party} in ${conv} is ${seq}, outside 0..${durableSeq}`,
      );
    }
    const state = new ConversationState(tenant, conv, parsed.merchant, parsed.customer, durableSeq, reads);
    state.recent.push(...recent);
    this.cache.set(`${tenant}/${conv}`, state);
    this.evictIdle();
    return state;
  }

  private evictIdle(): void {
    if (this.cache.size <= this.options.maxCachedConversations) return;
    for (const [cacheKey, state] of this.cache) {
      if (this.cache.size <= this.options.maxCachedConversations) break;
      // A head with a read cursor write under way stays: a reload now would miss that cursor.
      if (!state.busy && state.inFlight.size === 0 && state.readWrites.size === 0) this.cache.delete(cacheKey);
    }
  }
}
