// As a namespace: esbuild then leaves the parts of zod the frames do not use out of the browser
// bundles (the customer chat's budget, docs/web.md "Size").
import * as z from 'zod';

/** The wire protocol version this code speaks; negotiated through the WebSocket subprotocol. */
export const PROTOCOL_VERSION = 1;
/** The subprotocol name a client offers in `Sec-WebSocket-Protocol` to ask for version 1. */
export const SUBPROTOCOL_V1 = 'cellmesh.v1';

/** Identifiers of tenants, users, merchants and devices: short, URL- and key-safe. */
export const IDENTIFIER_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const identifier = z.string().regex(IDENTIFIER_PATTERN, 'must be 1-64 characters of [A-Za-z0-9_.-]');

/** A conversation is named by its merchant and its customer: `<merchant>:<customer>`. */
export const CONVERSATION_SEPARATOR = ':';
const conversationId = z
  .string()
  .max(129)
  .refine((value) => parseConversationId(value) !== undefined, 'must be <merchant>:<customer>');

const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A lone surrogate (half of a UTF-16 pair) cannot be encoded as UTF-8, so not stored as a key. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export const clientMessageId = z
  .string()
  .min(1)
  .max(64)
  .refine((value) => !LONE_SURROGATE.test(value), 'must be well-formed Unicode (no lone surrogates)');
const requestId = z.string().min(1).max(64);

export function conversationIdOf(merchant: string, customer: string): string {
  return `${merchant}${CONVERSATION_SEPARATOR}${customer}`;
}

export function parseConversationId(conv: string): { merchant: string; customer: string } | undefined {
  const separatorAt = conv.indexOf(CONVERSATION_SEPARATOR);
  if (separatorAt < 0) return undefined;
  const merchant = conv.slice(0, separatorAt);
  const customer = conv.slice(separatorAt + 1);
  if (!IDENTIFIER_PATTERN.test(merchant) || !IDENTIFIER_PATTERN.test(customer)) return undefined;
  return { merchant, customer };
}

/** Upper bound on a message body, in UTF-16 code units; a frame is also bounded in bytes. */
export const MAX_BODY_CHARS = 16_384;

/** Attachments one message may carry. */
export const MAX_ATTACHMENTS_PER_MESSAGE = 10;
/** An attachment is named by the SHA-256 of its bytes, in lower-case hex (cell/attachments). */
export const attachmentId = z.string().regex(/^[0-9a-f]{64}$/, 'must be an attachment id (64 lower-case hex digits)');
/**
 * The attachments a message names (uploaded to its conversation before), at most
 * MAX_ATTACHMENTS_PER_MESSAGE, each once. A message needs a body, or at least one attachment.
 */
export const messageAttachmentIds = z
  .array(attachmentId)
  .min(1)
  .max(MAX_ATTACHMENTS_PER_MESSAGE)
  .refine((ids) => new Set(ids).size === ids.length, 'must name each attachment once');
export function hasBodyOrAttachments(message: { body: string; attachments?: readonly string[] | undefined }): boolean {
  return message.body.length > 0 || (message.attachments?.length ?? 0) > 0;
}
export const BODY_OR_ATTACHMENTS = 'a message needs a body or at least one attachment';

export const SendFrame = z
  .object({
    op: z.literal('send'),
    id: requestId.optional(),
    conv: conversationId,
    /** Client message id: a resend with the same id returns the same seq and stores nothing new. */
    cmid: clientMessageId,
    body: z.string().max(MAX_BODY_CHARS),
    attachments: messageAttachmentIds.optional(),
    /** A customer's first message of a consultation may name the group it is for (docs/desk.md). */
    group: identifier.optional(),
  })
  .refine(hasBodyOrAttachments, { message: BODY_OR_ATTACHMENTS, path: ['body'] });

/** Most conversations one `ack` frame may acknowledge at once (announced in `welcome.limits`). */
export const MAX_ACKS_PER_FRAME = 256;
/**
 * A cumulative delivery ack: either one conversation (`conv`, `seq`) or many at once (`acks`,
 * conversation to seq), so a device that receives from many conversations acks them in one frame.
 */
export const AckFrame = z
  .object({
    op: z.literal('ack'),
    conv: conversationId.optional(),
    seq: seq.optional(),
    acks: z
      .record(conversationId, seq)
      .refine((acks) => {
        const count = Object.keys(acks).length;
        return count >= 1 && count <= MAX_ACKS_PER_FRAME;
      }, `must name 1-${MAX_ACKS_PER_FRAME} conversations`)
      .optional(),
  })
  .refine(
    (frame) => (frame.acks === undefined ? frame.conv !== undefined && frame.seq !== undefined : frame.conv === undefined && frame.seq === undefined),
    'give either `conv` and `seq`, or `acks`',
  );

/** The (conversation, seq) pairs an ack frame acknowledges, in the frame's order. */
export function ackEntries(frame: AckFrame): Array<[conv: string, seq: number]> {
  return frame.acks === undefined ? [[frame.conv!, frame.seq!]] : Object.entries(frame.acks);
}
export const ReadFrame = z.object({ op: z.literal('read'), id: requestId.optional(), conv: conversationId, seq });
export const HistoryFrame = z.object({
  op: z.literal('history'),
  id: requestId,
  conv: conversationId,
  /** Messages with seq strictly below this; omitted means from the newest. */
  before: seq.optional(),
  limit: z.number().int().min(1).max(200).optional(),
});
export const InboxFrame = z.object({
  op: z.literal('inbox'),
  id: requestId,
  /** Conversations with ids after this one (the last of the page before); omitted: from the first. */
  after: conversationId.optional(),
});
export const PresenceFrame = z
  .object({
    op: z.literal('presence'),
    id: requestId,
    /** Users whose devices to list (agents: anyone of the tenant; customers: themselves). */
    users: z.array(identifier).max(100).optional(),
    /** Merchants whose online agents to count (anyone may ask). */
    merchants: z.array(identifier).max(100).optional(),
  })
  .refine((frame) => (frame.users?.length ?? 0) + (frame.merchants?.length ?? 0) > 0, 'name at least one user or merchant');
export const PingFrame = z.object({ op: z.literal('ping'), id: requestId.optional() });

/** The states an agent sets (docs/desk.md, "Agent status"). */
export const AGENT_STATUSES = ['online', 'busy', 'away', 'offline'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];
/** Longest transfer note and rating comment, in UTF-16 code units. */
export const MAX_NOTE_CHARS = 1_000;

/** An agent sets its status at the desk. */
export const StatusFrame = z.object({ op: z.literal('status'), id: requestId.optional(), status: z.enum(AGENT_STATUSES) });
/** The customer or the assigned agent (or a supervisor) closes the open consultation of `conv`. */
export const CloseFrame = z.object({
  op: z.literal('close'),
  id: requestId.optional(),
  conv: conversationId,
  /** The consultation meant: a close sent again after a reconnect must not close the next one. */
  consultation: identifier.optional(),
});
/** The assigned agent (or a supervisor) hands the consultation of `conv` to another agent or group. */
export const TransferFrame = z
  .object({
    op: z.literal('transfer'),
    id: requestId.optional(),
    conv: conversationId,
    /** The consultation meant (as for `close`). */
    consultation: identifier.optional(),
    agent: identifier.optional(),
    group: identifier.optional(),
    note: z.string().max(MAX_NOTE_CHARS).optional(),
  })
  .refine((frame) => (frame.agent === undefined) !== (frame.group === undefined), 'name exactly one of `agent` and `group`');
/** The customer rates its last closed consultation of `conv`. */
export const RateFrame = z.object({
  op: z.literal('rate'),
  id: requestId.optional(),
  conv: conversationId,
  score: z.number().int().min(1).max(5),
  comment: z.string().max(MAX_NOTE_CHARS).optional(),
});
/** The sender is typing in `conv`: relayed to the other party, never stored. */
export const TypingFrame = z.object({ op: z.literal('typing'), conv: conversationId });
/** An agent asks for its merchant's desk: agents, queues and open consultations. */
export const DeskFrame = z.object({ op: z.literal('desk'), id: requestId });

/** An agent of the merchant (the assigned one, or a supervisor) blocks the customer of `conv`: its sends to the merchant are refused. */
export const BlockFrame = z.object({ op: z.literal('block'), id: requestId.optional(), conv: conversationId, reason: z.string().max(MAX_NOTE_CHARS).optional() });
/** Lifts the merchant's block of the customer of `conv`. */
export const UnblockFrame = z.object({ op: z.literal('unblock'), id: requestId.optional(), conv: conversationId });

export const clientFrameSchemas = {
  send: SendFrame,
  ack: AckFrame,
  read: ReadFrame,
  history: HistoryFrame,
  inbox: InboxFrame,
  presence: PresenceFrame,
  ping: PingFrame,
  status: StatusFrame,
  close: CloseFrame,
  transfer: TransferFrame,
  rate: RateFrame,
  typing: TypingFrame,
  desk: DeskFrame,
  block: BlockFrame,
  unblock: UnblockFrame,
} as const;

export type ClientOp = keyof typeof clientFrameSchemas;
export type SendFrame = z.infer<typeof SendFrame>;
export type AckFrame = z.infer<typeof AckFrame>;
export type ReadFrame = z.infer<typeof ReadFrame>;
export type HistoryFrame = z.infer<typeof HistoryFrame>;
export type InboxFrame = z.infer<typeof InboxFrame>;
export type PresenceFrame = z.infer<typeof PresenceFrame>;
export type PingFrame = z.infer<typeof PingFrame>;
export type StatusFrame = z.infer<typeof StatusFrame>;
export type CloseFrame = z.infer<typeof CloseFrame>;
export type TransferFrame = z.infer<typeof TransferFrame>;
export type RateFrame = z.infer<typeof RateFrame>;
export type DeskFrame = z.infer<typeof DeskFrame>;
export type ClientFrame = { [Op in ClientOp]: z.infer<(typeof clientFrameSchemas)[Op]> }[ClientOp];

export type Role = 'customer' | 'agent';
/** Who wrote a message: a customer, an agent, or the desk (a system message, docs/desk.md). */
export type MessageRole = Role | 'system';

/**
 * What a system message records (its `event`); the body says the same in words. Written by the
 * merchant's desk into the conversation, so every device and the history see it in order.
 */
export const DeskNotice = z.discriminatedUnion('type', [
  z.object({ type: z.literal('queued'), consultation: identifier, group: identifier }),
  z.object({ type: z.literal('assigned'), consultation: identifier, agent: identifier, name: z.string().max(200), sticky: z.boolean() }),
  z.object({
    type: z.literal('transferred'),
    consultation: identifier,
    from: identifier.optional(),
    agent: identifier.optional(),
    name: z.string().max(200).optional(),
    group: identifier.optional(),
    note: z.string().max(MAX_NOTE_CHARS).optional(),
  }),
  z.object({ type: z.literal('released'), consultation: identifier, agent: identifier }),
  z.object({ type: z.literal('closed'), consultation: identifier, by: z.enum(['customer', 'agent', 'inactivity']), agent: identifier.optional() }),
  z.object({ type: z.literal('rated'), consultation: identifier, score: z.number().int().min(1).max(5), comment: z.string().max(MAX_NOTE_CHARS).optional() }),
]);
export type DeskNotice = z.infer<typeof DeskNotice>;

/** A consultation as the desk reports it to devices (`consultation` frames, `desk` answers). */
export interface ConsultationView {
  conv: string;
  consultation: string;
  state: 'waiting' | 'assigned' | 'closed';
  group: string;
  /** The assigned agent, with its display name. */
  agent?: string;
  agentName?: string;
  /** While waiting: 1 is next. */
  position?: number;
  /** While waiting, when the group has agents online: the estimate in ms. */
  estimatedWaitMs?: number;
  openedAtMs: number;
}

/** An attachment as a message carries it: what its conversation's reference entry said when it was sent. */
export interface MessageAttachment {
  id: string;
  name: string;
  /** The media type sniffed from its bytes. */
  type: string;
  bytes: number;
}

/** A stored, sequenced chat message as it travels to devices. */
export interface ChatMessage {
  conv: string;
  seq: number;
  /** The sending user. */
  from: string;
  role: MessageRole;
  /** The device it was sent from (so the sender's other devices can tell it is their own). */
  device: string;
  cmid: string;
  /** May be empty when the message has attachments. */
  body: string;
  /** Files sent with the message (GET /v1/conversations/:conv/attachments/:id); absent when none. */
  attachments?: MessageAttachment[] | undefined;
  /** Set on system messages (role `system`): the desk's change this message records. */
  event?: DeskNotice | undefined;
  /** Cell time when the message became durable, ms since the epoch. */
  ts: number;
}

export interface DeviceInfo {
  device: string;
  sinceMs: number;
}

export interface ConversationSummary {
  conv: string;
  merchant: string;
  customer: string;
  lastSeq: number;
  /** What this device has acknowledged. */
  deliveredSeq: number;
  /** What this user has read. */
  readSeq: number;
  /** Messages after `readSeq`. Sending a message marks the conversation read up to it. */
  unread: number;
  /** Read cursors of the other users of the conversation (`role` tells a customer from an agent of the same id). */
  reads: Array<{ user: string; role: Role; seq: number }>;
}

export interface Limits {
  maxFrameBytes: number;
  maxBodyChars: number;
  ratePerSecond: number;
  rateBurst: number;
  deliveryWindow: number;
  /** Conversations one `ack` frame may name in `acks`; absent from cells that take one per frame. */
  maxAcksPerFrame?: number;
  /**
   * The budget of `ack` frames, besides one per message given to the device (docs/protocol.md,
   * "Limits of a connection"); absent from cells that did not limit acks.
   */
  ackRatePerSecond?: number;
  ackBurst?: number;
}

export type ServerFrame =
  | {
      t: 'welcome';
      v: number;
      cell: string;
      tenant: string;
      user: string;
      role: Role;
      merchant?: string;
      device: string;
      session: string;
      limits: Limits;
    }
  | ({ t: 'msg' } & ChatMessage)
  | { t: 'sent'; id?: string; conv: string; cmid: string; seq: number; ts: number }
  /**
   * A send to a conversation that another cell hosts is durable in this (access) cell, which
   * forwards it; its seq follows in `sent` (docs/protocol.md, "Cross-cell conversations").
   */
  | { t: 'queued'; id?: string; conv: string; cmid: string }
  /** `user` (with `role`: a customer and an agent may share an id) read `conv` up to `seq`. */
  | { t: 'receipt'; conv: string; user: string; role: Role; seq: number }
  /** A device of `role`'s side has every message of `conv` up to `seq` (it acked them). */
  | { t: 'delivered'; conv: string; role: Role; seq: number }
  | { t: 'synced' }
  | { t: 'devices'; user: string; devices: DeviceInfo[] }
  | { t: 'history'; id: string; conv: string; messages: ChatMessage[]; hasMore: boolean }
  | { t: 'inbox'; id: string; conversations: ConversationSummary[]; hasMore: boolean }
  | {
      t: 'presence';
      id: string;
      /** Per id asked: the customer's devices; for an agent who asks, also its merchant's agent of that id, when online. */
      users: Array<{ user: string; role: Role; devices: DeviceInfo[] }>;
      merchants: Array<{ merchant: string; agentsOnline: number }>;
    }
  | { t: 'pong'; id?: string; ts: number }
  /** The state of a consultation of the device's user changed (queue position, assignment, close). */
  | ({ t: 'consultation' } & ConsultationView)
  /** The other party of `conv` is typing. */
  | { t: 'typing'; conv: string; user: string; role: Role }
  /** The answer to `desk`: the merchant's agents, waiting and open consultations. */
  | { t: 'desk'; id: string; agents: Array<{ id: string; name: string; status: AgentStatus; capacity: number; open: number; groups: string[] }>; consultations: ConsultationView[] }
  | { t: 'ok'; id: string }
  /**
   * `conv` and `cmid` name the send an error refuses when the error cannot carry its `id`;
   * `home` is where a MERCHANT_ELSEWHERE redirect sends the device (docs/routing.md).
   */
  | { t: 'error'; id?: string; code: string; message: string; retryAfterMs?: number; conv?: string; cmid?: string; home?: MerchantHome };

/** A merchant's home cell as the gossiped directory names it: what a redirect carries. */
export interface MerchantHome {
  readonly cellId: string;
  /** The WebSocket URL of the cell's `/v1/ws`. */
  readonly ws: string;
  /** The base URL of the cell's HTTP API. */
  readonly http: string;
  /** The epoch of the home's claim; a move raises it. */
  readonly epoch: number;
}
