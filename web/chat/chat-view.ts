// Renders the customer chat's state (chat-session.ts) into the page (index.html) and turns the
// person's input into calls of the session. Each message item carries its state in data
// attributes (`data-seq`, `data-cmid`, `data-state`: sending, waiting, failed, sent, read), which
// the browser test reads as a person reads the ticks.
import type { ChatMessage, DeskNotice } from '../../client/browser.js';
import { attachmentView } from '../shared/attachment-view.js';
import { wireComposer } from '../shared/composer.js';
import { byId, h, keepingFocus, replaceChildren, timeOf } from '../shared/dom.js';
import { progressOf, tickView } from '../shared/message-tick.js';
import type { ChatSession, ChatState, PendingSend } from './chat-session.js';

export class ChatView {
  private readonly log = byId<HTMLElement>('log');
  private readonly list = byId<HTMLOListElement>('messages');
  private readonly older = byId<HTMLButtonElement>('older');
  private readonly text = byId<HTMLTextAreaElement>('text');
  private readonly sendButton = byId<HTMLButtonElement>('send');
  private readonly rating = byId<HTMLFormElement>('rating');
  private typingTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly session: ChatSession,
    merchant: string,
  ) {
    byId('title').textContent = `Chat with ${merchant}`;
    document.title = `Chat with ${merchant}`;
    wireComposer(this.text, session);
    this.older.addEventListener('click', () => void this.loadOlder());
    this.log.addEventListener('scroll', () => {
      if (this.log.scrollTop === 0 && session.state.hasMore) void this.loadOlder();
    });
    this.rating.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(this.rating);
      void session.rate(Number(data.get('score') ?? 5), String(data.get('comment') ?? '')).catch(() => {
        byId('banner').textContent = 'The rating could not be sent. Try again.';
      });
    });
    document.addEventListener('visibilitychange', () => this.readIfVisible());
    session.onChange(() => this.render());
    this.render();
  }

  /** Loads older messages and keeps the ones on screen where they were. */
  private async loadOlder(): Promise<void> {
    const before = this.log.scrollHeight - this.log.scrollTop;
    await this.session.loadOlder();
    this.log.scrollTop = this.log.scrollHeight - before;
  }

  private render(): void {
    const { state } = this.session;
    // Drawing the list again empties it for a moment, which scrolls the log to its top: the reader's place is put back after.
    const { scrollTop } = this.log;
    const atBottom = this.log.scrollHeight - scrollTop - this.log.clientHeight < 40;
    this.renderHeader(state);
    this.renderMessages(state);
    this.renderTyping(state);
    this.rating.hidden = state.rateable === undefined;
    const usable = state.conv !== undefined && state.fatal === undefined;
    this.text.disabled = !usable;
    this.sendButton.disabled = !usable;
    byId<HTMLInputElement>('file').disabled = !usable;
    this.log.scrollTop = atBottom ? this.log.scrollHeight : scrollTop;
    this.readIfVisible();
  }

  private renderHeader(state: ChatState): void {
    const consultation = state.consultation;
    const agent = byId('agent');
    if (consultation?.state === 'assigned') agent.textContent = `You are chatting with ${consultation.agentName ?? consultation.agent ?? 'an agent'}`;
    else if (consultation?.state === 'waiting') agent.textContent = 'Waiting for an agent';
    else agent.textContent = state.conv === undefined ? 'Connecting…' : 'Write to us: an agent will answer';

    const queue = byId('queue');
    queue.hidden = consultation?.state !== 'waiting';
    if (consultation?.state === 'waiting') {
      const wait = consultation.estimatedWaitMs === undefined ? 'no estimate yet' : `about ${Math.max(1, Math.round(consultation.estimatedWaitMs / 60_000))} min`;
      queue.textContent = `You are number ${consultation.position ?? '?'} in the queue (estimated wait: ${wait}).`;
      queue.dataset['position'] = String(consultation.position ?? '');
    }

    const banner = byId('banner');
    const problem =
      state.fatal ??
      (state.connection === 'reconnecting' || (state.connection === 'connecting' && state.conv !== undefined)
        ? 'Connection lost. Reconnecting… Messages you write now are sent when the connection is back.'
        : undefined);
    banner.hidden = problem === undefined;
    banner.textContent = problem ?? '';
    banner.className = state.fatal === undefined ? 'banner' : 'banner fatal';
  }

  private renderMessages(state: ChatState): void {
    this.older.hidden = !state.hasMore;
    this.older.disabled = state.loadingOlder;
    this.older.textContent = state.loadingOlder ? 'Loading…' : 'Load earlier messages';
    const stored = [...state.messages.values()].sort((left, right) => left.seq - right.seq);
    const offline = state.connection !== 'open';
    keepingFocus(this.list, () =>
      replaceChildren(
        this.list,
        ...stored.map((message) => this.storedItem(message, state)),
        ...state.pending.map((pending) => this.pendingItem(pending, offline)),
      ),
    );
  }

  private storedItem(message: ChatMessage, state: ChatState): HTMLLIElement {
    if (message.role === 'system') {
      return h('li', { class: 'msg system', 'data-seq': message.seq }, noticeText(message.event), ' ', h('time', {}, timeOf(message.ts)));
    }
    const mine = message.role === 'customer';
    const progress = progressOf(message.seq, state.agentDeliveredSeq, state.agentReadSeq);
    return h(
      'li',
      { class: mine ? 'msg mine' : 'msg theirs', 'data-seq': message.seq, 'data-cmid': message.cmid, 'data-state': mine ? progress : undefined },
      mine ? null : h('span', { class: 'who' }, state.agentNames.get(message.from) ?? message.from),
      message.body === '' ? null : h('p', { class: 'body' }, message.body),
      ...(message.attachments ?? []).map((file) => attachmentView(file, this.session.attachmentUrl(file.id))),
      h('span', { class: 'meta' }, h('time', {}, timeOf(message.ts)), mine ? tickView(progress) : null),
    );
  }

  private pendingItem(pending: PendingSend, offline: boolean): HTMLLIElement {
    const state = pending.state === 'failed' ? 'failed' : offline ? 'waiting' : 'sending';
    const label = state === 'failed' ? `Not sent: ${pending.error ?? 'refused'}` : state === 'waiting' ? 'Waiting for the connection…' : 'Sending…';
    return h(
      'li',
      { class: `msg mine ${state}`, 'data-cmid': pending.cmid, 'data-state': state },
      h('p', { class: 'body' }, pending.body),
      h(
        'span',
        { class: 'meta' },
        h('time', {}, timeOf(pending.atMs)),
        h('span', { class: 'tick' }, ` ${label}`),
        state === 'failed' ? h('button', { type: 'button', class: 'link', onclick: () => this.session.discard(pending.cmid) }, 'Dismiss') : null,
      ),
    );
  }

  private renderTyping(state: ChatState): void {
    const typing = byId('typing');
    const remainingMs = state.agentTypingUntilMs - Date.now(); // real-clock-ok: a page shows wall time
    typing.textContent = remainingMs > 0 ? `${state.consultation?.agentName ?? 'The agent'} is typing…` : '';
    clearTimeout(this.typingTimer);
    if (remainingMs > 0) this.typingTimer = setTimeout(() => this.render(), remainingMs);
  }

  private readIfVisible(): void {
    if (document.visibilityState === 'visible') this.session.markRead();
  }
}

/** The line a system message shows. */
export function noticeText(event: DeskNotice | undefined): string {
  switch (event?.type) {
    case 'queued':
      return 'You are in the queue: the next free agent will answer.';
    case 'assigned':
      return `${event.name ?? event.agent} joined the conversation.`;
    case 'transferred':
      return event.agent === undefined ? 'You were passed on to another team; please wait.' : `You were passed on to ${event.name ?? event.agent}.`;
    case 'released':
      return 'Your agent left; the next free agent will answer.';
    case 'closed':
      return event.by === 'inactivity' ? 'The conversation was closed after a while without messages.' : 'The conversation was closed.';
    case 'rated':
      return `You rated the conversation ${event.score} of 5.`;
    default:
      return 'The conversation changed.';
  }
}
