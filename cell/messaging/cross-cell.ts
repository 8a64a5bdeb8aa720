/**
 * Cross-cell conversations: their settings, what the relay needs of the cell (CrossCellHost), and
 * CrossCellRelay, which composes the access side (cross-cell-access.ts), mirror refreshes
 * (mirror-refresh.ts), the home side (cross-cell-home.ts) and history pages (history-server.ts),
 * and sorts the entries other cells forward to the part that applies them.
 */
import type { Identity } from '../access/tokens.js';
import { parseConversationId, type ChatMessage, type ConsultationView, type Role } from '../protocol/frames.js';
import type { ClusterForwardedEntry } from './cluster-port.js';
import type { ClosureSnapshot } from './closure-counts.js';
import { ConversationMirror } from './conversation-mirror.js';
import { CrossCellAccess, type RelaySender } from './cross-cell-access.js';
import { CrossCellContext } from './cross-cell-context.js';
import { CrossCellHome } from './cross-cell-home.js';
import { HISTORY_PROTOCOL, parseCrossCellEntry, type CrossCellEntry, type CrossCellEntryOf, type RelayedDeskAction } from './cross-cell-wire.js';
import { GoneHints } from './gone-hints.js';
import { HistoryServer } from './history-server.js';
import { MirrorRefresh } from './mirror-refresh.js';
import { QueuePositions } from './queue-positions.js';
import type { DeskRequester } from './relayed-desk-requests.js';
import { RemoteFanOut } from './remote-fan-out.js';
import type { CrossCellParts, CrossCellSettings, CrossCellStats } from './cross-cell-settings.js';
import { CROSS_CELL_DEFAULTS } from './cross-cell-settings.js';

export interface CrossCellComponents extends CrossCellParts {
  readonly settings?: Partial<CrossCellSettings>;
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
  private readonly context: CrossCellContext;
  private readonly fanOut: RemoteFanOut;
  private readonly access: CrossCellAccess;
  private readonly mirrors: MirrorRefresh;
  private readonly home: CrossCellHome;
  private readonly history: HistoryServer;
  private readonly positions: QueuePositions;

  constructor(components: CrossCellComponents) {
    const settings = { ...CROSS_CELL_DEFAULTS, ...components.settings };
    const { cluster, log, store, clock, logger, host } = components;
    this.context = new CrossCellContext({ cluster, log, store, clock, logger, host, settings });
    const mirror = new ConversationMirror(log, cluster, settings);
    this.fanOut = new RemoteFanOut(cluster, clock, logger, settings);
    const goneHints = new GoneHints(this.context);
    this.access = new CrossCellAccess(this.context, mirror, goneHints, (tenant, user) => this.mirrors.watch(tenant, user));
    this.mirrors = new MirrorRefresh(this.context, mirror, goneHints, (tenant, messages) => this.access.deliverMirrored(tenant, messages));
    this.home = new CrossCellHome(this.context, this.fanOut, (answer) => this.access.applyDeskAnswer(answer));
    this.history = new HistoryServer(this.context, this.fanOut);
    this.positions = new QueuePositions(clock, (tenant, view) => void this.fanOut.consultation(tenant, view));
    cluster.onForward((source, entries) => this.onForward(source, entries));
    cluster.onCellGone((cellId) => this.fanOut.forgetCell(cellId));
    cluster.handle(HISTORY_PROTOCOL, (from, data) => this.history.serve(from, data));
  }

  stats(): Readonly<CrossCellStats> {
    return { ...this.context.counts, ...this.fanOut.stats() };
  }

  /** The in-cell closure of the messages this (home) cell made durable since it started. */
  closure(): ClosureSnapshot {
    return this.context.closure.snapshot();
  }

  /** The cell hosting the merchant when it is another cell of the cluster; undefined otherwise. */
  homeCellOf(tenant: string, merchant: string): string | undefined {
    return this.context.remoteHomeOf(tenant, merchant);
  }

  // -- access side (CrossCellAccess, MirrorRefresh) ---------------------------------------------

  /** Forwards a send to the conversation's home cell (CrossCellAccess.relaySend). */
  relaySend(identity: Identity, home: string, conv: string, cmid: string, body: string, sender: RelaySender): Promise<ChatMessage | undefined> {
    return this.access.relaySend(identity, home, conv, cmid, body, sender);
  }

  /** Relays a customer's `close` or `rate` to the desk at `home` (CrossCellAccess.relayDeskAction). */
  relayDeskAction(identity: Identity, home: string, conv: string, action: RelayedDeskAction, requester: DeskRequester): Promise<void> {
    return this.access.relayDeskAction(identity, home, conv, action, requester);
  }

  /** Waits for the message of a relayed send (HTTP callers) of the sender `senderParty`; rejects FORWARD_PENDING after `relayWaitMs`. */
  waitForSeq(tenant: string, conv: string, senderParty: string, cmid: string): Promise<ChatMessage> {
    return this.access.waitForSeq(tenant, conv, senderParty, cmid);
  }

  /** A user here read a mirrored conversation up to `seq` (CrossCellAccess.relayRead); resolves whether the cursor moved. */
  relayRead(identity: Identity, home: string, conv: string, seq: number): Promise<boolean> {
    return this.access.relayRead(identity, home, conv, seq);
  }

  /** Before a device of a customer is caught up: refreshes the user's mirrors when stale (MirrorRefresh.prepareDevice). */
  prepareDevice(identity: Identity): Promise<void> {
    return this.mirrors.prepareDevice(identity);
  }

  /** The user's last device here disconnected: their mirrors may fall behind from now on. */
  userLeft(tenant: string, user: string): void {
    this.mirrors.userLeft(tenant, user);
  }

  /** A merchant hosted here moved to another cell: its customers here go under the repair pass. */
  merchantMovedAway(tenant: string, merchant: string): Promise<void> {
    return this.mirrors.merchantMovedAway(tenant, merchant);
  }

  /** For HTTP reads of a user with no device here: brings the mirror of `conv` (or all the user's mirrors) up to date first. */
  freshen(identity: Identity, conv?: { conv: string; home: string }): Promise<void> {
    return this.mirrors.freshen(identity, conv);
  }

  // -- home side (CrossCellHome) ------------------------------------------------------------------

  /** A message of a conversation hosted here became durable: on to the customer's other cells. */
  messageDurable(tenant: string, message: ChatMessage): void {
    this.home.messageDurable(tenant, message);
  }

  /** The read cursor of `party` (a party id) of a conversation hosted here moved: on to the customer's other cells. */
  receiptMoved(tenant: string, conv: string, party: string, seq: number): void {
    this.home.receiptMoved(tenant, conv, party, seq);
  }

  /** The customer's consultation at a desk here changed: its devices on other cells get the frame too. */
  consultationChanged(tenant: string, view: ConsultationView): void {
    this.positions.stateChanged(tenant, view.conv);
    void this.fanOut.consultation(tenant, view);
  }

  /**
   * The desk here told a waiting customer its queue position (between changes of state): on to
   * the cells that follow the customer, thinned out (QueuePositions). Customers with no device
   * elsewhere cost nothing more.
   */
  queuePosition(tenant: string, view: ConsultationView): void {
    if (this.fanOut.hasFollowers(tenant, parseConversationId(view.conv)!.customer)) this.positions.offer(tenant, view);
  }

  /**
   * Someone typed in a conversation: an agent here (to the customer's other cells), or a customer
   * here whose conversation's home is `home` (there). A hint of the moment, never retried.
   */
  typing(tenant: string, conv: string, user: string, role: Role, home: string | undefined): void {
    if (role === 'agent') {
      void this.fanOut.typing(tenant, conv, user);
      return;
    }
    if (home !== undefined) this.context.enqueue(home, { v: 1, kind: 'typing', tenant, conv, user, role }).catch(() => undefined);
  }

  // -- forwarded entries ------------------------------------------------------------------------

  private async onForward(source: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    const byConversation = new Map<string, CrossCellEntry[]>();
    const gone: Array<CrossCellEntryOf<'gone'>> = [];
    for (const entry of entries) {
      const payload = parseCrossCellEntry(entry.payload);
      if (payload === undefined) {
        this.context.drop(source, entry.key, 'malformed entry');
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
      this.context.cluster.forget(tenant, user, source);
      this.fanOut.unfollow(tenant, user, source);
    }
    if (failure !== undefined) {
      this.context.logger.warn({ err: failure.reason, source }, 'forwarded entries not applied; the source retries');
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
          await this.home.applySends(source, run as Array<CrossCellEntryOf<'send'>>);
          break;
        case 'read':
          for (const entry of run as Array<CrossCellEntryOf<'read'>>) await this.home.applyRead(source, entry);
          break;
        case 'message':
          await this.access.applyMessages(source, run as Array<CrossCellEntryOf<'message'>>);
          break;
        case 'receipt':
          for (const entry of run as Array<CrossCellEntryOf<'receipt'>>) await this.access.applyReceipt(source, entry);
          break;
        case 'rejected':
          for (const entry of run as Array<CrossCellEntryOf<'rejected'>>) this.access.applyRejected(entry);
          break;
        case 'consultation':
          for (const entry of run as Array<CrossCellEntryOf<'consultation'>>) this.access.applyConsultation(source, entry);
          break;
        case 'typing':
          for (const entry of run as Array<CrossCellEntryOf<'typing'>>) this.context.host.tellTyping(entry.tenant, entry.conv, entry.user, entry.role);
          break;
        case 'desk':
          for (const entry of run as Array<CrossCellEntryOf<'desk'>>) await this.home.applyDeskAction(source, entry);
          break;
        case 'desk-answer':
          for (const entry of run as Array<CrossCellEntryOf<'desk-answer'>>) this.access.applyDeskAnswer(entry);
          break;
        case 'gone':
          break;
      }
    }
  }

}
