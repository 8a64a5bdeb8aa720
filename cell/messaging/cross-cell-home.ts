/**
 * The home side of cross-cell conversations: sends, reads and desk requests relayed from access
 * cells applied with the normal paths (or passed on, or refused), and every durable message and
 * receipt of a hosted conversation fanned out to the cells holding the customer's devices.
 */
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ChatMessage } from '../protocol/frames.js';
import type { CrossCellContext } from './cross-cell-context.js';
import { crossCellEntry, type CrossCellEntryOf } from './cross-cell-wire.js';
import { conversationParty, parsePartyId, partyId } from './principal.js';
import { relayedSendKey } from './relayed-sends.js';
import type { RemoteFanOut } from './remote-fan-out.js';

export class CrossCellHome {
  /** Sends being appended here for another cell, by relayedSendKey: that cell gets the message back. */
  private readonly origins = new Map<string, string>();
  /** The fan-out (to the origin, among others) of each such send once durable. */
  private readonly originTasks = new Map<string, Promise<unknown>>();
  /** Desk requests applied here, by origin and request, with the desk's refusal (null: applied); oldest first. */
  private readonly deskAnswers = new Map<string, CellError | null>();

  constructor(
    private readonly context: CrossCellContext,
    private readonly fanOut: RemoteFanOut,
    /** Answers a desk request relayed from this very cell (its merchant moved here meanwhile). */
    private readonly answerHere: (answer: CrossCellEntryOf<'desk-answer'>) => void,
  ) {}

  /** A message of a conversation hosted here became durable: on to the customer's other cells. */
  messageDurable(tenant: string, message: ChatMessage): void {
    const key = relayedSendKey(tenant, message.conv, conversationParty(message.conv, message.role, message.from), message.cmid);
    const origin = this.origins.get(key);
    const task = this.fanOut.message(tenant, message, origin);
    const { closure } = this.context;
    if (origin !== undefined) {
      this.originTasks.set(key, task);
      closure.count(tenant, message.conv, 'relayed');
      return;
    }
    task.then(
      (cells) => closure.count(tenant, message.conv, cells > 0 ? 'copied' : 'in_cell'),
      () => closure.count(tenant, message.conv, 'copied'),
    );
  }

  /** The read cursor of `party` (a party id) of a conversation hosted here moved: on to the customer's other cells. */
  receiptMoved(tenant: string, conv: string, party: string, seq: number): void {
    void this.fanOut.receipt(tenant, conv, parsePartyId(party)!, seq);
  }

  /**
   * Home side: appends relayed sends with the normal send path and resolves once each message is
   * enqueued back to the access cell that relayed it, so that the inbox's mark moves only after
   * that: a crash in between makes the access cell resend, and the resend finds the cmid.
   */
  async applySends(source: string, sends: ReadonlyArray<CrossCellEntryOf<'send'>>): Promise<void> {
    const { tenant, conv } = sends[0]!;
    const { merchant, customer } = parseConversationId(conv)!;
    await this.context.host.whenSettled(tenant, merchant);
    if (!this.context.host.hosts(tenant, merchant)) {
      // The merchant moved away: pass the sends on to its new home rather than refuse them; its
      // fan-out reaches the access cell through the customer's location, which answers `sent`.
      // Each keeps the access cell it came from as its origin: this cell holds no device of
      // the customer, and a home that took it for the customer's cell would send the message
      // (and all that follow) here instead of to the customer.
      const home = this.context.cluster.homeCellOf(tenant, merchant);
      if (home !== undefined && home !== this.context.cluster.selfCellId) {
        const passedOn = sends.map((send) => ({ key: `send/${tenant}/${conv}`, payload: { ...send, origin: send.origin ?? source } }));
        await this.context.cluster.enqueue(home, passedOn);
        return;
      }
      await this.rejectAtOrigins(source, sends, new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} is not hosted by cell ${this.context.cluster.selfCellId}`));
      return;
    }
    const foreign = sends.filter((send) => send.role !== 'customer' || send.user !== customer);
    if (foreign.length > 0) await this.rejectAtOrigins(source, foreign, new CellError(ErrorCode.ConversationForbidden, `the sender is not a party to conversation ${conv}`));
    const accepted = sends.filter((send) => !foreign.includes(send));
    if (accepted.length === 0) return;
    try {
      await this.context.host.whenAllowed(tenant, conv);
    } catch (error) {
      // A customer its merchant blocked: refused at the cell that relayed the sends, for good.
      if (!(error instanceof CellError) || error.code !== ErrorCode.CustomerBlocked) throw error;
      await this.rejectAtOrigins(source, accepted, error);
      return;
    }
    if (this.context.host.isDraining()) throw new CellError(ErrorCode.ShuttingDown, 'this cell is shutting down');
    const sendKeys = accepted.map((send) => relayedSendKey(tenant, conv, conversationParty(conv, send.role, send.user), send.cmid));
    const origins = accepted.map((send) => send.origin ?? source);
    sendKeys.forEach((key, index) => this.origins.set(key, origins[index]!));
    try {
      // Appended in one go: the log sequences them in this order and writes them together.
      const outcomes = await Promise.allSettled(
        accepted.map((send) =>
          this.context.log.append({ tenant, conv, from: send.user, role: send.role, device: send.device, cmid: send.cmid, body: send.body }),
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
  async applyRead(source: string, entry: CrossCellEntryOf<'read'>): Promise<void> {
    const { merchant, customer } = parseConversationId(entry.conv)!;
    if (!this.context.host.hosts(entry.tenant, merchant) || entry.user !== customer) {
      this.context.drop(source, `read/${entry.tenant}/${entry.conv}`, 'read of a conversation not hosted here, or by a non-party');
      return;
    }
    // The reader's cell holds a device of theirs: it gets the receipt, among others.
    this.fanOut.follow(entry.tenant, entry.user, source);
    try {
      await this.context.host.markRead(entry.tenant, entry.conv, partyId({ role: 'customer', user: entry.user }), entry.seq);
    } catch (error) {
      if (!(error instanceof CellError) || error.code !== ErrorCode.SeqOutOfRange) throw error;
      this.context.drop(source, `read/${entry.tenant}/${entry.conv}`, 'read beyond the conversation');
    }
  }

  /**
   * Home side: a customer's `close` or `rate` relayed from an access cell, applied at the desk
   * after the sends before it, and answered to that cell (after the system message it wrote).
   * A refusal of the desk (nothing to close, rated already, no desk) is the answer; a transient
   * failure (the store, a desk still being read, this cell draining) rejects, and the source
   * retries the batch. A request applied already (the batch failed further on and came again)
   * gets its first answer again rather than a second close; after a restart of this cell it is
   * applied again, which a `close` naming its consultation makes harmless.
   */
  async applyDeskAction(source: string, entry: CrossCellEntryOf<'desk'>): Promise<void> {
    const { tenant, conv, request } = entry;
    const { merchant, customer } = parseConversationId(conv)!;
    const origin = entry.origin ?? source;
    await this.context.host.whenSettled(tenant, merchant);
    if (!this.context.host.hosts(tenant, merchant)) {
      // The merchant moved away: its new home answers the access cell (as for sends).
      const home = this.context.cluster.homeCellOf(tenant, merchant);
      if (home !== undefined && home !== this.context.cluster.selfCellId) {
        await this.context.cluster.enqueue(home, [crossCellEntry({ ...entry, origin })]);
        return;
      }
    }
    if (entry.user !== customer) {
      this.context.drop(source, `desk/${tenant}/${conv}`, 'a desk request by a non-party');
      return;
    }
    const key = `${origin}/${request}`;
    let refusal = this.deskAnswers.get(key);
    if (refusal === undefined) {
      refusal = await this.applyAtDesk(tenant, conv, customer, entry);
      this.deskAnswers.set(key, refusal);
      while (this.deskAnswers.size > this.context.settings.maxRelayedSends) this.deskAnswers.delete(this.deskAnswers.keys().next().value!);
    }
    const answer: CrossCellEntryOf<'desk-answer'> = { v: 1, kind: 'desk-answer', tenant, conv, request };
    if (refusal !== null) {
      answer.code = refusal.code;
      answer.message = refusal.message;
    }
    // The merchant moved to the cell that relayed the request, and another cell passed it back.
    if (origin === this.context.cluster.selfCellId) this.answerHere(answer);
    else await this.fanOut.answer(tenant, answer, origin);
  }

  /** The desk's refusal of the request, or null once applied; rejects when it may work later. */
  private async applyAtDesk(tenant: string, conv: string, customer: string, entry: CrossCellEntryOf<'desk'>): Promise<CellError | null> {
    if (this.context.host.isDraining()) throw new CellError(ErrorCode.ShuttingDown, 'this cell is shutting down');
    const { merchant } = parseConversationId(conv)!;
    if (!this.context.host.hosts(tenant, merchant)) return new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} is not hosted by cell ${this.context.cluster.selfCellId}`);
    try {
      await this.context.host.applyDeskAction(tenant, conv, customer, entry.action);
      return null;
    } catch (error) {
      if (!(error instanceof CellError) || TRANSIENT_CODES.has(error.code)) throw error;
      this.context.logger.info({ source: entry.origin, conv, code: error.code }, 'the desk refused a request relayed from another cell');
      return error;
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
    this.context.logger.warn({ source, code: error.code, count: sends.length }, 'refusing relayed sends');
    await this.context.cluster.enqueue(source, entries);
  }
}

/** Refusals that may not hold later: the request is tried again rather than answered with them. */
const TRANSIENT_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCode.StoreUnavailable, ErrorCode.ShuttingDown]);

function isIdempotencyConflict(error: unknown): boolean {
  return error instanceof CellError && error.code === ErrorCode.IdempotencyConflict;
}
