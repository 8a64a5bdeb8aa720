// The cellmesh chat client, the SDK's one public class: a façade that composes the connection,
// the send queue, the request tracker, the per-conversation sequencer and the ack batcher, and
// routes the cell's frames to them.
import type { AgentStatus, ChatMessage, ConversationSummary, MessageAttachment } from '../cell/protocol/frames.js';
import { platformFetch, uploadAttachment, type AttachmentUploadPorts } from './attachment-upload.js';
import { ErrorCode } from '../cell/protocol/errors.js';
import { httpBaseOf } from './cell-http.js';
import type { Clock } from '../platform/clock.js';
import { AckBatcher } from './ack-batcher.js';
import type {
  ClientEvents,
  ConnectionState,
  DeskView,
  HistoryOptions,
  HistoryPage,
  PingResult,
  PresenceQuery,
  PresenceResult,
  RequestOptions,
  SendOptions,
  SendResult,
  SessionInfo,
  TransferTarget,
} from './client-types.js';
import { Connection, type SessionFrame } from './connection.js';
import { FixedEndpoint, RoutedEndpoint, endpointOf, type DownHome, type EndpointSource } from './endpoints.js';
import { TypedEmitter, type Listener } from './emitter.js';
import { ClientError, type ClientErrorDetails } from './errors.js';
import { RequestTracker, type Answer, type ReplyType, type RequestFrame } from './request-tracker.js';
import { SendQueue } from './send-queue.js';
import { Sequencer } from './sequencer.js';
import { chatMessageOf } from './server-frames.js';
import { resolveSettings, type CellmeshClientOptions } from './settings.js';
import { TokenKeeper } from './token.js';

/** The most conversations a cell lists for one device (MAX_CONVERSATIONS_PER_DEVICE in the cell). */
const MAX_INBOX_CONVERSATIONS = 10_000;

type SentFrame = Extract<SessionFrame, { t: 'sent' }>;
type ErrorFrame = Extract<SessionFrame, { t: 'error' }>;

/**
 * The cellmesh chat client. Its logic runs on the injected transport, clock and randomness only,
 * so the same code runs in Node, in browsers and in the deterministic simulator.
 *
 * It keeps one connection to the cell and reconnects with exponential backoff and jitter; keeps
 * an outbox of sends that it retransmits, in order and with their cmids, until each is confirmed;
 * delivers each conversation's messages in order and once, fetching missing ones with `history`;
 * and acknowledges deliveries cumulatively in batches.
 */
export class CellmeshClient {
  private readonly events = new TypedEmitter<ClientEvents>();
  private readonly clock: Clock;
  private readonly connection: Connection;
  private readonly endpoints: EndpointSource;
  private readonly sends: SendQueue;
  private readonly requests: RequestTracker;
  private readonly sequencer: Sequencer;
  /** The cell of the last session, to tell a switch to another cell. */
  private lastCell: string | undefined;
  private readonly acks: AckBatcher;
  private readonly uploads: AttachmentUploadPorts;
  private lastId = 0;

  constructor(options: CellmeshClientOptions) {
    const { settings, backoff } = resolveSettings(options);
    const fetch = options.fetch ?? platformFetch;
    const endpoints: EndpointSource =
      options.route === undefined ? new FixedEndpoint(endpointOf(options.url!)) : new RoutedEndpoint(options.route, fetch, settings.maxRedirects);
    this.endpoints = endpoints;
    const { clock, random } = options;
    this.clock = clock;
    const events = this.events;
    const nextId = (prefix: string): string => this.nextId(prefix);
    const tokens = new TokenKeeper(options.token, clock, settings.tokenRefreshMarginMs);
    // Uploads go to the cell of the current connection, which routing may change.
    this.uploads = {
      get endpoint() {
        return endpoints.current;
      },
      token: (signal) => tokens.current(signal),
      fetch,
    };
    this.connection = new Connection({
      transport: options.transport,
      clock,
      random,
      endpoints,
      tokens,
      backoff,
      settings,
      events,
      hooks: {
        sessionOpened: (session) => this.onSessionOpened(session),
        sessionEnded: () => this.onSessionEnded(),
        stopped: (rejection) => this.onStopped(rejection),
        frame: (frame) => this.onFrame(frame),
      },
    });
    const link = this.connection;
    this.sends = new SendQueue({ clock, random, backoff, settings, link, events, nextId });
    this.requests = new RequestTracker({ clock, random, backoff, settings, link, nextId });
    this.sequencer = new Sequencer(
      {
        clock,
        random,
        backoff,
        settings,
        link,
        events,
        fetchHistory: (conv, before, limit) => this.request('history', (id) => ({ op: 'history', id, conv, before, limit }), undefined),
        cursorMoved: (conv) => this.acks.noteCursor(conv),
      },
      options.initialCursors ?? {},
    );
    this.acks = new AckBatcher({ clock, ackDelayMs: settings.ackDelayMs, link, cursorOf: (conv) => this.sequencer.cursorOf(conv) });
  }

  get state(): ConnectionState {
    return this.connection.state;
  }

  /** The current session, while the state is `open`. */
  get session(): SessionInfo | undefined {
    return this.connection.session;
  }

  /**
   * Route mode: while the merchant's home cell is down and this client is (or is about to be)
   * connected to its fallback cell, the home that is down. Sends are answered `queued` then and
   * reach the merchant when the home is back (docs/routing.md, "A home cell that is down"): a
   * good moment to tell the user that agents will answer later. Undefined otherwise.
   */
  get homeDown(): DownHome | undefined {
    return this.endpoints.homeDown;
  }

  /**
   * The HTTP base (`http(s)://host:port`) of the cell of the current or latest connection
   * attempt: where `uploadAttachment` posts, and where a page loads a message's attachments from
   * (`GET /v1/conversations/{conv}/attachments/{id}?token=`).
   */
  get httpBase(): string {
    return httpBaseOf(this.endpoints.current.toString());
  }

  on<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): () => void {
    return this.events.on(event, listener);
  }

  once<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): () => void {
    return this.events.once(event, listener);
  }

  off<Name extends keyof ClientEvents>(event: Name, listener: Listener<ClientEvents[Name]>): void {
    this.events.off(event, listener);
  }

  /**
   * Conversation to the highest seq delivered through `message` with everything before it.
   * Persist it and pass it back as `initialCursors` to resume without repeats or holes.
   */
  cursors(): Record<string, number> {
    return this.sequencer.cursors();
  }

  /**
   * Starts connecting (on the first call) and resolves with the session once the cell welcomed
   * this device. Failed attempts are retried with backoff meanwhile; the promise rejects only
   * when the client stops for good or `signal` aborts (which stops the waiting, not the client).
   */
  connect(signal?: AbortSignal): Promise<SessionInfo> {
    return this.connection.connect(signal);
  }

  /**
   * Sends `body` to `conv` and resolves with its seq once the conversation's cell stored it
   * durably. Until then the send waits in the outbox and is retransmitted, with the same cmid,
   * after every reconnect and after rate limiting; rejects with the cell's code for errors that
   * retrying cannot fix. A send to a conversation hosted by another cell is first `queued` (an
   * event): durable in the connected cell, which forwards it; it is then not retransmitted to
   * that cell, and resolves when `sent` arrives or when the message comes back as a push.
   */
  send(conv: string, body: string, options: SendOptions = {}): Promise<SendResult> {
    const refusal = this.connection.refusal(options.signal);
    if (refusal !== undefined) return Promise.reject(refusal);
    return this.sends.send(conv, body, options);
  }

  /**
   * Uploads a file to `conv` over HTTP (the cell's host and port, with this client's token) and
   * resolves with the attachment to name in `send(conv, body, { attachments })`. The cell judges
   * its type from the bytes; it refuses types and sizes its tenant does not accept.
   */
  uploadAttachment(conv: string, bytes: Uint8Array, name: string, options: RequestOptions = {}): Promise<MessageAttachment> {
    return uploadAttachment(this.uploads, conv, bytes, name, options.signal);
  }

  /** A page of `conv`'s stored messages, ascending; see `HistoryOptions` for paging. */
  async history(conv: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const { reply } = await this.request(
      'history',
      (id) => ({ op: 'history', id, conv, before: options.before, limit: options.limit }),
      options.signal,
    );
    return { messages: reply.messages.map(chatMessageOf), hasMore: reply.hasMore };
  }

  /**
   * The user's conversations with their cursors and unread counts. The cell answers in pages
   * bounded in bytes (docs/protocol.md, `inbox`); this asks for one after the other.
   */
  async inbox(options: RequestOptions = {}): Promise<ConversationSummary[]> {
    const conversations: ConversationSummary[] = [];
    let after: string | undefined;
    // Each page holds at least one conversation, and a cell serves at most MAX_INBOX_CONVERSATIONS.
    for (let page = 0; page < MAX_INBOX_CONVERSATIONS; page++) {
      const { reply } = await this.request('inbox', (id) => ({ op: 'inbox', id, ...(after === undefined ? {} : { after }) }), options.signal);
      conversations.push(...reply.conversations);
      after = reply.conversations.at(-1)?.conv;
      // An older cell answers everything at once, without `hasMore`.
      if (reply.hasMore !== true || after === undefined) break;
    }
    return conversations;
  }

  /** The online devices of users and the number of online agents of merchants (up to 100 each). */
  async presence(query: PresenceQuery, options: RequestOptions = {}): Promise<PresenceResult> {
    const { reply } = await this.request(
      'presence',
      (id) => ({
        op: 'presence',
        id,
        ...(query.users === undefined ? {} : { users: [...query.users] }),
        ...(query.merchants === undefined ? {} : { merchants: [...query.merchants] }),
      }),
      options.signal,
    );
    return { users: reply.users, merchants: reply.merchants };
  }

  /** Marks `conv` read up to `seq` for this user; the cell tells the other party and devices. */
  async read(conv: string, seq: number, options: RequestOptions = {}): Promise<void> {
    await this.request('ok', (id) => ({ op: 'read', id, conv, seq }), options.signal);
  }

  /**
   * The desk (docs/protocol.md, "The desk"), for agents: sets this agent's status. `busy` keeps
   * its consultations and gets no new ones; the status is kept across reconnects and restarts.
   */
  async setStatus(status: AgentStatus, options: RequestOptions = {}): Promise<void> {
    await this.request('ok', (id) => ({ op: 'status', id, status }), options.signal);
  }

  /**
   * Closes the open consultation of `conv` (its customer, its agent or a supervisor).
   * `consultation` (from the `consultation` event or the system message) makes a retry after a
   * reconnect harmless: it never closes the next consultation.
   */
  async closeConsultation(conv: string, consultation?: string, options: RequestOptions = {}): Promise<void> {
    await this.request('ok', (id) => ({ op: 'close', id, conv, ...(consultation === undefined ? {} : { consultation }) }), options.signal);
  }

  /** Hands the consultation of `conv` to another agent or a group, with an optional note (agents). */
  async transfer(conv: string, to: TransferTarget, options: RequestOptions & { note?: string; consultation?: string } = {}): Promise<void> {
    await this.request(
      'ok',
      (id) => ({
        op: 'transfer',
        id,
        conv,
        ...to,
        ...(options.note === undefined ? {} : { note: options.note }),
        ...(options.consultation === undefined ? {} : { consultation: options.consultation }),
      }),
      options.signal,
    );
  }

  /** The customer rates its last closed consultation of `conv` (1-5, once). */
  async rate(conv: string, score: number, comment?: string, options: RequestOptions = {}): Promise<void> {
    await this.request('ok', (id) => ({ op: 'rate', id, conv, score, ...(comment === undefined ? {} : { comment }) }), options.signal);
  }

  /** Tells the other party of `conv` that this user is typing; the cell relays at most one per second. */
  typing(conv: string): void {
    // A hint of the moment: lost when there is no connection, never retried.
    if (this.connection.session !== undefined) this.connection.transmit({ op: 'typing', conv });
  }

  /** The merchant's desk: its agents and every open consultation (agents). */
  async desk(options: RequestOptions = {}): Promise<DeskView> {
    const { reply } = await this.request('desk', (id) => ({ op: 'desk', id }), options.signal);
    return { agents: reply.agents, consultations: reply.consultations };
  }

  /** A round trip through the cell. */
  async ping(options: RequestOptions = {}): Promise<PingResult> {
    const { reply, sentAtMs } = await this.request('pong', (id) => ({ op: 'ping', id }), options.signal);
    return { rttMs: this.clock.now() - sentAtMs, serverTs: reply.ts };
  }

  /**
   * Stops the client: flushes pending acks, closes the connection normally, stops reconnecting,
   * and rejects pending sends and requests with CLIENT_CLOSED. Resolves when the connection
   * confirmed the close, or after `closeTimeoutMs`.
   */
  close(): Promise<void> {
    // Only an open session has acks to flush (a stopped client has none).
    if (this.connection.session !== undefined) this.acks.flush();
    return this.connection.close();
  }

  private request<Type extends ReplyType>(
    expect: Type,
    build: (id: string) => RequestFrame,
    signal: AbortSignal | undefined,
  ): Promise<Answer<Type>> {
    const refusal = this.connection.refusal(signal);
    if (refusal !== undefined) return Promise.reject(refusal);
    return this.requests.request(expect, build, signal);
  }

  // ---------------------------------------------------------------------------------------------
  // Composition: what the connection's events mean for the parts

  private onSessionOpened(session: SessionInfo): void {
    // Conversations this client knew before the connection existed before it attached, so the
    // cell tracks them for this connection.
    this.acks.beginSession(Object.keys(this.sequencer.cursors()));
    this.sends.requeueHeldElsewhere(session.cell);
    // Requests and sends waited longest, so they go first; then gaps that the cell will not push
    // again are fetched.
    this.requests.transmitWaiting();
    this.sends.pump();
    this.sequencer.resume();
    // A customer's session on a new cell (its merchant moved, or it was routed elsewhere).
    if (this.lastCell !== undefined && session.cell !== this.lastCell && session.role === 'customer') this.sequencer.lookPastCursors();
    this.lastCell = session.cell;
  }

  private onSessionEnded(): void {
    this.acks.endSession();
    this.sequencer.onSessionEnd();
    this.sends.onSessionEnd();
    this.requests.onSessionEnd();
  }

  private onStopped(rejection: ClientError): void {
    this.sequencer.stop();
    this.sends.rejectAll(rejection);
    this.requests.rejectAll(rejection);
  }

  private onFrame(frame: SessionFrame): void {
    switch (frame.t) {
      case 'msg':
        this.onPushedMessage(chatMessageOf(frame));
        return;
      case 'sent':
        this.onSent(frame);
        return;
      case 'queued':
        this.sends.onQueued(frame);
        return;
      case 'receipt':
        this.events.emit('receipt', { conv: frame.conv, user: frame.user, ...(frame.role === undefined ? {} : { role: frame.role }), seq: frame.seq });
        return;
      case 'delivered':
        this.events.emit('delivered', { conv: frame.conv, role: frame.role, seq: frame.seq });
        return;
      case 'devices':
        this.events.emit('devices', { user: frame.user, devices: frame.devices });
        return;
      case 'consultation': {
        const { t: _type, ...view } = frame;
        this.events.emit('consultation', view);
        return;
      }
      case 'typing':
        this.events.emit('typing', { conv: frame.conv, user: frame.user, role: frame.role });
        return;
      case 'synced':
        this.sequencer.onSynced();
        return;
      case 'error':
        this.onErrorFrame(frame);
        return;
      case 'history':
      case 'inbox':
      case 'presence':
      case 'ok':
      case 'pong':
      case 'desk':
        this.requests.onReply(frame);
        return;
    }
  }

  private onPushedMessage(message: ChatMessage): void {
    this.sends.confirmOwnPush(message, this.connection.session?.user);
    // A `sent` listener may have closed the client.
    if (this.connection.session === undefined) return;
    this.acks.notePushed(message.conv, message.seq);
    this.sequencer.accept(message, true);
    this.acks.noteCursor(message.conv);
    this.acks.flushIfWindowHalfUsed();
  }

  private onSent(frame: SentFrame): void {
    // Only this client's sends are confirmed on its connection; an unknown one is a repeat.
    const sent = this.sends.onSent(frame);
    if (sent === undefined) return;
    const session = this.connection.session;
    // A `sent` listener may have closed the client.
    if (session === undefined) return;
    this.acks.noteOwnSent(frame.conv, frame.seq);
    const own: ChatMessage = {
      conv: frame.conv,
      seq: frame.seq,
      from: session.user,
      role: session.role,
      device: session.device,
      cmid: sent.cmid,
      body: sent.body,
      ts: frame.ts,
    };
    if (sent.attachments !== undefined) own.attachments = [...sent.attachments];
    this.sequencer.accept(own, false);
    this.acks.noteCursor(frame.conv);
    this.acks.flushIfWindowHalfUsed();
    this.sends.pump();
  }

  private onErrorFrame(frame: ErrorFrame): void {
    const details: ClientErrorDetails = frame.retryAfterMs === undefined ? {} : { retryAfterMs: frame.retryAfterMs };
    const error = new ClientError(frame.code, frame.message, details);
    if (frame.id !== undefined) {
      if (this.sends.failById(frame.id, error) || this.requests.failById(frame.id, error)) return;
    } else if (frame.code === ErrorCode.RateLimited) {
      // The cell refused a frame without an id (a heartbeat ping) for the rate limit: its bucket
      // is empty. (Acks have a budget of their own on the cell, so they still go out.)
      this.connection.pacer?.drain(this.clock.now());
    }
    // A relayed send refused by its home cell after this device's connection that sent it ended.
    if (frame.conv !== undefined && frame.cmid !== undefined && this.sends.failByCmid(frame.conv, frame.cmid, error)) return;
    this.events.emit('error', error);
  }

  /** Ids of requests and sends: unique within this client, which is all the cell needs. */
  private nextId(prefix: string): string {
    this.lastId++;
    return `${prefix}${this.lastId}`;
  }
}

/**
 * Makes a client on the given ports and resolves once the cell welcomed it; on failure (or
 * `signal`) the client is closed and the error thrown. `connectNode` and `connectBrowser` wire
 * their world's ports and call this.
 */
export async function openClient(options: CellmeshClientOptions, signal?: AbortSignal): Promise<CellmeshClient> {
  const client = new CellmeshClient(options);
  try {
    await client.connect(signal);
  } catch (error) {
    await client.close();
    throw error;
  }
  return client;
}
