// The customer chat's state, kept from the browser SDK's events: the guest's conversation with
// one merchant, its messages (history paged upwards), the sends still on their way, the agent's
// read cursor, the consultation (queue position, estimated wait, the agent), typing and the
// connection. The view (chat-view.ts) renders it after every change.
import {
  CellmeshClient,
  ClientError,
  conversationIdOf,
  guestTokenSource,
  type ChatMessage,
  type ConnectionState,
  type ConsultationView,
  type DeskNotice,
} from '../../client/browser.js';
import { attachmentUrl } from '../shared/attachment-view.js';
import { TYPING_EVERY_MS, TYPING_SHOWN_MS } from '../shared/typing.js';
import { connectTarget, describeError, pageClient, type ConnectTarget } from '../shared/connect-target.js';
import type { ChatLink } from './chat-link.js';

/** A message this page sent that the cell has not stored yet (or refused). */
export interface PendingSend {
  cmid: string;
  body: string;
  /** `sending` until stored; `failed` when the cell refused it (it is not retried). */
  state: 'sending' | 'failed';
  error?: string;
  atMs: number;
  /** An upload: not kept for a later visit (the file is gone with the page). */
  isFile?: boolean;
}

export interface ChatState {
  connection: ConnectionState;
  /** The guest, once the first session opened. */
  user: string | undefined;
  conv: string | undefined;
  /** Stored messages by seq. */
  messages: Map<number, ChatMessage>;
  pending: PendingSend[];
  /** Older messages exist before the first one held. */
  hasMore: boolean;
  loadingOlder: boolean;
  /** The highest seq an agent has read. */
  agentReadSeq: number;
  /** The highest seq some agent's device has (a `delivered` frame; reads imply it too). */
  agentDeliveredSeq: number;
  consultation: ConsultationView | undefined;
  /** An agent typing, until this time. */
  agentTypingUntilMs: number;
  /** The consultation that closed and may be rated; undefined once rated or when none closed. */
  rateable: string | undefined;
  /** What stops the chat for good (a bad link, an unknown merchant, a refusal). */
  fatal: string | undefined;
  /** Agents' display names by id, as the desk's messages and frames told them. */
  agentNames: Map<string, string>;
}

const HISTORY_PAGE = 30;

export class ChatSession {
  readonly state: ChatState = {
    connection: 'idle',
    user: undefined,
    conv: undefined,
    messages: new Map(),
    pending: [],
    hasMore: false,
    loadingOlder: false,
    agentReadSeq: 0,
    agentDeliveredSeq: 0,
    consultation: undefined,
    agentTypingUntilMs: 0,
    rateable: undefined,
    fatal: undefined,
    agentNames: new Map(),
  };
  private client: CellmeshClient | undefined;
  private lastTypingMs = 0;
  private readSent = 0;
  private newestEventSeq = 0;
  private token: string | undefined;
  private closing = false;
  /** Where the messages written and not yet stored wait for a later visit (localStorage). */
  private readonly unsentKey: string;
  private readonly listeners: Array<() => void> = [];

  constructor(
    private readonly link: ChatLink,
    /** The cell that served the page: the merchant's home, where `/v1/connect` sent the browser. */
    private readonly origin: string,
    private readonly storage: Storage,
  ) {
    this.unsentKey = `cellmesh.chat.unsent.${link.tenant}.${link.merchant}`;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Connects: route mode in a cluster (the SDK follows the merchant's home), else this very cell. */
  async start(): Promise<void> {
    const { tenant, merchant } = this.link;
    let where: ConnectTarget;
    try {
      where = await connectTarget(this.origin, tenant, merchant);
    } catch (error) {
      this.state.fatal = describeError(error);
      this.changed();
      return;
    }
    const tokens = guestTokenSource({ url: this.origin, tenant, merchant, storage: this.storage });
    // The newest token is kept too: the page's <img> of an attachment carries it (`?token=`).
    const client = pageClient(where, async (signal) => (this.token = await tokens(signal)));
    this.client = client;
    client.on('state', (change) => {
      this.state.connection = change.state;
      if ((change.state === 'closed' || change.state === 'replaced') && change.error !== undefined) this.state.fatal = describeError(change.error);
      if (change.state === 'open' && change.session !== undefined) void this.opened(change.session.user);
      this.changed();
    });
    client.on('message', (message) => this.received(message));
    client.on('receipt', (receipt) => {
      if (receipt.conv !== this.state.conv || receipt.role !== 'agent') return;
      this.state.agentReadSeq = Math.max(this.state.agentReadSeq, receipt.seq);
      this.changed();
    });
    client.on('delivered', (delivered) => {
      if (delivered.conv !== this.state.conv || delivered.role !== 'agent') return;
      this.state.agentDeliveredSeq = Math.max(this.state.agentDeliveredSeq, delivered.seq);
      this.changed();
    });
    client.on('consultation', (consultation) => {
      if (consultation.conv !== this.state.conv) return;
      this.state.consultation = consultation;
      if (consultation.agent !== undefined && consultation.agentName !== undefined) this.state.agentNames.set(consultation.agent, consultation.agentName);
      if (consultation.state === 'closed') this.state.rateable = consultation.consultation;
      this.changed();
    });
    client.on('typing', (typing) => {
      if (typing.conv !== this.state.conv || typing.role === 'customer') return;
      this.state.agentTypingUntilMs = Date.now() + TYPING_SHOWN_MS; // real-clock-ok: a page shows wall time
      this.changed();
    });
    try {
      await client.connect();
    } catch (error) {
      this.state.fatal = describeError(error);
      this.changed();
    }
  }

  /**
   * Sends `body`; shown at once as pending. While offline the SDK keeps it and sends it on
   * reconnect; the page also keeps it in localStorage until it is stored, so a tab closed
   * meanwhile sends it when the link is opened again (the same cmid: never twice).
   */
  send(body: string): void {
    const conv = this.state.conv;
    const text = body.trim();
    if (this.client === undefined || conv === undefined || text === '') return;
    const pending: PendingSend = { cmid: `web-${globalThis.crypto.randomUUID()}`, body: text, state: 'sending', atMs: Date.now() }; // real-clock-ok: display time
    this.state.pending.push(pending);
    this.keepUnsent(conv);
    this.changed();
    this.transmit(conv, pending);
  }

  private transmit(conv: string, pending: PendingSend): void {
    this.client!.send(conv, pending.body, { cmid: pending.cmid, ...(this.link.group === undefined ? {} : { group: this.link.group }) }).then(
      () => this.settle(pending.cmid),
      (error: unknown) => {
        // The page is going away (its client closes): what it had not sent stays kept for the next visit.
        if (this.closing) return;
        pending.state = 'failed';
        pending.error = describeError(error);
        this.keepUnsent(conv);
        this.changed();
      },
    );
  }

  /** The text messages written and not stored yet, kept for a later visit. */
  private keepUnsent(conv: string): void {
    const unsent = this.state.pending.filter((pending) => pending.state === 'sending' && !pending.isFile).map(({ cmid, body, atMs }) => ({ cmid, body, atMs }));
    if (unsent.length === 0) this.storage.removeItem(this.unsentKey);
    else this.storage.setItem(this.unsentKey, JSON.stringify({ conv, unsent }));
  }

  /** Sends again what an earlier visit wrote and could not send; what the cell stored meanwhile is dropped. */
  private resendUnsent(conv: string): void {
    let kept: { conv?: unknown; unsent?: Array<{ cmid?: unknown; body?: unknown; atMs?: unknown }> } | undefined;
    try {
      kept = JSON.parse(this.storage.getItem(this.unsentKey) ?? 'null') as typeof kept;
    } catch {
      kept = undefined;
    }
    if (kept?.conv !== conv || !Array.isArray(kept.unsent)) return;
    const stored = new Set([...this.state.messages.values()].map((message) => message.cmid));
    for (const entry of kept.unsent) {
      if (typeof entry.cmid !== 'string' || typeof entry.body !== 'string' || stored.has(entry.cmid) || this.state.pending.some((pending) => pending.cmid === entry.cmid)) continue;
      const pending: PendingSend = { cmid: entry.cmid, body: entry.body, state: 'sending', atMs: typeof entry.atMs === 'number' ? entry.atMs : Date.now() }; // real-clock-ok: display time
      this.state.pending.push(pending);
      this.transmit(conv, pending);
    }
    this.keepUnsent(conv);
  }

  /** Uploads `file` to the conversation, then sends it as a message of its own. */
  attach(file: File): void {
    const { client } = this;
    const conv = this.state.conv;
    if (client === undefined || conv === undefined) return;
    const cmid = `web-${globalThis.crypto.randomUUID()}`;
    const pending: PendingSend = { cmid, body: `Sending ${file.name}`, state: 'sending', atMs: Date.now(), isFile: true }; // real-clock-ok: display time
    this.state.pending.push(pending);
    this.changed();
    file
      .arrayBuffer()
      .then((buffer) => client.uploadAttachment(conv, new Uint8Array(buffer), file.name))
      .then((attachment) => client.send(conv, '', { cmid, attachments: [attachment], ...(this.link.group === undefined ? {} : { group: this.link.group }) }))
      .then(
        () => this.settle(cmid),
        (error: unknown) => {
          pending.state = 'failed';
          pending.error = describeError(error);
          this.changed();
        },
      );
  }

  /** Where the page loads an attachment of the conversation from; undefined before the first token. */
  attachmentUrl(id: string): string | undefined {
    const { client, token } = this;
    const conv = this.state.conv;
    if (client === undefined || conv === undefined || token === undefined) return undefined;
    return attachmentUrl(client.httpBase, conv, id, token);
  }

  /** Drops a failed send from the page. */
  discard(cmid: string): void {
    this.settle(cmid);
  }

  /** Tells the agent the customer is typing (at most every 2 s). */
  typing(): void {
    const now = Date.now(); // real-clock-ok: throttling a page's frames
    if (this.client === undefined || this.state.conv === undefined || this.state.connection !== 'open' || now - this.lastTypingMs < TYPING_EVERY_MS) return;
    this.lastTypingMs = now;
    this.client.typing(this.state.conv);
  }

  /** Loads the page of messages before the oldest one held. */
  async loadOlder(): Promise<void> {
    const { client, state } = this;
    if (client === undefined || state.conv === undefined || state.loadingOlder || !state.hasMore) return;
    const oldest = Math.min(...state.messages.keys());
    state.loadingOlder = true;
    this.changed();
    try {
      const page = await client.history(state.conv, { before: oldest, limit: HISTORY_PAGE });
      for (const message of page.messages) state.messages.set(message.seq, message);
      state.hasMore = page.hasMore;
    } finally {
      state.loadingOlder = false;
      this.changed();
    }
  }

  /** Marks everything shown as read (the page is visible). */
  markRead(): void {
    const { client, state } = this;
    if (client === undefined || state.conv === undefined || state.connection !== 'open') return;
    const newest = Math.max(0, ...state.messages.keys());
    if (newest <= this.readSent) return;
    this.readSent = newest;
    client.read(state.conv, newest).catch(() => {
      this.readSent = 0; // Said again at the next chance.
    });
  }

  async rate(score: number, comment: string): Promise<void> {
    const { client, state } = this;
    if (client === undefined || state.conv === undefined) return;
    await client.rate(state.conv, score, comment.trim() === '' ? undefined : comment.trim());
    state.rateable = undefined;
    this.changed();
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.client?.close();
  }

  /** A session opened: the first one learns the guest's conversation and loads its newest page. */
  private async opened(user: string): Promise<void> {
    if (this.state.conv !== undefined) return;
    const conv = conversationIdOf(this.link.merchant, user);
    this.state.user = user;
    this.state.conv = conv;
    const client = this.client!;
    try {
      const [page, inbox] = await Promise.all([client.history(conv, { limit: HISTORY_PAGE }), client.inbox()]);
      for (const message of page.messages) this.remember(message);
      this.state.hasMore = page.hasMore;
      const summary = inbox.find((entry) => entry.conv === conv);
      for (const read of summary?.reads ?? []) if (read.role === 'agent') this.state.agentReadSeq = Math.max(this.state.agentReadSeq, read.seq);
    } catch (error) {
      // A new guest's conversation does not exist yet; anything else is shown.
      if (!(error instanceof ClientError && error.code === 'CONVERSATION_NOT_FOUND')) this.state.fatal = describeError(error);
    }
    this.resendUnsent(conv);
    this.changed();
  }

  private received(message: ChatMessage): void {
    if (message.conv !== this.state.conv) return;
    this.remember(message);
    this.settle(message.cmid);
    this.changed();
  }

  /** Keeps a stored message; a system message also tells the consultation's state after a reload. */
  private remember(message: ChatMessage): void {
    this.state.messages.set(message.seq, message);
    const event = message.event;
    if ((event?.type === 'assigned' || event?.type === 'transferred') && event.agent !== undefined && event.name !== undefined) this.state.agentNames.set(event.agent, event.name);
    // History and live messages may arrive in either order: only the newest desk event counts.
    if (event === undefined || message.seq < this.newestEventSeq) return;
    this.newestEventSeq = message.seq;
    // A close may be rated; a rating, or a new consultation, ends that.
    this.state.rateable = event.type === 'closed' ? event.consultation : undefined;
    // After a reload no `consultation` frame has come yet: the newest event says where it stands.
    const known = this.state.consultation;
    const view = consultationOf(message, event);
    if (view !== undefined && (known?.consultation !== view.consultation || known.state !== view.state)) this.state.consultation = view;
  }

  private settle(cmid: string): void {
    const before = this.state.pending.length;
    this.state.pending = this.state.pending.filter((pending) => pending.cmid !== cmid);
    if (this.state.pending.length !== before && this.state.conv !== undefined) this.keepUnsent(this.state.conv);
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}

/** The consultation as a system message leaves it (no queue position: only `consultation` frames tell that). */
function consultationOf(message: ChatMessage, event: DeskNotice): ConsultationView | undefined {
  const base = { conv: message.conv, consultation: event.consultation, group: 'group' in event && event.group !== undefined ? event.group : '', openedAtMs: message.ts };
  switch (event.type) {
    case 'queued':
    case 'released':
      return { ...base, state: 'waiting' };
    case 'assigned':
      return { ...base, state: 'assigned', agent: event.agent, agentName: event.name };
    case 'transferred':
      return event.agent === undefined ? { ...base, state: 'waiting' } : { ...base, state: 'assigned', agent: event.agent, ...(event.name === undefined ? {} : { agentName: event.name }) };
    case 'closed':
    case 'rated':
      return { ...base, state: 'closed' };
    default:
      return undefined;
  }
}
