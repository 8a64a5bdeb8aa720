// Ordered, once-only delivery per conversation: keeps each conversation's cursor (the highest
// seq delivered with everything before it), drops repeats, holds messages that arrive past a
// gap, fetches the missing ones with history (skipping what the cell cannot give), and tells
// when the catch-up of a session is complete (`synced`).
import type { ChatMessage } from '../cell/protocol/frames.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import { backoffDelayMs } from './backoff.js';
import { cancelTimer } from './cancel-timer.js';
import type { ClientEvents } from './client-types.js';
import type { BackoffSettings } from './defaults.js';
import type { TypedEmitter } from './emitter.js';
import { ClientError, ClientErrorCode, messageOf } from './errors.js';
import { chatMessageOf } from './server-frames.js';
import type { SessionLink } from './session-link.js';
import type { ClientSettings } from './settings.js';

/** The most messages one history request may ask for (the protocol's bound). */
const HISTORY_PAGE_LIMIT = 200;

export interface SequencerPorts {
  readonly clock: Clock;
  readonly random: Random;
  readonly backoff: BackoffSettings;
  readonly settings: Pick<ClientSettings, 'maxBufferedMessages' | 'gapWaitMs' | 'maxGapFillFailures'>;
  readonly link: Pick<SessionLink, 'session'>;
  /** Where `message`, `synced` and gap `error` events go. */
  readonly events: TypedEmitter<ClientEvents>;
  /** Asks the cell for the messages of `conv` below `before`, at most `limit` of them. */
  fetchHistory(conv: string, before: number, limit: number): Promise<{ reply: { messages: ChatMessage[]; hasMore: boolean } }>;
  /** A conversation's cursor moved other than by a message the cell delivered: an ack may be due. */
  cursorMoved(conv: string): void;
}

interface HeldMessage {
  readonly message: ChatMessage;
  /** Pushed by the cell (as opposed to learnt from this device's own `sent`). */
  pushed: boolean;
}

interface ConversationState {
  readonly conv: string;
  /** Highest seq delivered with all before it; undefined until the client learns a baseline. */
  cursor: number | undefined;
  /** Messages past a gap, waiting for the gap to close. */
  readonly held: Map<number, HeldMessage>;
  /** The `before` of the history request in flight for the gap, if one is. */
  fillBefore: number | undefined;
  fillFailures: number;
  fillRetryTimer: TimerHandle | undefined;
  gapCheckTimer: TimerHandle | undefined;
  /** A switch of cells found no cursor to look past: the look is owed once the baseline is known (advance). */
  lookPastOwed: boolean;
}

export class Sequencer {
  private readonly conversations = new Map<string, ConversationState>();
  private heldCount = 0;
  private fillsInFlight = 0;
  private sessionSynced = false;
  private syncedPending = false;
  /** Set once the client stopped: nothing is delivered any more. */
  private stopped = false;

  /** `initialCursors`: conversation to the highest seq the app already handled. */
  constructor(
    private readonly ports: SequencerPorts,
    initialCursors: Readonly<Record<string, number>>,
  ) {
    for (const [conv, seq] of Object.entries(initialCursors)) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`initial cursor of ${conv} must be an integer >= 0, got ${seq}`);
      this.conversation(conv).cursor = seq;
    }
  }

  /** Conversation to the highest seq delivered with everything before it. */
  cursors(): Record<string, number> {
    const result: Record<string, number> = {};
    for (const conversation of this.conversations.values()) {
      if (conversation.cursor !== undefined) result[conversation.conv] = conversation.cursor;
    }
    return result;
  }

  cursorOf(conv: string): number | undefined {
    return this.conversations.get(conv)?.cursor;
  }

  /**
   * Takes a message the cell delivered: `pushed`, or this device's own send learnt from its
   * `sent`. Delivers it in order (with what it makes contiguous), drops a repeat, or holds it.
   */
  accept(message: ChatMessage, pushed: boolean): void {
    const conversation = this.conversation(message.conv);
    if (conversation.cursor === undefined) {
      if (!pushed) {
        // Without a baseline an own message cannot tell whether earlier ones are still to be
        // pushed (the catch-up may not have reached this conversation yet); it waits for them.
        this.hold(conversation, message, false);
        this.scheduleGapCheck(conversation);
        return;
      }
      // The cell pushes from this device's delivery cursor: the first push is the baseline.
      conversation.cursor = Math.min(message.seq, this.lowestHeld(conversation) ?? message.seq) - 1;
    }
    if (message.seq <= conversation.cursor) return;
    if (message.seq === conversation.cursor + 1) this.deliver(conversation, message);
    else this.hold(conversation, message, pushed);
    this.advance(conversation);
  }

  /** A session opened: gaps that the cell will not push again are fetched. */
  resume(): void {
    for (const conversation of this.conversations.values()) {
      if (conversation.held.size > 0) this.advance(conversation);
    }
  }

  /**
   * The session opened on another cell than the last one. A cell pushes only what it holds, and
   * a cell new to this device may hold no copy of a conversation whose merchant lives elsewhere
   * (it learns of one from the next message in it): each known conversation is asked once for
   * what lies past its cursor, which also makes the new cell keep a copy of it from now on.
   */
  lookPastCursors(): void {
    for (const conversation of this.conversations.values()) this.lookPastCursor(conversation);
  }

  /** The cell finished the catch-up of the session; `synced` follows once its gaps are filled. */
  onSynced(): void {
    this.sessionSynced = true;
    for (const conversation of this.conversations.values()) {
      if (conversation.held.size > 0) this.advance(conversation);
    }
    this.syncedPending = true;
    this.maybeEmitSynced();
  }

  onSessionEnd(): void {
    this.sessionSynced = false;
    this.syncedPending = false;
  }

  /** The client stopped: timers are cancelled and nothing more is delivered. */
  stop(): void {
    this.stopped = true;
    for (const conversation of this.conversations.values()) {
      conversation.fillRetryTimer = cancelTimer(conversation.fillRetryTimer);
      conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
    }
  }

  private conversation(conv: string): ConversationState {
    let conversation = this.conversations.get(conv);
    if (conversation === undefined) {
      conversation = {
        conv,
        cursor: undefined,
        held: new Map(),
        fillBefore: undefined,
        fillFailures: 0,
        fillRetryTimer: undefined,
        gapCheckTimer: undefined,
        lookPastOwed: false,
      };
      this.conversations.set(conv, conversation);
    }
    return conversation;
  }

  /** Delivers what became contiguous, then sees to what is still missing. */
  private advance(conversation: ConversationState): void {
    // Each delivery moves the cursor on by one, so this ends after at most `held.size` rounds.
    for (;;) {
      const cursor = conversation.cursor;
      const next = cursor === undefined ? undefined : conversation.held.get(cursor + 1);
      if (next === undefined) break;
      this.deliver(conversation, next.message);
    }
    if (conversation.lookPastOwed && conversation.cursor !== undefined) this.lookPastCursor(conversation);
    if (conversation.held.size === 0) {
      conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
      return;
    }
    // The cell's pushes have no gaps, so messages missing before a pushed one will not be
    // pushed: fetch them now. Before an own message they may still come; give them a while.
    if (this.holdsPushed(conversation)) this.fillGap(conversation);
    else this.scheduleGapCheck(conversation);
  }

  private deliver(conversation: ConversationState, message: ChatMessage): void {
    conversation.cursor = message.seq;
    if (conversation.held.delete(message.seq)) this.heldCount--;
    if (!this.stopped) this.ports.events.emit('message', message);
  }

  private hold(conversation: ConversationState, message: ChatMessage, pushed: boolean): void {
    const existing = conversation.held.get(message.seq);
    if (existing !== undefined) {
      existing.pushed ||= pushed;
      return;
    }
    // Past the bound the message is dropped unacknowledged: the cell pushes it again after a
    // reconnect, and a later gap fill fetches it.
    if (this.heldCount >= this.ports.settings.maxBufferedMessages) return;
    conversation.held.set(message.seq, { message, pushed });
    this.heldCount++;
  }

  private lowestHeld(conversation: ConversationState): number | undefined {
    let lowest: number | undefined;
    for (const seq of conversation.held.keys()) if (lowest === undefined || seq < lowest) lowest = seq;
    return lowest;
  }

  private holdsPushed(conversation: ConversationState): boolean {
    for (const held of conversation.held.values()) if (held.pushed) return true;
    return false;
  }

  /** Fetches the page right after the cursor; a full page asks for the next one. */
  private lookPastCursor(conversation: ConversationState): void {
    const cursor = conversation.cursor;
    if (this.stopped) return;
    // A conversation known only from this device's own send (its `sent` came from the previous
    // cell, before any push gave a baseline) has no cursor yet. The new cell may hold no copy of
    // it, so nothing it stores later would come here: the look waits for the baseline, which the
    // gap check or a push sets (advance), instead of being dropped.
    conversation.lookPastOwed = cursor === undefined;
    if (cursor === undefined || conversation.fillBefore !== undefined || conversation.fillRetryTimer !== undefined) return;
    const before = cursor + 1 + HISTORY_PAGE_LIMIT;
    conversation.fillBefore = before;
    this.fillsInFlight++;
    this.ports.fetchHistory(conversation.conv, before, HISTORY_PAGE_LIMIT).then(
      ({ reply }) => {
        this.endFill(conversation);
        if (this.stopped) return;
        const page = reply.messages.filter((message) => message.conv === conversation.conv).map(chatMessageOf);
        const delivered = this.deliverContiguous(conversation, page);
        // What does not follow the cursor (retention deleted between) is held: the gap fill skips to it.
        for (const message of page) if (message.seq > (conversation.cursor ?? 0)) this.hold(conversation, message, true);
        this.advance(conversation);
        if (delivered > 0) this.ports.cursorMoved(conversation.conv);
        if (delivered === HISTORY_PAGE_LIMIT) this.lookPastCursor(conversation);
        this.maybeEmitSynced();
      },
      // The conversation's next message, or the next switch, tells what this could not.
      () => {
        this.endFill(conversation);
        this.maybeEmitSynced();
      },
    );
  }

  /** Fetches the next page of missing messages below the lowest held one. */
  private fillGap(conversation: ConversationState): void {
    if (conversation.fillBefore !== undefined || conversation.fillRetryTimer !== undefined) return;
    const cursor = conversation.cursor;
    const first = this.lowestHeld(conversation);
    if (cursor === undefined || first === undefined || first <= cursor + 1) return;
    conversation.gapCheckTimer = cancelTimer(conversation.gapCheckTimer);
    // History pages count back from `before`; asking for exactly the next `limit` seqs makes the
    // page start right after the cursor, so pages can be delivered as they come.
    const limit = Math.min(HISTORY_PAGE_LIMIT, first - cursor - 1);
    const before = cursor + 1 + limit;
    conversation.fillBefore = before;
    this.fillsInFlight++;
    this.ports.fetchHistory(conversation.conv, before, limit).then(
      ({ reply }) => this.onGapPage(conversation, reply.messages, reply.hasMore),
      (error: unknown) => this.onGapFailure(conversation, error),
    );
  }

  private onGapPage(conversation: ConversationState, messages: ChatMessage[], hasMore: boolean): void {
    const before = conversation.fillBefore;
    this.endFill(conversation);
    if (this.stopped || before === undefined) return;
    const page = messages.filter((message) => message.conv === conversation.conv).map(chatMessageOf);
    const delivered = this.deliverContiguous(conversation, page);
    const cursor = conversation.cursor ?? 0;
    // A page cut short is held, and the fill goes on below it (advance, below).
    const cutShort = delivered === 0 && hasMore && this.holdCutShortPage(conversation, page, cursor);
    if (!cutShort && delivered === 0 && cursor + 1 < before) {
      // The cell has no message right after the cursor: skip to the next one it has.
      const next = page.find((message) => message.seq > cursor)?.seq ?? Math.min(this.lowestHeld(conversation) ?? before, before);
      this.skipTo(conversation, next - 1);
      this.deliverContiguous(conversation, page);
    }
    conversation.fillFailures = 0;
    this.advance(conversation);
    this.ports.cursorMoved(conversation.conv);
    this.maybeEmitSynced();
  }

  /**
   * A page the cell cut short by its byte bound (docs/protocol.md, `history`) holds the newest
   * messages of the window asked for; the older ones exist. Holds it, so that the next fill asks
   * for what lies below; returns false when that made no progress (nothing new could be held).
   */
  private holdCutShortPage(conversation: ConversationState, page: ChatMessage[], cursor: number): boolean {
    const lowestBefore = this.lowestHeld(conversation) ?? Number.POSITIVE_INFINITY;
    for (const message of page) if (message.seq > cursor + 1) this.hold(conversation, message, true);
    return (this.lowestHeld(conversation) ?? Number.POSITIVE_INFINITY) < lowestBefore;
  }

  private deliverContiguous(conversation: ConversationState, page: ChatMessage[]): number {
    let delivered = 0;
    for (const message of page) {
      if (conversation.cursor !== undefined && message.seq === conversation.cursor + 1) {
        this.deliver(conversation, message);
        delivered++;
      }
    }
    return delivered;
  }

  private onGapFailure(conversation: ConversationState, failure: unknown): void {
    this.endFill(conversation);
    if (this.stopped) return;
    const error = failure instanceof ClientError ? failure : new ClientError(ClientErrorCode.ProtocolError, messageOf(failure));
    // Timing out while disconnected says nothing about the gap; the next session fills it.
    if (!(error.code === ClientErrorCode.RequestTimeout && this.ports.link.session === undefined)) {
      conversation.fillFailures++;
      this.ports.events.emit(
        'error',
        new ClientError(
          error.code,
          `fetching missing messages of ${conversation.conv} failed: ${error.message}`,
          { ...error.details, conv: conversation.conv },
          error,
        ),
      );
      if (conversation.fillFailures >= this.ports.settings.maxGapFillFailures) {
        // Holding on would stall delivery of this conversation, and through the unacknowledged
        // window, of all of them.
        conversation.fillFailures = 0;
        const first = this.lowestHeld(conversation);
        if (first !== undefined) this.skipTo(conversation, first - 1);
        this.advance(conversation);
        this.ports.cursorMoved(conversation.conv);
      } else {
        const delayMs = backoffDelayMs(this.ports.backoff, conversation.fillFailures, this.ports.random);
        conversation.fillRetryTimer = this.ports.clock.setTimer(delayMs, () => {
          conversation.fillRetryTimer = undefined;
          this.advance(conversation);
        });
      }
    }
    this.maybeEmitSynced();
  }

  private endFill(conversation: ConversationState): void {
    if (conversation.fillBefore === undefined) return;
    conversation.fillBefore = undefined;
    this.fillsInFlight--;
  }

  private skipTo(conversation: ConversationState, seq: number): void {
    const fromSeq = (conversation.cursor ?? 0) + 1;
    if (seq < fromSeq) return;
    this.ports.events.emit(
      'error',
      new ClientError(ClientErrorCode.GapUnfilled, `messages ${fromSeq}-${seq} of ${conversation.conv} could not be fetched`, {
        conv: conversation.conv,
        fromSeq,
        toSeq: seq,
      }),
    );
    conversation.cursor = seq;
    for (const held of [...conversation.held.keys()]) {
      if (held <= seq && conversation.held.delete(held)) this.heldCount--;
    }
  }

  /**
   * After the catch-up, an own message whose predecessors did not arrive within `gapWaitMs`
   * gets them fetched. Without a baseline the own message becomes the baseline instead: nothing
   * before it was pushed, so the cell considers this device past them.
   */
  private scheduleGapCheck(conversation: ConversationState): void {
    if (!this.sessionSynced || conversation.gapCheckTimer !== undefined || conversation.held.size === 0) return;
    conversation.gapCheckTimer = this.ports.clock.setTimer(this.ports.settings.gapWaitMs, () => {
      conversation.gapCheckTimer = undefined;
      const first = this.lowestHeld(conversation);
      if (first === undefined) return;
      conversation.cursor ??= first - 1;
      if (conversation.cursor + 1 === first) this.advance(conversation);
      else this.fillGap(conversation);
      this.ports.cursorMoved(conversation.conv);
    });
  }

  /** `synced` waits until gaps found during the catch-up are filled, so it means "all caught up". */
  private maybeEmitSynced(): void {
    const session = this.ports.link.session;
    if (!this.syncedPending || session === undefined || this.fillsInFlight > 0) return;
    this.syncedPending = false;
    this.ports.events.emit('synced', { session: session.session });
  }
}
