import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import type { Logger } from '../../platform/logger.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ChatMessage } from '../protocol/frames.js';
import type { Store } from '../../platform/store/store.js';
import { clusterErrorCode, type ClusterForwardedEntry, type ClusterPort } from './cluster-port.js';
import { idempotencyConflict, type ConversationLog } from './conversation-log.js';
import { KeyedSerializer, SerializerFullError } from './keyed-serializer.js';
import { ConversationMirror } from './conversation-mirror.js';
import {
  HISTORY_MAX_READS,
  HISTORY_MAX_REQUEST_BYTES,
  HISTORY_PROTOCOL,
  HistoryRequest,
  crossCellEntry,
  decodeJson,
  encodeJson,
  parseCrossCellEntry,
  readerParty,
  type CrossCellEntry,
  type CrossCellEntryOf,
  type HistoryPage,
  type HistoryResponse,
} from './cross-cell-wire.js';
import { MAX_CONVERSATIONS_PER_DEVICE } from './delivery.js';
import { keys, lastField } from './keys.js';
import { merchantConversations } from './merchant-conversations.js';
import { conversationParty, parsePartyId, partyId } from './principal.js';
import { RelayedSends, relayedSendKey, type RelayedSend } from './relayed-sends.js';

/** The device (and request) a relayed send answers once its seq is known. */
type RelaySender = { connection: RelayedSend['connection']; requestId: string | undefined };
import { RemoteFanOut, type RemoteFanOutStats } from './remote-fan-out.js';

/** Settings of cross-cell conversations; defaults in CROSS_CELL_DEFAULTS, quoted by docs/architecture.md. */
export interface CrossCellSettings {
  /** Messages asked per history page when a mirror backfills (at most 200). */
  historyPageMessages: number;
  /** Timeout of one history request to a home cell. */
  historyTimeoutMs: number;
  /** Most bytes of messages a history page this cell serves carries (at least one message goes). */
  historyPageBytes: number;
  /** How long an HTTP send to another cell's conversation waits for its seq before FORWARD_PENDING. */
  relayWaitMs: number;
  /** Relayed sends whose seq is awaited, over all devices; the oldest is forgotten beyond. */
  maxRelayedSends: number;
  /** Mirror operations, and separately fan-outs to other cells, waiting or running at once. */
  maxQueuedTasks: number;
  /** Mirrored conversations refreshed from their home cells when a customer's first device connects. */
  maxRefreshConversations: number;
  /** Of those, refreshed at once. */
  refreshParallelism: number;
  /** Users for whom a `gone` was sent and not yet taken back by a connect (bounds the memory of it). */
  maxGoneHints: number;
  /** How long a home cell keeps sending a user's entries to a cell without confirming it (RemoteFanOut). */
  followTtlMs: number;
  /** Users whose following cells a home cell remembers. */
  maxFollowedUsers: number;
  /**
   * How often the mirrors of customers with a device here are caught up with their home cells
   * (and the home cells told to follow this cell again). The repair for whatever the home cells'
   * pushes missed: a home that restarted and forgot its followers, a locate whose answer was
   * lost, a merchant moved to a cell that never followed this one, a refresh that failed.
   */
  mirrorRepairIntervalMs: number;
}

export const CROSS_CELL_DEFAULTS: CrossCellSettings = {
  historyPageMessages: 100,
  historyTimeoutMs: 2_000,
  historyPageBytes: 1024 * 1024,
  relayWaitMs: 5_000,
  maxRelayedSends: 10_000,
  maxQueuedTasks: 10_000,
  maxRefreshConversations: 256,
  refreshParallelism: 8,
  maxGoneHints: 10_000,
  followTtlMs: 10 * 60_000,
  maxFollowedUsers: 100_000,
  mirrorRepairIntervalMs: 30_000,
};

/** What the relay needs of the cell's core; the core implements it. */
export interface CrossCellHost {
  isDraining(): boolean;
  /** Whether this cell serves the tenant and hosts the merchant itself (its configuration). */
  hosts(tenant: string, merchant: string): boolean;
  /** Resolves once no move of the merchant out of this cell is under way (writes wait for it). */
  whenSettled(tenant: string, merchant: string): Promise<void>;
  /** Whether the customer (never an agent of the same id) has a device connected here. */
  customerHasDevices(tenant: string, customer: string): boolean;
  /** Pushes a durable message to this cell's devices of its conversation; `sender`'s device gets `sent`. */
  deliver(tenant: string, message: ChatMessage, sender: RelayedSend | undefined): void;
  /** Pushes a receipt (`party`, a party id of the conversation, read up to `seq`) to this cell's devices of the conversation. */
  deliverReceipt(tenant: string, conv: string, party: string, seq: number): void;
  /** Moves `party`'s read cursor of a conversation this cell hosts, with its receipts everywhere. */
  markRead(tenant: string, conv: string, party: string, seq: number): Promise<void>;
  /** Tells the sender of a relayed send (or, when it is gone, the customer's devices here) that it was refused. */
  refuseRelayed(sender: RelayedSend | undefined, tenant: string, customer: string, conv: string, cmid: string, error: CellError): void;
}

export interface CrossCellComponents {
  readonly cluster: ClusterPort;
  readonly log: ConversationLog;
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly host: CrossCellHost;
  readonly settings?: Partial<CrossCellSettings>;
}

export interface CrossCellStats extends RemoteFanOutStats {
  /** Sends this (access) cell forwarded to home cells. */
  relayedSends: number;
  /** Messages written into mirrors (forwarded or backfilled). */
  mirroredMessages: number;
  /** History pages this (home) cell served. */
  historyPagesServed: number;
  /** Forwarded entries dropped: malformed, or for the wrong cell. */
  entriesDropped: number;
  /** `gone` hints sent to home cells. */
  goneHints: number;
  /** Mirror refreshes (or backfills) that failed; the mirror stays as it was. */
  refreshFailures: number;
  /** Messages the repair pass found missing from mirrors (pushes that never came). */
  repairedMessages: number;
}

/**
 * Cross-cell conversations (docs/architecture.md): a customer's device connected to an access
 * cell A talks in a conversation whose merchant lives in home cell B.
 *
 * Access side (A): sends and reads are checked as usual, then enqueued durably for B and
 * answered `queued` (reads: `ok`). Everything B forwards back (messages, receipts) is written
 * into A's mirror of the conversation, under B's seqs and the same keys as a local
 * conversation, and then delivered to A's devices; the device that sent a message gets `sent`
 * (RelayedSends). A mirror is a gap-free prefix of the conversation (ConversationMirror); a
 * customer's first device connecting refreshes the user's mirrors from their home cells.
 *
 * Home side (B): forwarded sends are appended with the normal send path (idempotent by sender
 * and cmid); every durable message and receipt of a hosted conversation is sent on to the cells
 * that hold the customer's devices (RemoteFanOut); B serves history pages for mirrors.
 *
 * Forwarded entries are applied idempotently (sends by cmid, mirrors by seq, read cursors by
 * maximum), which makes their effect exactly-once under the outbox's at-least-once resends.
 * The mirror is written by this handler itself rather than returned to the inbox as StoreOps:
 * delivering to devices must follow the mirror's durable write, and the inbox has no hook
 * after its own write.
 *
 * When a forwarded entry finds none of the customer's devices here, A keeps the mirror and
 * enqueues a `gone` for B (once, until the user connects again), on which B forgets A as a
 * location of the user and stops following it (RemoteFanOut): its later messages stay at home
 * until the user's next device here refreshes the mirror and asks B to follow A again.
 */
export class CrossCellRelay {
  private readonly settings: CrossCellSettings;
  private readonly mirror: ConversationMirror;
  private readonly fanOut: RemoteFanOut;
  private readonly sends: RelayedSends;
  /** One relayed send at a time per conversation, so a device's pipelined sends leave in order. */
  private readonly relaying: KeyedSerializer;
  /** Sends being appended here for another cell, by relayedSendKey: that cell gets the message back. */
  private readonly origins = new Map<string, string>();
  /** The fan-out (to the origin, among others) of each such send once durable. */
  private readonly originTasks = new Map<string, Promise<void>>();
  /** Customers whose mirrors are known fresh: refreshed while a device of theirs was connected here since. */
  private readonly freshUsers = new Set<string>();
  /** Customers with a device here and mirrors: what the repair pass catches up, as [tenant, user] by `tenant/user`. */
  private readonly mirroredUsers = new Map<string, readonly [string, string]>();
  private repairTimer: TimerHandle | undefined;
  /** `tenant/user` to the cells a `gone` was sent to; insertion-ordered for eviction. */
  private readonly goneSent = new Map<string, Set<string>>();
  private readonly counts = { relayedSends: 0, mirroredMessages: 0, historyPagesServed: 0, entriesDropped: 0, goneHints: 0, refreshFailures: 0, repairedMessages: 0 };

  constructor(private readonly components: CrossCellComponents) {
    this.settings = { ...CROSS_CELL_DEFAULTS, ...components.settings };
    const { cluster, log, clock, logger } = components;
    this.mirror = new ConversationMirror(log, cluster, this.settings);
    this.fanOut = new RemoteFanOut(cluster, clock, logger, this.settings);
    this.relaying = new KeyedSerializer(this.settings.maxQueuedTasks);
    this.sends = new RelayedSends(
      clock,
      this.settings.maxRelayedSends,
      () =>
        new CellError(
          ErrorCode.ForwardPending,
          "the message is durable in this cell's outbox and waits for its conversation's home cell; resend with the same cmid to learn its seq",
          { retryAfterMs: 1_000 },
        ),
    );
    cluster.onForward((source, entries) => this.onForward(source, entries));
    cluster.onCellGone((cellId) => this.fanOut.forgetCell(cellId));
    cluster.handle(HISTORY_PROTOCOL, (from, data) => this.serveHistory(from, data));
  }

  stats(): Readonly<CrossCellStats> {
    return { ...this.counts, ...this.fanOut.stats() };
  }

  /** The cell hosting the merchant when it is another cell of the cluster; undefined otherwise. */
  homeCellOf(tenant: string, merchant: string): string | undefined {
    const home = this.components.cluster.homeCellOf(tenant, merchant);
    return home === this.components.cluster.selfCellId ? undefined : home;
  }

  // -- access side ------------------------------------------------------------------------------

  /**
   * Forwards a send to the conversation's home cell. Resolves with the stored message when its
   * seq is known here already (a resend), or undefined once the send is durable in the outbox:
   * `sender` then gets `sent` when the message comes back.
   */
  async relaySend(identity: Identity, home: string, conv: string, cmid: string, body: string, sender: RelaySender): Promise<ChatMessage | undefined> {
    const { tenant } = identity;
    try {
      return await this.relaying.run(`${tenant}/${conv}`, () => this.relaySendInOrder(identity, home, conv, cmid, body, sender));
    } catch (error) {
      if (error instanceof SerializerFullError) throw new CellError(ErrorCode.StoreUnavailable, 'too many sends wait for other cells; retry with the same cmid', { retryAfterMs: 1_000 });
      throw error;
    }
  }

  private async relaySendInOrder(identity: Identity, home: string, conv: string, cmid: string, body: string, sender: RelaySender): Promise<ChatMessage | undefined> {
    const { tenant, user, role, device } = identity;
    const party = partyId(identity);
    this.watchMirrors(tenant, user);
    const stored = await this.components.log.storedMessage(tenant, conv, party, cmid);
    if (stored !== undefined) {
      if (stored.body !== body) throw idempotencyConflict(cmid);
      return stored;
    }
    const key = relayedSendKey(tenant, conv, party, cmid);
    const pendingBody = this.sends.pendingBody(key);
    if (pendingBody !== undefined && pendingBody !== body) throw idempotencyConflict(cmid);
    // A resend of a send under way is answered `queued` again, without a second forward.
    if (!this.sends.track(key, body, sender.connection, sender.requestId)) return undefined;
    try {
      await this.enqueue(home, { v: 1, kind: 'send', tenant, conv, user, role, device, cmid, body });
    } catch (error) {
      this.sends.fail(key, error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    this.counts.relayedSends++;
    return undefined;
  }

  /** Waits for the message of a relayed send (HTTP callers) of the sender `senderParty`; rejects FORWARD_PENDING after `relayWaitMs`. */
  waitForSeq(tenant: string, conv: string, senderParty: string, cmid: string): Promise<ChatMessage> {
    return this.sends.wait(relayedSendKey(tenant, conv, senderParty, cmid), this.settings.relayWaitMs);
  }

  /**
   * A user here read a mirrored conversation up to `seq`: the read goes to the home cell
   * (durably, first), then moves the mirror's cursor. Resolves whether the cursor moved.
   */
  async relayRead(identity: Identity, home: string, conv: string, seq: number): Promise<boolean> {
    const { tenant, user } = identity;
    const party = partyId(identity);
    const state = await this.components.log.conversation(tenant, conv);
    if (seq > state.durableSeq) {
      throw new CellError(ErrorCode.SeqOutOfRange, `seq ${seq} is beyond the conversation's last message ${state.durableSeq}`);
    }
    if (seq <= (state.reads.get(party) ?? 0)) return false;
    await this.enqueue(home, { v: 1, kind: 'read', tenant, conv, user, seq });
    let outcome: { written: ChatMessage[]; moved: boolean };
    try {
      outcome = await this.mirror.markRead(tenant, conv, home, party, seq);
    } catch (error) {
      // The read is on its way to the home cell, whose receipt moves this cursor too.
      if (error instanceof CellError) throw error;
      throw new CellError(ErrorCode.StoreUnavailable, 'the read cursor could not be stored here; retry');
    }
    this.deliverMirrored(tenant, outcome.written);
    return outcome.moved;
  }

  /**
   * Before a device of a customer is caught up: when no device of the user was connected here
   * since the last refresh, the user's mirrors may lack what the home cells wrote meanwhile (they
   * stop sending to a cell that said `gone`), so each is refreshed first, with `follow` so that
   * the home cell finds this cell again. Failures are logged; the device syncs from the mirror.
   */
  async prepareDevice(identity: Identity): Promise<void> {
    if (identity.role !== 'customer') return;
    const userKey = `${identity.tenant}/${identity.user}`;
    this.goneSent.delete(userKey);
    // Home cells that asked where the customer is lately may hold an answer without this cell.
    this.components.cluster.userArrived(identity.tenant, identity.user);
    if (this.freshUsers.has(userKey)) return;
    // A refresh that failed (a home cell out of reach) leaves the user stale: the repair pass and the next device try again.
    const { complete, mirrors } = await this.refreshUser(identity.tenant, identity.user, true);
    if (!this.components.host.customerHasDevices(identity.tenant, identity.user)) return;
    if (complete) this.freshUsers.add(userKey);
    if (mirrors > 0) this.watchMirrors(identity.tenant, identity.user);
  }

  /** The user's last device here disconnected: their mirrors may fall behind from now on. */
  userLeft(tenant: string, user: string): void {
    this.freshUsers.delete(`${tenant}/${user}`);
    this.mirroredUsers.delete(`${tenant}/${user}`);
  }

  /**
   * A merchant hosted here moved to another cell: its conversations here became mirrors (the
   * copy left behind is complete), and the customers connected here now depend on pushes from a
   * home cell that does not know them yet. They go under the repair pass.
   */
  async merchantMovedAway(tenant: string, merchant: string): Promise<void> {
    const { store, host, logger } = this.components;
    try {
      for await (const { customer } of merchantConversations(store, tenant, merchant)) {
        if (host.customerHasDevices(tenant, customer)) this.watchMirrors(tenant, customer);
      }
    } catch (error) {
      // Their next connect, send or forwarded entry puts them under the repair pass all the same.
      logger.warn({ err: error, merchant }, 'could not list the conversations of a merchant that moved away');
    }
  }

  /** Puts the user's mirrors under the repair pass while a device of theirs is here (until `userLeft`). */
  private watchMirrors(tenant: string, user: string): void {
    this.mirroredUsers.set(`${tenant}/${user}`, [tenant, user]);
    this.repairTimer ??= this.components.clock.setTimer(this.settings.mirrorRepairIntervalMs, () => void this.repairMirrors());
  }

  /**
   * The repair pass: catches up the mirrors of every customer with a device here, one customer
   * at a time, asking the home cells to follow this cell again. Usually each history request
   * finds nothing new; otherwise the devices get what was missing, in order.
   */
  private async repairMirrors(): Promise<void> {
    const { host, logger } = this.components;
    let repaired = 0;
    for (const [key, [tenant, user]] of [...this.mirroredUsers]) {
      if (host.isDraining()) break;
      if (!host.customerHasDevices(tenant, user)) {
        this.mirroredUsers.delete(key);
        continue;
      }
      const before = this.counts.mirroredMessages;
      await this.refreshUser(tenant, user, true);
      repaired += this.counts.mirroredMessages - before;
    }
    if (repaired > 0) {
      this.counts.repairedMessages += repaired;
      logger.info({ messages: repaired }, 'mirror repair found messages the home cells had not pushed here');
    }
    this.repairTimer = undefined;
    if (this.mirroredUsers.size > 0 && !host.isDraining()) {
      this.repairTimer = this.components.clock.setTimer(this.settings.mirrorRepairIntervalMs, () => void this.repairMirrors());
    }
  }

  /**
   * For HTTP reads of a user with no device here: brings the mirror of `conv` (or all the user's
   * mirrors) up to date first, as far as the home cells answer in time.
   */
  async freshen(identity: Identity, conv?: { conv: string; home: string }): Promise<void> {
    if (identity.role !== 'customer' || this.freshUsers.has(`${identity.tenant}/${identity.user}`)) return;
    if (conv === undefined) {
      await this.refreshUser(identity.tenant, identity.user, false);
      return;
    }
    await this.refreshConversation(identity.tenant, conv.conv, conv.home, false);
  }

  // -- home side --------------------------------------------------------------------------------

  /** A message of a conversation hosted here became durable: on to the customer's other cells. */
  messageDurable(tenant: string, message: ChatMessage): void {
    const key = relayedSendKey(tenant, message.conv, conversationParty(message.conv, message.role, message.from), message.cmid);
    const origin = this.origins.get(key);
    const task = this.fanOut.message(tenant, message, origin);
    if (origin !== undefined) this.originTasks.set(key, task);
  }

  /** The read cursor of `party` (a party id) of a conversation hosted here moved: on to the customer's other cells. */
  receiptMoved(tenant: string, conv: string, party: string, seq: number): void {
    void this.fanOut.receipt(tenant, conv, parsePartyId(party)!, seq);
  }

  // -- forwarded entries ------------------------------------------------------------------------

  private async onForward(source: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    const byConversation = new Map<string, CrossCellEntry[]>();
    const gone: Array<CrossCellEntryOf<'gone'>> = [];
    for (const entry of entries) {
      const payload = parseCrossCellEntry(entry.payload);
      if (payload === undefined) {
        this.drop(source, entry.key, 'malformed entry');
        continue;
      }
      if (payload.kind === 'gone') {
        gone.push(payload);
        continue;
      }
      const conv = payload.kind === 'message' ? payload.message.conv : payload.conv;
      const group = `${payload.tenant}/${conv}`;
      let list = byConversation.get(group);
      if (list === undefined) byConversation.set(group, (list = []));
      list.push(payload);
    }
    // Conversations are independent; within one, entries apply in their order. Every one is
    // finished (applied or failed) before the batch is answered, so a retry never overlaps it.
    const outcomes = await Promise.allSettled([...byConversation.values()].map((list) => this.applyConversation(source, list)));
    const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    for (const { tenant, user } of gone) {
      this.components.cluster.forget(tenant, user, source);
      this.fanOut.unfollow(tenant, user, source);
    }
    if (failure !== undefined) {
      this.components.logger.warn({ err: failure.reason, source }, 'forwarded entries not applied; the source retries');
      throw failure.reason;
    }
  }

  private async applyConversation(source: string, entries: readonly CrossCellEntry[]): Promise<void> {
    let start = 0;
    while (start < entries.length) {
      const kind = entries[start]!.kind;
      let end = start + 1;
      while (end < entries.length && entries[end]!.kind === kind) end++;
      const run = entries.slice(start, end);
      start = end;
      switch (kind) {
        case 'send':
          await this.applySends(source, run as Array<CrossCellEntryOf<'send'>>);
          break;
        case 'read':
          for (const entry of run as Array<CrossCellEntryOf<'read'>>) await this.applyRead(source, entry);
          break;
        case 'message':
          await this.applyMessages(source, run as Array<CrossCellEntryOf<'message'>>);
          break;
        case 'receipt':
          for (const entry of run as Array<CrossCellEntryOf<'receipt'>>) await this.applyReceipt(source, entry);
          break;
        case 'rejected':
          for (const entry of run as Array<CrossCellEntryOf<'rejected'>>) this.applyRejected(entry);
          break;
        case 'gone':
          break;
      }
    }
  }

  /**
   * Home side: appends relayed sends with the normal send path and resolves once each message is
   * enqueued back to the access cell that relayed it, so that the inbox's mark moves only after
   * that: a crash in between makes the access cell resend, and the resend finds the cmid.
   */
  private async applySends(source: string, sends: ReadonlyArray<CrossCellEntryOf<'send'>>): Promise<void> {
    const { tenant, conv } = sends[0]!;
    const { merchant, customer } = parseConversationId(conv)!;
    await this.components.host.whenSettled(tenant, merchant);
    if (!this.components.host.hosts(tenant, merchant)) {
      // The merchant moved away: pass the sends on to its new home rather than refuse them; its
      // fan-out reaches the access cell through the customer's location, which answers `sent`.
      // Each keeps the access cell it came from as its origin: this cell holds no device of
      // the customer, and a home that took it for the customer's cell would send the message
      // (and all that follow) here instead of to the customer.
      const home = this.components.cluster.homeCellOf(tenant, merchant);
      if (home !== undefined && home !== this.components.cluster.selfCellId) {
        const passedOn = sends.map((send) => ({ key: `send/${tenant}/${conv}`, payload: { ...send, origin: send.origin ?? source } }));
        await this.components.cluster.enqueue(home, passedOn);
        return;
      }
      await this.rejectAtOrigins(source, sends, new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} is not hosted by cell ${this.components.cluster.selfCellId}`));
      return;
    }
    const foreign = sends.filter((send) => send.role !== 'customer' || send.user !== customer);
    if (foreign.length > 0) await this.rejectAtOrigins(source, foreign, new CellError(ErrorCode.ConversationForbidden, `the sender is not a party to conversation ${conv}`));
    const accepted = sends.filter((send) => !foreign.includes(send));
    if (accepted.length === 0) return;
    if (this.components.host.isDraining()) throw new CellError(ErrorCode.ShuttingDown, 'this cell is shutting down');
    const sendKeys = accepted.map((send) => relayedSendKey(tenant, conv, conversationParty(conv, send.role, send.user), send.cmid));
    const origins = accepted.map((send) => send.origin ?? source);
    sendKeys.forEach((key, index) => this.origins.set(key, origins[index]!));
    try {
      // Appended in one go: the log sequences them in this order and writes them together.
      const outcomes = await Promise.allSettled(
        accepted.map((send) =>
          this.components.log.append({ tenant, conv, from: send.user, role: send.role, device: send.device, cmid: send.cmid, body: send.body }),
        ),
      );
      // Any other failure (the store) fails the whole delivery: the source retries it, and what
      // was stored meanwhile is answered as a resend then.
      const failure = outcomes.find((outcome) => outcome.status === 'rejected' && !isIdempotencyConflict(outcome.reason));
      if (failure !== undefined) throw (failure as PromiseRejectedResult).reason;
      // A resend of a cmid with another body is refused for good, at the cell that relayed it.
      for (const [index, outcome] of outcomes.entries()) {
        if (outcome.status === 'rejected') await this.rejectAtOrigins(source, [accepted[index]!], outcome.reason as CellError);
      }
      await Promise.all(
        outcomes.map((outcome, index) =>
          outcome.status === 'fulfilled' ? (this.originTasks.get(sendKeys[index]!) ?? this.fanOut.toOrigin(tenant, outcome.value.message, origins[index]!)) : undefined,
        ),
      );
    } finally {
      for (const key of sendKeys) {
        this.origins.delete(key);
        this.originTasks.delete(key);
      }
    }
  }

  /** Home side: a read of a user of another cell. */
  private async applyRead(source: string, entry: CrossCellEntryOf<'read'>): Promise<void> {
    const { merchant, customer } = parseConversationId(entry.conv)!;
    if (!this.components.host.hosts(entry.tenant, merchant) || entry.user !== customer) {
      this.drop(source, `read/${entry.tenant}/${entry.conv}`, 'read of a conversation not hosted here, or by a non-party');
      return;
    }
    // The reader's cell holds a device of theirs: it gets the receipt, among others.
    this.fanOut.follow(entry.tenant, entry.user, source);
    try {
      await this.components.host.markRead(entry.tenant, entry.conv, partyId({ role: 'customer', user: entry.user }), entry.seq);
    } catch (error) {
      if (!(error instanceof CellError) || error.code !== ErrorCode.SeqOutOfRange) throw error;
      this.drop(source, `read/${entry.tenant}/${entry.conv}`, 'read beyond the conversation');
    }
  }

  /** Access side: messages of a mirrored conversation, written in, delivered, and the senders answered. */
  private async applyMessages(source: string, entries: ReadonlyArray<CrossCellEntryOf<'message'>>): Promise<void> {
    const { tenant } = entries[0]!;
    const conv = entries[0]!.message.conv;
    const parsed = parseConversationId(conv)!;
    if (this.components.host.hosts(tenant, parsed.merchant)) {
      this.drop(source, `message/${tenant}/${conv}`, 'a message of a conversation hosted here');
      return;
    }
    // A conversation can turn cross-cell after the customer's device connected (its merchant moved away).
    if (this.components.host.customerHasDevices(tenant, parsed.customer)) this.watchMirrors(tenant, parsed.customer);
    const bySeq = new Map(entries.map(({ message }) => [message.seq, message]));
    const messages = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    // Runs of consecutive seqs; a hole between two runs is backfilled by the second.
    let runStart = 0;
    for (let index = 1; index <= messages.length; index++) {
      if (index < messages.length && messages[index]!.seq === messages[index - 1]!.seq + 1) continue;
      const run = messages.slice(runStart, index);
      runStart = index;
      const written = await this.mirror.apply(tenant, conv, source, run);
      this.counts.mirroredMessages += written.length;
      const writtenSeqs = new Set(written.map((message) => message.seq));
      // Sends answered by messages the mirror held already (a resend, another device's copy).
      const alreadyHeld = run.filter((message) => !writtenSeqs.has(message.seq));
      for (const message of alreadyHeld) {
        const sender = this.sends.settle(relayedSendKey(tenant, conv, conversationParty(conv, message.role, message.from), message.cmid), message);
        if (sender !== undefined) this.components.host.deliver(tenant, message, sender);
      }
      this.deliverMirrored(tenant, written);
    }
    this.hintIfGone(source, tenant, parsed.customer);
  }

  /** Access side: a read cursor moved at the home cell. */
  private async applyReceipt(source: string, entry: CrossCellEntryOf<'receipt'>): Promise<void> {
    const { merchant, customer } = parseConversationId(entry.conv)!;
    if (this.components.host.hosts(entry.tenant, merchant)) {
      this.drop(source, `receipt/${entry.tenant}/${entry.conv}`, 'a receipt of a conversation hosted here');
      return;
    }
    const party = readerParty(entry.conv, entry.user, entry.role);
    const { written, moved } = await this.mirror.markRead(entry.tenant, entry.conv, source, party, entry.seq);
    this.counts.mirroredMessages += written.length;
    this.deliverMirrored(entry.tenant, written);
    if (moved) this.components.host.deliverReceipt(entry.tenant, entry.conv, party, entry.seq);
    this.hintIfGone(source, entry.tenant, customer);
  }

  /** Access side: the home cell refused a relayed send for good. */
  private applyRejected(entry: CrossCellEntryOf<'rejected'>): void {
    const code = Object.values(ErrorCode).includes(entry.code as ErrorCode) ? (entry.code as ErrorCode) : ErrorCode.Internal;
    const error = new CellError(code, entry.message);
    const sender = this.sends.fail(relayedSendKey(entry.tenant, entry.conv, partyId({ role: 'customer', user: entry.user }), entry.cmid), error);
    this.components.host.refuseRelayed(sender, entry.tenant, entry.user, entry.conv, entry.cmid, error);
  }

  /** Delivers newly mirrored messages, in seq order, answering the devices that sent them. */
  private deliverMirrored(tenant: string, messages: readonly ChatMessage[]): void {
    for (const message of messages) {
      const sender = this.sends.settle(relayedSendKey(tenant, message.conv, conversationParty(message.conv, message.role, message.from), message.cmid), message);
      this.components.host.deliver(tenant, message, sender);
    }
  }

  /** Refuses each send to the access cell it came from (its `origin` when another cell passed it on). */
  private async rejectAtOrigins(source: string, sends: ReadonlyArray<CrossCellEntryOf<'send'>>, error: CellError): Promise<void> {
    const byOrigin = new Map<string, Array<CrossCellEntryOf<'send'>>>();
    for (const send of sends) {
      const origin = send.origin ?? source;
      byOrigin.set(origin, [...(byOrigin.get(origin) ?? []), send]);
    }
    for (const [origin, refused] of byOrigin) await this.reject(origin, refused, error);
  }

  private async reject(source: string, sends: ReadonlyArray<CrossCellEntryOf<'send'>>, error: CellError): Promise<void> {
    const entries = sends.map((send) =>
      crossCellEntry({ v: 1, kind: 'rejected', tenant: send.tenant, conv: send.conv, user: send.user, cmid: send.cmid, code: error.code, message: error.message }),
    );
    this.components.logger.warn({ source, code: error.code, count: sends.length }, 'refusing relayed sends');
    await this.components.cluster.enqueue(source, entries);
  }

  /**
   * Tells `source` once that the user has no device here any more (until the user connects
   * again), so it forgets this cell as the user's location. A hint: losing it costs only the
   * home cell's further forwards into this mirror, which stays correct.
   */
  private hintIfGone(source: string, tenant: string, user: string): void {
    if (this.components.host.customerHasDevices(tenant, user)) return;
    const userKey = `${tenant}/${user}`;
    let cells = this.goneSent.get(userKey);
    if (cells?.has(source) === true) return;
    if (cells === undefined) {
      this.goneSent.set(userKey, (cells = new Set()));
      while (this.goneSent.size > this.settings.maxGoneHints) this.goneSent.delete(this.goneSent.keys().next().value as string);
    }
    cells.add(source);
    this.counts.goneHints++;
    this.enqueue(source, { v: 1, kind: 'gone', tenant, user }).catch((error: unknown) => {
      this.components.logger.warn({ err: error, code: clusterErrorCode(error), source, user }, 'could not tell a home cell that a user left');
    });
  }

  // -- mirrors ----------------------------------------------------------------------------------

  /** Refreshes the user's mirrors (the first `maxRefreshConversations`); resolves whether all succeeded, and how many there are. */
  private async refreshUser(tenant: string, user: string, follow: boolean): Promise<{ complete: boolean; mirrors: number }> {
    let entries: Array<[string, string]>;
    try {
      entries = await this.components.store.range({ ...keys.customerConversations(tenant, user), limit: MAX_CONVERSATIONS_PER_DEVICE });
    } catch (error) {
      this.counts.refreshFailures++;
      this.components.logger.warn({ err: error, user }, 'could not list the mirrors of a user');
      return { complete: false, mirrors: 0 };
    }
    const mirrors: Array<{ conv: string; home: string }> = [];
    for (const [key] of entries) {
      const conv = lastField(key);
      const merchant = parseConversationId(conv)?.merchant;
      const home = merchant === undefined ? undefined : this.homeCellOf(tenant, merchant);
      if (home !== undefined) mirrors.push({ conv, home });
      if (mirrors.length >= this.settings.maxRefreshConversations) break;
    }
    let next = 0;
    let complete = true;
    const worker = async (): Promise<void> => {
      while (next < mirrors.length) {
        const { conv, home } = mirrors[next++]!;
        if (!(await this.refreshConversation(tenant, conv, home, follow))) complete = false;
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.settings.refreshParallelism, mirrors.length) }, worker));
    return { complete, mirrors: mirrors.length };
  }

  /** Catches one mirror up with its home cell; resolves false (logged) when that failed. */
  private async refreshConversation(tenant: string, conv: string, home: string, follow: boolean): Promise<boolean> {
    try {
      const written = await this.mirror.catchUp(tenant, conv, home, follow);
      this.counts.mirroredMessages += written.length;
      this.deliverMirrored(tenant, written);
      return true;
    } catch (error) {
      this.counts.refreshFailures++;
      this.components.logger.warn({ err: error, code: clusterErrorCode(error), conv, home }, 'could not refresh a mirror; serving what it holds');
      return false;
    }
  }

  /** Home side: a page of a hosted conversation for another cell's mirror. */
  private async serveHistory(fromCell: string, data: Uint8Array): Promise<Uint8Array> {
    const answer = (response: HistoryResponse): Uint8Array => encodeJson(response);
    const request = decodeJson(HistoryRequest, data, HISTORY_MAX_REQUEST_BYTES);
    if (request === undefined) return answer({ ok: false, code: 'BAD_REQUEST', message: 'not a valid history request' });
    const { merchant, customer } = parseConversationId(request.conv)!;
    if (!this.components.host.hosts(request.tenant, merchant)) {
      return answer({ ok: false, code: 'NOT_HOSTED', message: `merchant ${merchant} is not hosted by cell ${this.components.cluster.selfCellId}` });
    }
    if (request.follow === true) {
      // The asker holds the customer's devices now; the cached location may say otherwise, and
      // may not find the customer's other cells either: ask the mesh again next time.
      this.fanOut.follow(request.tenant, customer, fromCell);
      this.components.cluster.invalidate(request.tenant, customer);
    }
    try {
      const { log } = this.components;
      const state = await log.conversation(request.tenant, request.conv);
      const page = await log.messages(request.tenant, request.conv, request.afterSeq + 1, state.durableSeq + 1, request.limit);
      let bytes = 0;
      let fits = 0;
      for (const message of page) {
        bytes += JSON.stringify(message).length;
        if (fits > 0 && bytes > this.settings.historyPageBytes) break;
        fits++;
      }
      const reads: HistoryPage['reads'] = [];
      for (const [party, seq] of state.reads) {
        const reader = parsePartyId(party);
        if (reader !== undefined && reads.length < HISTORY_MAX_READS) reads.push({ user: reader.user, role: reader.role, seq });
      }
      this.counts.historyPagesServed++;
      return answer({ ok: true, lastSeq: state.durableSeq, messages: page.slice(0, fits), reads });
    } catch (error) {
      this.components.logger.warn({ err: error, fromCell, conv: request.conv }, 'could not serve a history page');
      return answer({ ok: false, code: 'STORE_UNAVAILABLE', message: 'the store could not be read' });
    }
  }

  private async enqueue(destination: string, payload: CrossCellEntry): Promise<void> {
    try {
      await this.components.cluster.enqueue(destination, [crossCellEntry(payload)]);
    } catch (error) {
      const code = clusterErrorCode(error);
      if (code === 'OUTBOX_INVALID_ENTRY') throw new CellError(ErrorCode.PayloadTooLarge, 'the message is too large to forward to its home cell');
      throw new CellError(ErrorCode.StoreUnavailable, `could not store the forward to cell ${destination} (${code ?? 'error'}); retry`);
    }
  }

  private drop(source: string, key: string, reason: string): void {
    this.counts.entriesDropped++;
    this.components.logger.warn({ source, key, reason }, 'dropping a forwarded entry');
  }
}

function isIdempotencyConflict(error: unknown): boolean {
  return error instanceof CellError && error.code === ErrorCode.IdempotencyConflict;
}
