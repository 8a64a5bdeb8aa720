import type { ChatMessage, ServerFrame } from '../cell/protocol/frames.js';

/**
 * The result of reading one server frame: a frame whose fields the client relies on have the
 * right types, a frame of a type this build does not know (a newer server may add pushes; they
 * are ignored), or a malformed frame.
 */
export type ParsedServerFrame =
  | { kind: 'frame'; frame: ServerFrame }
  | { kind: 'unknown'; type: string }
  | { kind: 'malformed'; reason: string };

type Fields = Record<string, unknown>;

/**
 * Checks the fields the client reads, not every field of the protocol: the server is trusted to
 * speak the protocol, but a bug there must become a PROTOCOL_ERROR, not a crash in the client.
 */
export function parseServerFrame(text: string): ParsedServerFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return malformed('not JSON');
  }
  if (!isFields(value) || typeof value.t !== 'string') return malformed('not an object with a string `t`');
  const frame = value;
  const type = value.t;
  switch (type) {
    case 'welcome':
      return check(
        frame,
        isInteger(frame.v) &&
          isString(frame.user) &&
          isString(frame.device) &&
          (frame.role === 'customer' || frame.role === 'agent') &&
          isFields(frame.limits) &&
          isInteger(frame.limits.deliveryWindow) &&
          frame.limits.deliveryWindow >= 1 &&
          isNumber(frame.limits.ratePerSecond) &&
          frame.limits.ratePerSecond > 0 &&
          isInteger(frame.limits.rateBurst) &&
          frame.limits.rateBurst >= 1 &&
          (frame.limits.maxAcksPerFrame === undefined || (isInteger(frame.limits.maxAcksPerFrame) && frame.limits.maxAcksPerFrame >= 1)),
      );
    case 'msg':
      return check(frame, isChatMessage(frame));
    case 'sent':
      return check(frame, optionalString(frame.id) && isString(frame.conv) && isString(frame.cmid) && isSeq(frame.seq) && isNumber(frame.ts));
    case 'queued':
      return check(frame, optionalString(frame.id) && isString(frame.conv) && isString(frame.cmid));
    case 'receipt':
      return check(frame, isString(frame.conv) && isString(frame.user) && (frame.role === undefined || isRole(frame.role)) && isCursor(frame.seq));
    case 'delivered':
      return check(frame, isString(frame.conv) && isRole(frame.role) && isCursor(frame.seq));
    case 'synced':
      return check(frame, true);
    case 'devices':
      return check(frame, isString(frame.user) && Array.isArray(frame.devices));
    case 'history':
      return check(
        frame,
        isString(frame.id) &&
          isString(frame.conv) &&
          Array.isArray(frame.messages) &&
          frame.messages.every(isChatMessage) &&
          typeof frame.hasMore === 'boolean',
      );
    case 'inbox':
      return check(frame, isString(frame.id) && Array.isArray(frame.conversations) && (frame.hasMore === undefined || typeof frame.hasMore === 'boolean'));
    case 'presence':
      return check(frame, isString(frame.id) && Array.isArray(frame.users) && Array.isArray(frame.merchants));
    case 'pong':
      return check(frame, optionalString(frame.id) && isNumber(frame.ts));
    case 'ok':
      return check(frame, isString(frame.id));
    case 'error':
      return check(
        frame,
        optionalString(frame.id) &&
          isString(frame.code) &&
          isString(frame.message) &&
          (frame.retryAfterMs === undefined || isNumber(frame.retryAfterMs)) &&
          optionalString(frame.conv) &&
          optionalString(frame.cmid) &&
          (frame.home === undefined || isHome(frame.home)),
      );
    case 'consultation':
      return check(
        frame,
        isString(frame.conv) && isString(frame.consultation) && isString(frame.state) && isString(frame.group) && isNumber(frame.openedAtMs) && optionalString(frame.agent),
      );
    case 'typing':
      return check(frame, isString(frame.conv) && isString(frame.user) && isRole(frame.role));
    case 'desk':
      return check(frame, isString(frame.id) && Array.isArray(frame.agents) && Array.isArray(frame.consultations));
    default:
      return { kind: 'unknown', type };
  }
}

/** The message of a `msg` frame without the frame's own field. */
export function chatMessageOf(frame: ChatMessage): ChatMessage {
  return {
    conv: frame.conv,
    seq: frame.seq,
    from: frame.from,
    role: frame.role,
    device: frame.device,
    cmid: frame.cmid,
    body: frame.body,
    ...(frame.attachments === undefined ? {} : { attachments: frame.attachments }),
    ts: frame.ts,
    ...(frame.event === undefined ? {} : { event: frame.event }),
  };
}

function check(frame: Fields, valid: boolean): ParsedServerFrame {
  // The checks above established the shape the client relies on for this `t`.
  return valid ? { kind: 'frame', frame: frame as unknown as ServerFrame } : malformed(`bad fields in a '${String(frame.t)}' frame`);
}

function malformed(reason: string): ParsedServerFrame {
  return { kind: 'malformed', reason };
}

function isChatMessage(value: unknown): value is ChatMessage {
  return (
    isFields(value) &&
    isString(value.conv) &&
    isSeq(value.seq) &&
    isString(value.from) &&
    (value.role === 'customer' || value.role === 'agent' || value.role === 'system') &&
    isString(value.device) &&
    isString(value.cmid) &&
    isString(value.body) &&
    (value.attachments === undefined || Array.isArray(value.attachments)) &&
    isNumber(value.ts) &&
    (value.event === undefined || (isFields(value.event) && isString(value.event.type)))
  );
}

function isFields(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A redirect's home: the client connects to its `ws`. */
function isHome(value: unknown): boolean {
  return isFields(value) && isString(value.cellId) && isString(value.ws) && isString(value.http) && isInteger(value.epoch);
}

function isString(value: unknown): value is string {
  return typeof value === 'string';
}

function isRole(value: unknown): boolean {
  return value === 'customer' || value === 'agent';
}

function optionalString(value: unknown): boolean {
  return value === undefined || typeof value === 'string';
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isInteger(value: unknown): value is number {
  return Number.isSafeInteger(value);
}

/** A message's seq: conversations number their messages from 1. */
function isSeq(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1;
}

/** A cursor ("up to seq"): 0 means nothing yet. */
function isCursor(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}
