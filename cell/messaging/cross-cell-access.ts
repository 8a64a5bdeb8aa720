/**
 * The access side of cross-cell conversations: sends, reads and desk requests (`close`, `rate`)
 * of a user here relayed to the conversation's home cell, and what the home cell forwards back
 * (messages, receipts, refusals, answers) written into the mirror and delivered, answering the
 * devices that sent.
 */
import type { Identity } from '../access/tokens.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ChatMessage, type ConsultationView, type ServerFrame } from '../protocol/frames.js';
import { idempotencyConflict } from './append-errors.js';
import type { ConversationMirror } from './conversation-mirror.js';
import type { CrossCellContext } from './cross-cell-context.js';
import { readerParty, type CrossCellEntryOf, type RelayedDeskAction } from './cross-cell-wire.js';
import type { GoneHints } from './gone-hints.js';
import { KeyedSerializer, SerializerFullError } from './keyed-serializer.js';
import { conversationParty, partyId } from './principal.js';
import { RelayedDeskRequests, type DeskRequester } from './relayed-desk-requests.js';
import { RelayedSends, relayedSendKey, type RelayedSend } from './relayed-sends.js';

/** The device (and request) a relayed send answers once its seq is known. */
export type RelaySender = { connection: RelayedSend['connection']; requestId: string | undefined };

export class CrossCellAccess {
  private readonly sends: RelayedSends;
  private readonly deskRequests: RelayedDeskRequests;
  /** One relayed send (or desk request) at a time per conversation, so a device's pipelined frames leave in order. */
  private readonly relaying: KeyedSerializer;

  constructor(
    private readonly context: CrossCellContext,
    private readonly mirror: ConversationMirror,
    private readonly goneHints: GoneHints,
    /** Puts the user's mirrors under the repair pass (MirrorRefresh.watch). */
    private readonly watchMirrors: (tenant: string, user: string) => void,
  ) {
    const { clock, settings } = context;
    this.relaying = new KeyedSerializer(settings.maxQueuedTasks);
    this.deskRequests = new RelayedDeskRequests(settings.maxRelayedSends);
    this.sends = new RelayedSends(
      clock,
      settings.maxRelayedSends,
      () =>
        new CellError(
          ErrorCode.ForwardPending,
          "the message is durable in this cell's outbox and waits for its conversation's home cell; resend with the same cmid to learn its seq",
          { retryAfterMs: 1_000 },
        ),
    );
  }

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
    const stored = await this.context.log.storedMessage(tenant, conv, party, cmid);
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
      await this.context.enqueue(home, { v: 1, kind: 'send', tenant, conv, user, role, device, cmid, body });
    } catch (error) {
      this.sends.fail(key, error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    this.context.counts.relayedSends++;
    return undefined;
  }

  /**
   * A customer's `close` or `rate` of a conversation whose desk is at `home`: durable in the
   * outbox once this resolves, behind the customer's sends relayed before it (a "thanks, bye"
   * then a close closes the consultation the message belongs to). `requester` is answered (`ok`,
   * or the desk's refusal) when the home cell's answer comes back (applyDeskAnswer).
   */
  async relayDeskAction(identity: Identity, home: string, conv: string, action: RelayedDeskAction, requester: DeskRequester): Promise<void> {
    if (this.context.host.isDraining()) throw new CellError(ErrorCode.ShuttingDown, 'the cell is shutting down; resend after reconnecting');
    const { tenant, user, device } = identity;
    const request = this.deskRequests.track(requester);
    try {
      await this.relaying.run(`${tenant}/${conv}`, () => this.context.enqueue(home, { v: 1, kind: 'desk', tenant, conv, user, device, request, action }));
    } catch (error) {
      this.deskRequests.settle(request);
      if (error instanceof SerializerFullError) throw new CellError(ErrorCode.StoreUnavailable, 'too many requests wait for other cells; retry', { retryAfterMs: 1_000 });
      throw error;
    }
  }

  /** Access side: the home cell's desk took (or refused) a request relayed from here; its device learns which. */
  applyDeskAnswer(entry: CrossCellEntryOf<'desk-answer'>): void {
    const requester = this.deskRequests.settle(entry.request);
    if (requester === undefined || requester.connection.closed) return;
    const { connection, requestId } = requester;
    if (entry.code === undefined) {
      if (requestId !== undefined) this.context.host.answer(connection, { t: 'ok', id: requestId });
      return;
    }
    const frame: ServerFrame = { t: 'error', code: knownCode(entry.code), message: entry.message ?? entry.code };
    if (requestId !== undefined) frame.id = requestId;
    this.context.host.answer(connection, frame);
  }

  /** Waits for the message of a relayed send (HTTP callers) of the sender `senderParty`; rejects FORWARD_PENDING after `relayWaitMs`. */
  waitForSeq(tenant: string, conv: string, senderParty: string, cmid: string): Promise<ChatMessage> {
    return this.sends.wait(relayedSendKey(tenant, conv, senderParty, cmid), this.context.settings.relayWaitMs);
  }

  /**
   * A user here read a mirrored conversation up to `seq`: the read goes to the home cell
   * (durably, first), then moves the mirror's cursor. Resolves whether the cursor moved.
   */
  async relayRead(identity: Identity, home: string, conv: string, seq: number): Promise<boolean> {
    const { tenant, user } = identity;
    const party = partyId(identity);
    const state = await this.context.log.conversation(tenant, conv);
    if (seq > state.durableSeq) {
      throw new CellError(ErrorCode.SeqOutOfRange, `seq ${seq} is beyond the conversation's last message ${state.durableSeq}`);
    }
    if (seq <= (state.reads.get(party) ?? 0)) return false;
    await this.context.enqueue(home, { v: 1, kind: 'read', tenant, conv, user, seq });
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

  /** Access side: messages of a mirrored conversation, written in, delivered, and the senders answered. */
  async applyMessages(source: string, entries: ReadonlyArray<CrossCellEntryOf<'message'>>): Promise<void> {
    const { tenant } = entries[0]!;
    const conv = entries[0]!.message.conv;
    const parsed = parseConversationId(conv)!;
    if (this.context.host.hosts(tenant, parsed.merchant)) {
      this.context.drop(source, `message/${tenant}/${conv}`, 'a message of a conversation hosted here');
      return;
    }
    // A conversation can turn cross-cell after the customer's device connected (its merchant moved away).
    if (this.context.host.customerHasDevices(tenant, parsed.customer)) this.watchMirrors(tenant, parsed.customer);
    const bySeq = new Map(entries.map(({ message }) => [message.seq, message]));
    const messages = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    // Runs of consecutive seqs; a hole between two runs is backfilled by the second.
    let runStart = 0;
    for (let index = 1; index <= messages.length; index++) {
      if (index < messages.length && messages[index]!.seq === messages[index - 1]!.seq + 1) continue;
      const run = messages.slice(runStart, index);
      runStart = index;
      const written = await this.mirror.apply(tenant, conv, source, run);
      this.context.counts.mirroredMessages += written.length;
      const writtenSeqs = new Set(written.map((message) => message.seq));
      // Sends answered by messages the mirror held already (a resend, another device's copy).
      const alreadyHeld = run.filter((message) => !writtenSeqs.has(message.seq));
      for (const message of alreadyHeld) {
        const sender = this.sends.settle(relayedSendKey(tenant, conv, conversationParty(conv, message.role, message.from), message.cmid), message);
        if (sender !== undefined) this.context.host.deliver(tenant, message, sender);
      }
      this.deliverMirrored(tenant, written);
    }
    this.goneHints.hint(source, tenant, parsed.customer);
  }

  /** Access side: a read cursor moved at the home cell. */
  async applyReceipt(source: string, entry: CrossCellEntryOf<'receipt'>): Promise<void> {
    const { merchant, customer } = parseConversationId(entry.conv)!;
    if (this.context.host.hosts(entry.tenant, merchant)) {
      this.context.drop(source, `receipt/${entry.tenant}/${entry.conv}`, 'a receipt of a conversation hosted here');
      return;
    }
    const party = readerParty(entry.conv, entry.user, entry.role);
    const { written, moved } = await this.mirror.markRead(entry.tenant, entry.conv, source, party, entry.seq);
    this.context.counts.mirroredMessages += written.length;
    this.deliverMirrored(entry.tenant, written);
    if (moved) this.context.host.deliverReceipt(entry.tenant, entry.conv, party, entry.seq);
    this.goneHints.hint(source, entry.tenant, customer);
  }

  /** Access side: the customer's consultation at its merchant's desk changed; its devices here are told. */
  applyConsultation(source: string, entry: CrossCellEntryOf<'consultation'>): void {
    const { merchant, customer } = parseConversationId(entry.conv)!;
    if (this.context.host.hosts(entry.tenant, merchant)) {
      this.context.drop(source, `consultation/${entry.tenant}/${entry.conv}`, 'a consultation of a conversation hosted here');
      return;
    }
    const view: ConsultationView = { conv: entry.view.conv, consultation: entry.view.consultation, state: entry.view.state, group: entry.view.group, openedAtMs: entry.view.openedAtMs };
    if (entry.view.agent !== undefined) view.agent = entry.view.agent;
    if (entry.view.agentName !== undefined) view.agentName = entry.view.agentName;
    if (entry.view.position !== undefined) view.position = entry.view.position;
    if (entry.view.estimatedWaitMs !== undefined) view.estimatedWaitMs = entry.view.estimatedWaitMs;
    this.context.host.tellCustomer(entry.tenant, customer, { t: 'consultation', ...view });
    this.goneHints.hint(source, entry.tenant, customer);
  }

  /** Access side: the home cell refused a relayed send for good. */
  applyRejected(entry: CrossCellEntryOf<'rejected'>): void {
    const error = new CellError(knownCode(entry.code), entry.message);
    const sender = this.sends.fail(relayedSendKey(entry.tenant, entry.conv, partyId({ role: 'customer', user: entry.user }), entry.cmid), error);
    const frame: ServerFrame = { t: 'error', code: error.code, message: error.message, conv: entry.conv, cmid: entry.cmid };
    const connection = sender?.connection;
    if (connection !== undefined && !connection.closed) {
      if (sender?.requestId !== undefined) frame.id = sender.requestId;
      this.context.host.answer(connection, frame);
      return;
    }
    // The device that sent it is gone: the customer's devices here learn of it.
    this.context.host.tellCustomer(entry.tenant, entry.user, frame);
  }

  /** Delivers newly mirrored messages, in seq order, answering the devices that sent them. */
  deliverMirrored(tenant: string, messages: readonly ChatMessage[]): void {
    for (const message of messages) {
      const sender = this.sends.settle(relayedSendKey(tenant, message.conv, conversationParty(message.conv, message.role, message.from), message.cmid), message);
      this.context.host.deliver(tenant, message, sender);
    }
  }
}

/** A code another cell sent: ours, or INTERNAL for one this version does not know. */
function knownCode(code: string): ErrorCode {
  return Object.values(ErrorCode).includes(code as ErrorCode) ? (code as ErrorCode) : ErrorCode.Internal;
}
