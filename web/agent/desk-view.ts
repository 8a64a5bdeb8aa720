// Renders the agent workbench (desk-session.ts) into the page (index.html, served as
// /app/agent.html) and turns the agent's input into calls of the session. List items and
// messages carry data attributes (`data-conv`, `data-unread`, `data-seq`, `data-state`) that the
// browser test reads as an agent reads the badges and ticks.
import type { ChatMessage, ConsultationView } from '../../client/browser.js';
import { attachmentView } from '../shared/attachment-view.js';
import { wireComposer } from '../shared/composer.js';
import { byId, h, keepingFocus, replaceChildren, timeOf } from '../shared/dom.js';
import { progressOf, tickView } from '../shared/message-tick.js';
import { earlierConsultations } from './earlier-consultations.js';
import type { DeskSession, DeskState, Thread } from './desk-session.js';

/** The waiting times in the lists move on without any frame: they are drawn again this often. */
const CLOCK_REFRESH_MS = 15_000;

export class DeskView {
  private readonly log = byId<HTMLElement>('log');
  private readonly text = byId<HTMLTextAreaElement>('text');
  private typingTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly session: DeskSession) {
    byId<HTMLFormElement>('login').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = (id: string): string => byId<HTMLInputElement>(id).value.trim();
      void session.start({ tenant: value('tenant'), merchant: value('merchant'), agent: value('agent'), password: byId<HTMLInputElement>('password').value });
    });
    byId<HTMLSelectElement>('status').addEventListener('change', (event) => void session.setStatus((event.target as HTMLSelectElement).value as 'online' | 'busy' | 'away'));
    byId('logout').addEventListener('click', () => void session.logout().then(() => window.location.reload()));
    wireComposer(this.text, session);
    byId('older').addEventListener('click', () => void session.loadOlder());
    byId<HTMLFormElement>('transfer').addEventListener('submit', (event) => {
      event.preventDefault();
      const choice = byId<HTMLSelectElement>('transfer-to').value;
      if (choice.startsWith('agent:')) void session.transfer({ agent: choice.slice('agent:'.length) });
      else if (choice.startsWith('group:')) void session.transfer({ group: choice.slice('group:'.length) });
    });
    byId('close').addEventListener('click', () => void session.closeConsultation());
    byId('notify').addEventListener('click', () => void Notification.requestPermission().then(() => this.render()));
    document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && session.markRead());
    session.onChange(() => this.render());
    setInterval(() => this.render(), CLOCK_REFRESH_MS);
    this.render();
  }

  private render(): void {
    const { state } = this.session;
    const loggedIn = state.login !== undefined;
    byId('login').hidden = loggedIn;
    byId('workspace').hidden = !loggedIn;
    byId('controls').hidden = !loggedIn;
    byId('who').textContent = loggedIn ? `${state.login?.agent} at ${state.login?.merchant}` : '';
    const status = byId<HTMLSelectElement>('status');
    if (status.value !== state.status && state.status !== 'offline') status.value = state.status;

    const banner = byId('banner');
    const problem = state.fatal ?? state.notice ?? (state.connection === 'reconnecting' ? 'Connection lost. Reconnecting…' : undefined);
    banner.hidden = problem === undefined;
    banner.textContent = problem ?? '';
    banner.className = state.fatal === undefined && state.notice === undefined ? 'banner' : 'banner fatal';
    if (!loggedIn) return;
    const others = this.session.others();
    const queue = this.session.queue();

    const lists = byId('workspace');
    keepingFocus(lists, () => {
      replaceChildren(byId('mine'), ...this.session.mine().map((entry) => this.listItem(entry, state)));
      replaceChildren(byId('others'), ...others.map((entry) => this.listItem(entry, state)));
      replaceChildren(byId('queue'), ...(queue.length === 0 ? [h('li', { class: 'none' }, 'Nobody is waiting.')] : queue.map((entry) => this.listItem(entry, state))));
      this.renderThread(state);
    });
    byId('others-title').hidden = others.length === 0;
    byId('notify').hidden = typeof Notification === 'undefined' || Notification.permission !== 'default';
  }

  private listItem(entry: ConsultationView, state: DeskState): HTMLLIElement {
    const thread = state.threads.get(entry.conv);
    const unread = thread?.unread ?? 0;
    const customer = entry.conv.slice(entry.conv.indexOf(':') + 1);
    const waited =
      entry.state === 'waiting'
        ? `#${entry.position ?? '?'} · waiting ${sinceText(entry.openedAtMs)}`
        : `${entry.agent === state.login?.agent ? '' : `${entry.agentName ?? entry.agent} · `}open ${sinceText(entry.openedAtMs)}`;
    return h(
      'li',
      { 'data-conv': entry.conv, 'data-unread': unread },
      h(
        'button',
        { type: 'button', 'data-focus': `list:${entry.conv}`, class: entry.conv === state.selected ? 'item selected' : 'item', 'aria-current': entry.conv === state.selected ? 'true' : undefined, onclick: () => void this.session.select(entry.conv) },
        h('span', { class: 'name' }, customer),
        h('span', { class: 'detail' }, `${entry.group} · ${waited}`),
        unread > 0 ? h('span', { class: 'badge', 'aria-label': `${unread} unread` }, String(unread)) : null,
      ),
    );
  }

  private renderThread(state: DeskState): void {
    const conv = state.selected;
    const thread = conv === undefined ? undefined : state.threads.get(conv);
    byId('empty').hidden = thread !== undefined;
    byId('thread').hidden = thread === undefined;
    if (conv === undefined || thread === undefined) return;
    const consultation = state.consultations.get(conv);
    const mine = consultation?.state === 'assigned' && consultation.agent === state.login?.agent;
    const whose = consultation?.state === 'assigned' && !mine ? ` (${consultation.agentName ?? consultation.agent}'s)` : '';
    byId('customer').textContent = `${conv.slice(conv.indexOf(':') + 1)}${consultation === undefined ? ' (closed)' : consultation.state === 'waiting' ? ' (waiting)' : whose}`;
    // Only the assigned agent writes; a supervisor may also close or transfer a colleague's (the desk refuses others).
    byId<HTMLButtonElement>('send').disabled = !mine;
    byId<HTMLInputElement>('file').disabled = !mine;
    this.text.disabled = !mine;
    byId<HTMLButtonElement>('close').disabled = consultation?.state !== 'assigned';
    byId('transfer').hidden = consultation?.state !== 'assigned';
    this.renderTransferTargets(state);

    // Drawing the list again empties it for a moment, which scrolls the log to its top: the reader's place is put back after.
    const { scrollTop } = this.log;
    const atBottom = this.log.scrollHeight - scrollTop - this.log.clientHeight < 40;
    byId('older').hidden = !thread.hasMore;
    const messages = [...thread.messages.values()].sort((left, right) => left.seq - right.seq);
    replaceChildren(byId('messages'), ...messages.map((message) => messageItem(message, thread, (id) => this.session.attachmentUrl(conv, id))));
    this.log.scrollTop = atBottom ? this.log.scrollHeight : scrollTop;
    this.renderEarlier(messages, consultation?.consultation);

    const typing = byId('typing');
    const remainingMs = thread.customerTypingUntilMs - Date.now(); // real-clock-ok: a page shows wall time
    typing.textContent = remainingMs > 0 ? 'The customer is typing…' : '';
    clearTimeout(this.typingTimer);
    if (remainingMs > 0) this.typingTimer = setTimeout(() => this.render(), remainingMs);
  }

  /** The customer's closed consultations in the history loaded, each a button to its first message. */
  private renderEarlier(messages: ChatMessage[], open: string | undefined): void {
    const earlier = earlierConsultations(messages, open);
    byId('earlier').hidden = earlier.length === 0;
    byId('earlier-title').textContent = `Earlier consultations (${earlier.length}${byId('older').hidden ? '' : ' so far; load earlier messages for more'})`;
    const items = earlier.map((entry) => {
      const when = new Date(entry.openedTs).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
      const served = entry.agents.length === 0 ? 'no agent' : entry.agents.join(', then ');
      const closedBy = entry.closedBy === 'inactivity' ? 'closed for inactivity' : `closed by the ${entry.closedBy}`;
      const text = `${when}: ${served}; ${closedBy}${entry.score === undefined ? '' : `; rated ${entry.score} of 5`}`;
      const jump = (): void => document.querySelector(`#messages li[data-seq="${entry.firstSeq}"]`)?.scrollIntoView({ block: 'start' });
      return h('li', { 'data-consultation': entry.id }, h('button', { type: 'button', class: 'link', 'data-focus': `earlier:${entry.id}`, onclick: jump }, text));
    });
    const list = byId('earlier-list');
    keepingFocus(list, () => replaceChildren(list, ...items));
  }

  /** Colleagues online with room, and the merchant's groups. */
  private renderTransferTargets(state: DeskState): void {
    const select = byId<HTMLSelectElement>('transfer-to');
    const me = state.login?.agent;
    const agents = state.agents.filter((agent) => agent.id !== me && agent.status === 'online' && agent.open < agent.capacity);
    const groups = [...new Set(state.agents.flatMap((agent) => agent.groups))].sort();
    const options = [...agents.map((agent) => [`agent:${agent.id}`, agent.name]), ...groups.map((group) => [`group:${group}`, `Group ${group}`])];
    const wanted = options.map(([value]) => value).join('\n');
    if (select.dataset['options'] === wanted) return;
    select.dataset['options'] = wanted;
    replaceChildren(select, ...options.map(([value, label]) => h('option', { value }, label)));
  }
}

function messageItem(message: ChatMessage, thread: Thread, urlOf: (id: string) => string | undefined): HTMLLIElement {
  if (message.role === 'system') return h('li', { class: 'msg system', 'data-seq': message.seq }, message.body, ' ', h('time', {}, timeOf(message.ts)));
  const ours = message.role === 'agent';
  const progress = progressOf(message.seq, thread.customerDeliveredSeq, thread.customerReadSeq);
  return h(
    'li',
    { class: ours ? 'msg mine' : 'msg theirs', 'data-seq': message.seq, 'data-state': ours ? progress : undefined },
    h('span', { class: 'who' }, message.from),
    message.body === '' ? null : h('p', { class: 'body' }, message.body),
    ...(message.attachments ?? []).map((file) => attachmentView(file, urlOf(file.id))),
    h('span', { class: 'meta' }, h('time', {}, timeOf(message.ts)), ours ? tickView(progress) : null),
  );
}

/** "4 min" since `ms`. */
function sinceText(ms: number): string {
  const minutes = Math.floor((Date.now() - ms) / 60_000); // real-clock-ok: a page shows wall time
  return minutes < 1 ? 'just now' : minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
