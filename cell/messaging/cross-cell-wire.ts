import { z } from 'zod';
import { DeskNotice, IDENTIFIER_PATTERN, MAX_ATTACHMENTS_PER_MESSAGE, MAX_BODY_CHARS, MAX_NOTE_CHARS, attachmentId, clientMessageId, parseConversationId, type Role } from '../protocol/frames.js';
import type { ClusterEntry, JsonValue } from './cluster-port.js';
import { conversationParty } from './principal.js';

/**
 * The wire formats of cross-cell conversations (docs/architecture.md, "Cross-cell
 * conversations"): the payloads of outbox entries between cells, and the history protocol an
 * access cell uses to copy a conversation from its home cell. JSON, UTF-8; every payload
 * carries `v: 1`; receivers validate everything with the schemas below and drop what fails.
 */

/** Request/response protocol of history pages (home cell serves, access cells ask). */
export const HISTORY_PROTOCOL = '/cellmesh/history/1.0.0';
/** Most messages one history page may carry. */
export const HISTORY_MAX_PAGE_MESSAGES = 200;
/** Most read cursors a history page may carry. */
export const HISTORY_MAX_READS = 1_000;
/** Largest history request accepted, in bytes, checked before parsing. */
export const HISTORY_MAX_REQUEST_BYTES = 4 * 1024;
/** Largest history response accepted, in bytes, checked before parsing. */
export const HISTORY_MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

const identifier = z.string().regex(IDENTIFIER_PATTERN);
const conversationId = z
  .string()
  .max(129)
  .refine((value) => parseConversationId(value) !== undefined);
const role = z.enum(['customer', 'agent']);
const seq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const cursor = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const errorCode = z.string().min(1).max(64);
const errorMessage = z.string().max(1_024);

const chatMessage = z.object({
  conv: conversationId,
  seq,
  from: identifier,
  role: z.enum(['customer', 'agent', 'system']),
  device: identifier,
  cmid: clientMessageId,
  // Empty when the message has attachments (their metadata travels; their bytes stay in the home cell).
  body: z.string().max(MAX_BODY_CHARS),
  attachments: z
    .array(z.object({ id: attachmentId, name: z.string().min(1).max(255), type: z.string().min(1).max(255), bytes: z.number().int().min(1) }))
    .min(1)
    .max(MAX_ATTACHMENTS_PER_MESSAGE)
    .optional(),
  ts: z.number().finite(),
  event: DeskNotice.optional(),
});

/** What a customer asks of its merchant's desk from another cell: its `close` and `rate` frames. */
const deskAction = z.discriminatedUnion('op', [
  z.object({ op: z.literal('close'), consultation: identifier.optional() }),
  z.object({ op: z.literal('rate'), score: z.number().int().min(1).max(5), comment: z.string().max(MAX_NOTE_CHARS).optional() }),
]);
export type RelayedDeskAction = z.infer<typeof deskAction>;

/**
 * One entry between cells. Only customers' devices are ever on another cell than their
 * conversation's home (agents work in their merchant's home cell), so `user` names a customer
 * except in `receipt`, where `role` says whose cursor moved (docs/protocol.md, "Identity"):
 * - `send` (access cell to home cell): a device's message, to append as that user.
 * - `read` (access cell to home cell): the customer read the conversation up to `seq`.
 * - `message` (home cell to the cells holding the customer's devices): a durable message.
 * - `receipt` (home cell to the same): a read cursor moved.
 * - `gone` (access cell to home cell): the customer has no device here any more; stop sending.
 * - `rejected` (home cell to access cell): a `send` the home cell refuses for good.
 * - `consultation` (home cell to the cells holding the customer's devices): the customer's
 *   consultation changed (its desk's `consultation` frame, docs/protocol.md "The desk").
 * - `typing` (either way): the customer or an agent is typing in the conversation.
 * - `desk` (access cell to home cell): the customer's `close` or `rate`, to apply at the desk.
 * - `desk-answer` (home cell to access cell): how the desk took it (`code` when it refused).
 */
export const CrossCellEntry = z.discriminatedUnion('kind', [
  z.object({
    v: z.literal(1),
    kind: z.literal('send'),
    tenant: identifier,
    conv: conversationId,
    user: identifier,
    role,
    device: identifier,
    cmid: clientMessageId,
    body: z.string().min(1).max(MAX_BODY_CHARS),
    /**
     * The access cell that took the send from the device, when another cell passes it on (the
     * merchant moved away from the cell it was relayed to): the message and any refusal go
     * back there, and the home learns that the customer's devices are there.
     */
    origin: identifier.optional(),
  }),
  z.object({ v: z.literal(1), kind: z.literal('read'), tenant: identifier, conv: conversationId, user: identifier, seq: cursor }),
  z.object({ v: z.literal(1), kind: z.literal('message'), tenant: identifier, message: chatMessage }),
  // `role` is absent from cells of an earlier version: see readerParty.
  z.object({ v: z.literal(1), kind: z.literal('receipt'), tenant: identifier, conv: conversationId, user: identifier, role: role.optional(), seq: cursor }),
  z.object({ v: z.literal(1), kind: z.literal('gone'), tenant: identifier, user: identifier }),
  // Either way: the customer (access to home) or an agent (home to access) is typing in `conv`.
  z.object({ v: z.literal(1), kind: z.literal('typing'), tenant: identifier, conv: conversationId, user: identifier, role }),
  z.object({
    v: z.literal(1),
    kind: z.literal('consultation'),
    tenant: identifier,
    conv: conversationId,
    view: z.object({
      conv: conversationId,
      consultation: identifier,
      state: z.enum(['waiting', 'assigned', 'closed']),
      group: identifier,
      agent: identifier.optional(),
      agentName: z.string().max(200).optional(),
      position: z.number().int().min(1).optional(),
      estimatedWaitMs: z.number().min(0).optional(),
      openedAtMs: z.number().min(0),
    }),
  }),
  z.object({
    v: z.literal(1),
    kind: z.literal('desk'),
    tenant: identifier,
    conv: conversationId,
    user: identifier,
    device: identifier,
    /** Names the request in its answer, and once at the home cell (a batch applied again). */
    request: identifier,
    action: deskAction,
    /** The access cell to answer, when another cell passes the request on (as for `send`). */
    origin: identifier.optional(),
  }),
  z.object({ v: z.literal(1), kind: z.literal('desk-answer'), tenant: identifier, conv: conversationId, request: identifier, code: errorCode.optional(), message: errorMessage.optional() }),
  z.object({
    v: z.literal(1),
    kind: z.literal('rejected'),
    tenant: identifier,
    conv: conversationId,
    user: identifier,
    cmid: clientMessageId,
    code: errorCode,
    message: errorMessage,
  }),
]);
export type CrossCellEntry = z.infer<typeof CrossCellEntry>;
export type CrossCellEntryOf<Kind extends CrossCellEntry['kind']> = Extract<CrossCellEntry, { kind: Kind }>;

/**
 * The party id (principal.ts) of a read cursor a home cell sent: `role` names it; a cell of an
 * earlier version sends no role, and its cursor of the conversation's customer id is taken as
 * the customer's (it kept one cursor per id, so that is the best reading of it).
 */
export function readerParty(conv: string, user: string, role: Role | undefined): string {
  return conversationParty(conv, role ?? (parseConversationId(conv)?.customer === user ? 'customer' : 'agent'), user);
}

/** Builds the outbox entry of a payload; the key names it in the receiver's logs and metrics. */
export function crossCellEntry(payload: CrossCellEntry): ClusterEntry {
  const subject = payload.kind === 'message' ? payload.message.conv : payload.kind === 'gone' ? payload.user : payload.conv;
  return { key: `${payload.kind}/${payload.tenant}/${subject}`, payload: payload as unknown as JsonValue };
}

/** The entry's payload when it is one of ours; undefined for anything else (dropped by the receiver). */
export function parseCrossCellEntry(payload: JsonValue): CrossCellEntry | undefined {
  const parsed = CrossCellEntry.safeParse(payload);
  return parsed.success ? parsed.data : undefined;
}

/**
 * `/cellmesh/history/1.0.0` request: the messages of `conv` after `afterSeq`, ascending, at most
 * `limit`. `follow: true` says the asker holds devices of the conversation's customer now, so the
 * home cell drops its cached location of that customer and finds the asker on its next delivery.
 */
export const HistoryRequest = z.object({
  v: z.literal(1),
  tenant: identifier,
  conv: conversationId,
  afterSeq: cursor,
  limit: z.number().int().min(1).max(HISTORY_MAX_PAGE_MESSAGES),
  follow: z.boolean().optional(),
});
export type HistoryRequest = z.infer<typeof HistoryRequest>;

/**
 * The answer: `messages` continue right after `afterSeq` without a gap (possibly fewer than
 * asked, never none while `lastSeq > afterSeq`); `lastSeq` is the conversation's newest seq at
 * the home cell; `reads` its users' read cursors. Or a refusal with a code: `BAD_REQUEST`,
 * `NOT_HOSTED` (the home cell does not host the conversation's merchant), `STORE_UNAVAILABLE`.
 */
export const HistoryResponse = z.discriminatedUnion('ok', [
  z.object({
    ok: z.literal(true),
    lastSeq: cursor,
    messages: z.array(chatMessage).max(HISTORY_MAX_PAGE_MESSAGES),
    reads: z.array(z.object({ user: identifier, role: role.optional(), seq: cursor })).max(HISTORY_MAX_READS),
  }),
  z.object({ ok: z.literal(false), code: errorCode, message: errorMessage.optional() }),
]);
export type HistoryResponse = z.infer<typeof HistoryResponse>;
export type HistoryPage = Extract<HistoryResponse, { ok: true }>;

export { decodeJson, encodeJson } from '../../platform/wire-json.js';
