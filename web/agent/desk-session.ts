// The agent workbench's state, kept from the browser SDK's events: the agent's status, the
// merchant's desk (agents, consultations, the queue), one thread per conversation the agent
// serves (messages, unread count, the customer's read cursor, typing) and the one on screen.
// The view (desk-view.ts) renders it after every change.
import {
  CellmeshClient,
  loginTokenSource,
  type AgentStatus,
  type AgentTokenSource,
  type ChatMessage,
  type ConnectionState,
  type ConsultationView,
  type DeskView,
  type TransferTarget,
} from '../../client/browser.js';
import { attachmentUrl } from '../shared/attachment-view.js';
import { TYPING_EVERY_MS, TYPING_SHOWN_MS } from '../shared/typing.js';
import { connectTarget, describeError, pageClient } from '../shared/connect-target.js';

export interface Login {
  tenant: string;
  merchant: string;
  agent: string;
  password: string;
}

export interface Thread {
  conv: string;
  messages: Map<number, ChatMessage>;
  hasMore: boolean;
  loaded: boolean;
  /** Customer messages after what this agent read. */
  unread: number;
  customerReadSeq: number;
  /** The highest seq some device of the customer has (a `delivered` frame; reads imply it too). */
  customerDeliveredSeq: number;
  customerTypingUntilMs: number;
}

export interface DeskState {
  connection: ConnectionState;
  login: Login | undefined;
  status: AgentStatus;
  agents: DeskView['agents'];
  /** Open consultations of the merchant by conversation. */
  consultations: Map<string, ConsultationView>;
  threads: Map<string, Thread>;
  selected: string | undefined;
  /** The last refusal of an action (a transfer to a busy agent...), shown until the next action. */
  notice: string | undefined;
  fatal: string | undefined;
}

const HISTORY_PAGE = 50;
/** The desk's agents and loads are asked again this long after the last consultation change. */
const DESK_REFRESH_DELAY_MS = 300;

export class DeskSession {
  readonly state: DeskState = {
    connection: 'idle',
    login: undefined,
    status: 'online',
    agents: [],
    consultations: new Map(),
    threads: new Map(),
    selected: undefined,
    notice: undefined,
    fatal: undefined,
  };
  private client: CellmeshClient | undefined;
  private tokens: AgentTokenSource | undefined;
  private readonly listeners: Array<() => void> = [];
  private lastTypingMs = 0;
  private token: string | undefined;
  private deskRefresh: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly origin: string,
    /** This tab's device id: two tabs of one agent are two devices, both in sync. */
    private readonly device: string,
  ) {}

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Logs in at the merchant's home cell and connects; resolves once the desk is loaded or the login failed. */
  async start(login: Login): Promise<void> {
    this.state.fatal = undefined;
    this.state.notice = undefined;
    let where;
    let tokens: AgentTokenSource;
    try {
      where = await connectTarget(this.origin, login.tenant, login.merchant);
      tokens = loginTokenSource({ url: this.origin, ...login, device: this.device });
      // Logging in first tells a wrong password at once, instead of as a failing reconnect.
      this.token = await tokens(new AbortController().signal);
      this.tokens = tokens;
    } catch (error) {
      this.state.fatal = describeError(error);
      this.changed();
      return;
    }
    this.state.login = login;
    // The newest token is kept too: the page's <img> of an attachment carries it (`?token=`).
    const client = pageClient(where, async (signal) => (this.token = await tokens(signal)));
    this.client = client;
    client.on('state', (change) => {
      this.state.connection = change.state;
      if ((change.state === 'closed' || change.state === 'replaced') && change.error !== undefined) this.state.fatal = describeError(change.error);
      if (change.state === 'open') void this.refreshDesk();
      this.changed();
    });
    client.on('consultation', (consultation) => {
      const before = this.state.consultations.get(consultation.conv);
      const me = this.state.login?.agent;
      if (consultation.state === 'assigned' && consultation.agent === me && !(before?.state === 'assigned' && before.agent === me)) this.notifyAssigned(consultation);
      if (consultation.state === 'closed') this.state.consultations.delete(consultation.conv);
      else this.state.consultations.set(consultation.conv, consultation);
      this.scheduleDeskRefresh();
      this.changed();
    });
    client.on('message', (message) => this.received(message));
    client.on('receipt', (receipt) => {
      const thread = this.state.threads.get(receipt.conv);
      if (thread === undefined) return;
      if (receipt.role === 'customer') thread.customerReadSeq = Math.max(thread.customerReadSeq, receipt.seq);
      // This agent read it in another tab: what is unread here is what came after.
      else if (receipt.user === this.state.login?.agent) thread.unread = this.customerMessagesAfter(thread, receipt.seq);
      this.changed();
    });
    client.on('delivered', (delivered) => {
      const thread = this.state.threads.get(delivered.conv);
      if (thread === undefined || delivered.role !== 'customer') return;
      thread.customerDeliveredSeq = Math.max(thread.customerDeliveredSeq, delivered.seq);
      this.changed();
    });
    client.on('typing', (typing) => {
      if (typing.role !== 'customer') return;
      this.threadOf(typing.conv).customerTypingUntilMs = Date.now() + TYPING_SHOWN_MS; // real-clock-ok: a page shows wall time
      this.changed();
    });
    try {
      await client.connect();
    } catch (error) {
      this.state.fatal = describeError(error);
      this.changed();
    }
  }

  /** The consultations assigned to this agent, the oldest first. */
  mine(): ConsultationView[] {
    const me = this.state.login?.agent;
    return [...this.state.consultations.values()].filter((entry) => entry.state === 'assigned' && entry.agent === me).sort((left, right) => left.openedAtMs - right.openedAtMs);
  }

  /** Colleagues' consultations (a supervisor may open and watch them), the oldest first. */
  others(): ConsultationView[] {
    const me = this.state.login?.agent;
    return [...this.state.consultations.values()].filter((entry) => entry.state === 'assigned' && entry.agent !== me).sort((left, right) => left.openedAtMs - right.openedAtMs);
  }

  /** The merchant's queue, next first. */
  queue(): ConsultationView[] {
    return [...this.state.consultations.values()].filter((entry) => entry.state === 'waiting').sort((left, right) => (left.position ?? 0) - (right.position ?? 0));
  }

  async setStatus(status: AgentStatus): Promise<void> {
    await this.act(async (client) => {
      await client.setStatus(status);
      this.state.status = status;
    });
  }

  /** Shows `conv`: loads its history the first time, and marks it read. */
  async select(conv: string): Promise<void> {
    this.state.selected = conv;
    this.state.notice = undefined;
    const thread = this.threadOf(conv);
    this.changed();
    if (!thread.loaded) {
      await this.act(async (client) => {
        const page = await client.history(conv, { limit: HISTORY_PAGE });
        for (const message of page.messages) thread.messages.set(message.seq, message);
        thread.hasMore = page.hasMore;
        thread.loaded = true;
      });
    }
    this.markRead();
  }

  async loadOlder(): Promise<void> {
    const conv = this.state.selected;
    const thread = conv === undefined ? undefined : this.state.threads.get(conv);
    if (conv === undefined || thread === undefined || !thread.hasMore) return;
    await this.act(async (client) => {
      const page = await client.history(conv, { before: Math.min(...thread.messages.keys()), limit: HISTORY_PAGE });
      for (const message of page.messages) thread.messages.set(message.seq, message);
      thread.hasMore = page.hasMore;
    });
  }

  /** Marks the conversation on screen read up to its newest message. */
  markRead(): void {
    const { client, state } = this;
    const thread = state.selected === undefined ? undefined : state.threads.get(state.selected);
    if (client === undefined || thread === undefined || state.connection !== 'open') return;
    const newest = Math.max(0, ...thread.messages.keys());
    thread.unread = 0;
    if (newest > 0) client.read(thread.conv, newest).catch(() => undefined);
  }

  send(body: string): void {
    const conv = this.state.selected;
    const text = body.trim();
    if (conv === undefined || text === '') return;
    void this.act((client) => client.send(conv, text).then(() => undefined));
  }

  /** Uploads `file` to the conversation on screen, then sends it as a message of its own. */
  attach(file: File): void {
    const conv = this.state.selected;
    if (conv === undefined) return;
    void this.act(async (client) => {
      const attachment = await client.uploadAttachment(conv, new Uint8Array(await file.arrayBuffer()), file.name);
      await client.send(conv, '', { attachments: [attachment] });
    });
  }

  /** Where the page loads an attachment of `conv` from; undefined before the first token. */
  attachmentUrl(conv: string, id: string): string | undefined {
    const { client, token } = this;
    return client === undefined || token === undefined ? undefined : attachmentUrl(client.httpBase, conv, id, token);
  }

  typing(): void {
    const now = Date.now(); // real-clock-ok: throttling a page's frames
    const conv = this.state.selected;
    if (this.client === undefined || conv === undefined || this.state.connection !== 'open' || now - this.lastTypingMs < TYPING_EVERY_MS) return;
    this.lastTypingMs = now;
    this.client.typing(conv);
  }

  async transfer(target: TransferTarget): Promise<void> {
    const conv = this.state.selected;
    const consultation = conv === undefined ? undefined : this.state.consultations.get(conv);
    if (conv === undefined || consultation === undefined) return;
    await this.act((client) => client.transfer(conv, target, { consultation: consultation.consultation }));
  }

  async closeConsultation(): Promise<void> {
    const conv = this.state.selected;
    const consultation = conv === undefined ? undefined : this.state.consultations.get(conv);
    if (conv === undefined || consultation === undefined) return;
    await this.act((client) => client.closeConsultation(conv, consultation.consultation));
  }

  async logout(): Promise<void> {
    await this.client?.close();
    await this.tokens?.logout().catch(() => undefined);
  }

  /** A desktop notification of a consultation newly assigned to this agent, when the agent allowed them. */
  private notifyAssigned(consultation: ConsultationView): void {
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    const customer = consultation.conv.slice(consultation.conv.indexOf(':') + 1);
    const notification = new Notification('New conversation', { body: `${customer} (${consultation.group})`, tag: consultation.consultation });
    notification.addEventListener('click', () => {
      window.focus();
      void this.select(consultation.conv);
    });
  }

  threadOf(conv: string): Thread {
    let thread = this.state.threads.get(conv);
    if (thread === undefined) {
      thread = { conv, messages: new Map(), hasMore: false, loaded: false, unread: 0, customerReadSeq: 0, customerDeliveredSeq: 0, customerTypingUntilMs: 0 };
      this.state.threads.set(conv, thread);
    }
    return thread;
  }

  private received(message: ChatMessage): void {
    const thread = this.threadOf(message.conv);
    if (thread.messages.has(message.seq)) return;
    thread.messages.set(message.seq, message);
    if (message.role === 'customer') {
      thread.customerTypingUntilMs = 0;
      if (this.state.selected === message.conv && document.visibilityState === 'visible') this.markRead();
      else thread.unread++;
    } else if (message.role === 'agent' && message.from === this.state.login?.agent) {
      // Sent from this agent's other tab: sending means having read what came before (the cell moved the read cursor).
      thread.unread = this.customerMessagesAfter(thread, message.seq);
    }
    this.changed();
  }

  private customerMessagesAfter(thread: Thread, seq: number): number {
    let count = 0;
    for (const message of thread.messages.values()) if (message.role === 'customer' && message.seq > seq) count++;
    return count;
  }

  /** The desk's agents and consultations, and each conversation's unread count. */
  private async refreshDesk(): Promise<void> {
    await this.act(async (client) => {
      const [desk, inbox] = await Promise.all([client.desk(), client.inbox()]);
      this.state.agents = desk.agents;
      this.state.consultations = new Map(desk.consultations.map((entry) => [entry.conv, entry]));
      const me = desk.agents.find((agent) => agent.id === this.state.login?.agent);
      if (me !== undefined) this.state.status = me.status;
      for (const summary of inbox) {
        const thread = this.threadOf(summary.conv);
        thread.unread = this.state.selected === summary.conv ? 0 : summary.unread;
        for (const read of summary.reads) if (read.role === 'customer') thread.customerReadSeq = Math.max(thread.customerReadSeq, read.seq);
      }
    });
  }

  private scheduleDeskRefresh(): void {
    clearTimeout(this.deskRefresh);
    this.deskRefresh = setTimeout(() => void this.refreshDesk(), DESK_REFRESH_DELAY_MS);
  }

  /** Runs an action of the agent; a refusal is shown as the notice. */
  private async act(action: (client: CellmeshClient) => Promise<void>): Promise<void> {
    const { client } = this;
    if (client === undefined) return;
    this.state.notice = undefined;
    try {
      await action(client);
    } catch (error) {
      this.state.notice = describeError(error);
    }
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}
