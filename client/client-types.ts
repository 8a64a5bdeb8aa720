// The public types of the client SDK's calls and events: connection states, what a send, a
// request or an event carries. The client (client.ts) and its parts speak in these types.
import type { AgentStatus, ChatMessage, ConsultationView, DeviceInfo, MessageAttachment, Role, ServerFrame } from '../cell/protocol/frames.js';
import type { ClientError } from './errors.js';

type WelcomeFrame = Extract<ServerFrame, { t: 'welcome' }>;

/**
 * `idle` until `connect()`; `connecting` while an attempt runs (token, upgrade, welcome); `open`
 * once the cell welcomed this device; `reconnecting` while waiting out the backoff before the
 * next attempt. `closed` (by `close()` or an error that retrying cannot fix) and `replaced`
 * (another connection of this device took over) are final.
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'replaced';

/** What the cell's `welcome` said about this session. */
export type SessionInfo = Omit<WelcomeFrame, 't' | 'v'> & { protocolVersion: number };

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Consecutive failed attempts; back to 0 after a connection proved stable. */
  attempt: number;
  /** With `reconnecting`: the wait before the next attempt. */
  delayMs?: number;
  /** The close code that ended the last connection, when it had one. */
  closeCode?: number;
  /** Why the last connection ended or the client stopped (none for a plain `close()`). */
  error?: ClientError;
  /** With `open`: the session. */
  session?: SessionInfo;
}

export interface SendResult {
  conv: string;
  cmid: string;
  seq: number;
  /** Cell time when the message became durable. */
  ts: number;
}

/**
 * A send to a conversation hosted by another cell than the one this device is connected to is
 * durable in that (access) cell, which forwards it; its seq follows with `sent`.
 */
export interface QueuedSend {
  conv: string;
  cmid: string;
}

export interface SendOptions {
  /**
   * The client message id; generated when absent. Reuse it to resend the same message (the same
   * body): with another body the send is rejected with IDEMPOTENCY_CONFLICT, and not retried.
   */
  cmid?: string;
  /** The desk group a customer's first message of a consultation asks for (docs/desk.md); ignored otherwise. */
  group?: string;
  /**
   * Files sent with the message (at most 10), as `uploadAttachment` answered them; the body may
   * then be empty.
   */
  attachments?: readonly MessageAttachment[];
  /**
   * Stops waiting for the confirmation. A send not yet transmitted is withdrawn; one already on
   * the wire may still be stored (and then shows up as a `message`), but is not resent.
   */
  signal?: AbortSignal;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface HistoryOptions extends RequestOptions {
  /** Messages with seq strictly below this; omitted means the newest. */
  before?: number;
  /** At most this many (1-200; the cell has its own default). */
  limit?: number;
}

export interface HistoryPage {
  /** Ascending by seq. */
  messages: ChatMessage[];
  /** Whether older messages exist (page on with `before: messages[0].seq`). */
  hasMore: boolean;
}

export interface PresenceQuery {
  /** Users whose online devices to list (customers may only ask for themselves). */
  users?: readonly string[];
  /** Merchants whose online agents to count. */
  merchants?: readonly string[];
}

export interface PresenceEntry {
  user: string;
  /** The customer of that id, or (asked by an agent) the asker's colleague of that id; absent from cells of an earlier version. */
  role?: Role;
  devices: DeviceInfo[];
}

export interface MerchantPresence {
  merchant: string;
  agentsOnline: number;
}

export interface PresenceResult {
  users: PresenceEntry[];
  merchants: MerchantPresence[];
}

export interface PingResult {
  /** From the last transmission of the ping to its pong. */
  rttMs: number;
  /** Cell time in the pong. */
  serverTs: number;
}

/** `user` read `conv` up to `seq`. */
export interface Receipt {
  conv: string;
  user: string;
  /** Tells the customer from an agent of the same id; absent from cells of an earlier version. */
  role?: Role;
  seq: number;
}

/** A device of `role`'s side has every message of `conv` up to `seq` (the other side's messages up to there are delivered). */
export interface DeliveryReceipt {
  conv: string;
  role: Role;
  seq: number;
}

/** The online devices of this user changed. */
export interface DevicesChange {
  user: string;
  devices: DeviceInfo[];
}

export interface SyncedEvent {
  /** The session whose catch-up is complete. */
  session: string;
}

/**
 * Events of the client. `message` carries every message of every conversation of the user
 * exactly once per conversation seq, in seq order per conversation, including this device's own
 * sends (after their `sent`), so an app can render from it alone; `cursors()` tells how far.
 */
/** Where `transfer` hands a consultation: one agent, or a group (its least-loaded agent, or its queue). */
export type TransferTarget = { agent: string; group?: never } | { group: string; agent?: never };

/** The merchant's desk as an agent sees it (`CellmeshClient.desk`). */
export interface DeskView {
  agents: Array<{ id: string; name: string; status: AgentStatus; capacity: number; open: number; groups: string[] }>;
  consultations: ConsultationView[];
}

/** The other party of `conv` is typing (relayed by the merchant's cell, never stored). */
export interface TypingEvent {
  conv: string;
  user: string;
  role: Role;
}

export interface ClientEvents {
  message: ChatMessage;
  /** A consultation of this user (or, for agents, of the merchant's desk) changed: queue position, assignment, close. */
  consultation: ConsultationView;
  typing: TypingEvent;
  sent: SendResult;
  /** A send is durable in the access cell and waits for its conversation's home cell; `sent` follows. */
  queued: QueuedSend;
  receipt: Receipt;
  /** Cells that know it (docs/protocol.md, `delivered`); others never send it. */
  delivered: DeliveryReceipt;
  devices: DevicesChange;
  /** The catch-up after a (re)connect is delivered; once per session. */
  synced: SyncedEvent;
  state: StateChange;
  /** Operating errors that belong to no pending call (transport failures, unfillable gaps...). */
  error: ClientError;
}
