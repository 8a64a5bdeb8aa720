import {
  IDENTIFIER_PATTERN,
  MAX_ACKS_PER_FRAME,
  MAX_ATTACHMENTS_PER_MESSAGE,
  MAX_BODY_CHARS,
  parseConversationId,
  type AckFrame,
  type ReadFrame,
  type SendFrame,
} from './frames.js';

/**
 * Hand-checked decoders of the frames every message costs (`send`, `ack`, `read`), beside their
 * zod schemas in frames.ts: a general schema library walks its checks through closures and
 * allocates issues and copies on the way, which was a tenth of the core's work per message.
 *
 * Each decoder accepts exactly what its schema accepts and returns what the schema's parse
 * returns (known fields only, unknown ones dropped), and returns undefined for anything else:
 * the caller then parses with the schema, which says what is wrong. So the schema stays the one
 * definition of a frame and of its error messages; hot-frames.test.ts checks on generated
 * frames, valid and not, that the two agree.
 */
type Raw = Record<string, unknown>;

const REQUEST_ID_MAX = 64;
const CMID_MAX = 64;
const CONVERSATION_MAX = 129;
const ATTACHMENT_ID = /^[0-9a-f]{64}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function decodeSend(raw: Raw): SendFrame | undefined {
  const { id, conv, cmid, body, attachments, group } = raw;
  if (id !== undefined && !isRequestId(id)) return undefined;
  if (!isConversationId(conv)) return undefined;
  if (typeof cmid !== 'string' || cmid.length < 1 || cmid.length > CMID_MAX || LONE_SURROGATE.test(cmid)) return undefined;
  if (typeof body !== 'string' || body.length > MAX_BODY_CHARS) return undefined;
  if (attachments !== undefined && !isAttachmentIds(attachments)) return undefined;
  if (group !== undefined && !(typeof group === 'string' && IDENTIFIER_PATTERN.test(group))) return undefined;
  if (body.length === 0 && attachments === undefined) return undefined;
  const frame: SendFrame = { op: 'send', conv, cmid, body };
  if (id !== undefined) frame.id = id;
  if (attachments !== undefined) frame.attachments = attachments;
  if (group !== undefined) frame.group = group;
  return frame;
}

export function decodeAck(raw: Raw): AckFrame | undefined {
  const { conv, seq, acks } = raw;
  if (acks === undefined) {
    if (!isConversationId(conv) || !isSeq(seq)) return undefined;
    return { op: 'ack', conv, seq };
  }
  if (conv !== undefined || seq !== undefined) return undefined;
  if (typeof acks !== 'object' || acks === null || Array.isArray(acks)) return undefined;
  let count = 0;
  const decoded: Record<string, number> = {};
  for (const key in acks) {
    if (!Object.hasOwn(acks, key)) continue;
    const value = (acks as Raw)[key];
    if (!isConversationId(key) || !isSeq(value)) return undefined;
    decoded[key] = value;
    if (++count > MAX_ACKS_PER_FRAME) return undefined;
  }
  if (count === 0) return undefined;
  return { op: 'ack', acks: decoded };
}

export function decodeRead(raw: Raw): ReadFrame | undefined {
  const { id, conv, seq } = raw;
  if (id !== undefined && !isRequestId(id)) return undefined;
  if (!isConversationId(conv) || !isSeq(seq)) return undefined;
  return id === undefined ? { op: 'read', conv, seq } : { op: 'read', id, conv, seq };
}

/** The decoder of each hot frame's op. */
export const hotFrameDecoders: ReadonlyMap<string, (raw: Raw) => SendFrame | AckFrame | ReadFrame | undefined> = new Map<string, (raw: Raw) => SendFrame | AckFrame | ReadFrame | undefined>([
  ['send', decodeSend],
  ['ack', decodeAck],
  ['read', decodeRead],
]);

function isRequestId(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 1 && value.length <= REQUEST_ID_MAX;
}

function isConversationId(value: unknown): value is string {
  return typeof value === 'string' && value.length <= CONVERSATION_MAX && parseConversationId(value) !== undefined;
}

function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isAttachmentIds(value: unknown): value is string[] {
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_ATTACHMENTS_PER_MESSAGE) return false;
  for (const id of value) if (typeof id !== 'string' || !ATTACHMENT_ID.test(id)) return false;
  return new Set(value).size === value.length;
}
