import { z } from 'zod';
import { CellIdSchema, SignedRecordSchema } from './cell-record.js';

/**
 * Topics and request/response protocols of the membership core, and the JSON shapes they carry.
 * Every message is UTF-8 JSON, validated with these schemas on receipt; a message that does not
 * parse is rejected (topic validators answer 'reject', request handlers fail the request).
 * A new incompatible format gets a new topic or protocol version; unknown fields are ignored.
 */
export const MembershipTopic = Object.freeze({
  /** SignedRecord envelopes, each published by the cell it describes. */
  directory: 'cellmesh/directory/v1',
  /** Heartbeat: `{ cellId, incarnation, version, intervalMs? }` from each cell every heartbeat interval. */
  heartbeat: 'cellmesh/heartbeat/v1',
  /** Liveness claims: `{ kind: 'suspect' | 'dead', cellId, incarnation, by }`. */
  membership: 'cellmesh/membership/v1',
});

export const MembershipProtocol = Object.freeze({
  /** Request `{}`; answer `{ cellId, incarnation, version }` of the answering cell. */
  ping: '/cellmesh/ping/1.0.0',
  /** Request `{ target, peer, timeoutMs }`; the helper pings `peer` and answers `{ ok }`. */
  pingReq: '/cellmesh/ping-req/1.0.0',
  /** Request `{ digest, claims }`; answer `{ records, claims, newer, more }` (see anti-entropy.ts). */
  antiEntropy: '/cellmesh/anti-entropy/1.0.0',
  /** Request `{ records }`; answer `{ accepted }`. */
  antiEntropyPush: '/cellmesh/anti-entropy-push/1.0.0',
  /**
   * Request: a liveness claim (as on the membership topic) about the answering cell, from the
   * cell that holds it; answer `{}`. How a claim is reannounced to the one cell that must refute it.
   */
  claim: '/cellmesh/claim/1.0.0',
});

const CounterSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** The longest heartbeat interval a heartbeat may announce (an hour). */
export const MAX_HEARTBEAT_INTERVAL_MS = 3_600_000;

export const HeartbeatSchema = z.object({
  cellId: CellIdSchema,
  incarnation: CounterSchema,
  version: CounterSchema,
  /**
   * The sender's heartbeat interval, present only when stretched beyond `heartbeatIntervalMs`
   * for a large cluster (detector-timing.ts heartbeatIntervalMs()); receivers give it that much
   * more silence before probing it. Cells without it ignore the field.
   */
  intervalMs: z.number().int().min(1).max(MAX_HEARTBEAT_INTERVAL_MS).optional(),
});
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

export const LivenessClaimMessageSchema = z.object({
  kind: z.enum(['suspect', 'dead']),
  /** The cell the claim is about. */
  cellId: CellIdSchema,
  /** The incarnation of that cell the claim is about; a higher one refutes it. */
  incarnation: CounterSchema,
  /** The cell making the claim; must be the publisher of the message. */
  by: CellIdSchema,
});
export type LivenessClaimMessage = z.infer<typeof LivenessClaimMessageSchema>;

export const PingRequestSchema = z.object({});
export const PingAnswerSchema = HeartbeatSchema;

export const PingReqRequestSchema = z.object({
  target: CellIdSchema,
  peer: z.string().min(1).max(256),
  timeoutMs: z.number().int().min(1).max(60_000),
});
export type PingReqRequest = z.infer<typeof PingReqRequestSchema>;
export const PingReqAnswerSchema = z.object({ ok: z.boolean() });

/** A dead tombstone carried by anti-entropy: "cellId was declared dead at this incarnation". */
export const DeadClaimSchema = z.object({ cellId: CellIdSchema, incarnation: CounterSchema });
export type DeadClaim = z.infer<typeof DeadClaimSchema>;

/** Bounds of lists on the wire; the directory's own bounds keep senders below them. */
const MAX_LIST = 16_384;

export const AntiEntropyRequestSchema = z.object({
  /** cellId -> [incarnation, version] of every record the asker holds. */
  digest: z.record(CellIdSchema, z.tuple([CounterSchema, CounterSchema])),
  claims: z.array(DeadClaimSchema).max(MAX_LIST),
});
export type AntiEntropyRequest = z.infer<typeof AntiEntropyRequestSchema>;

export const AntiEntropyAnswerSchema = z.object({
  /** Records the answerer holds newer than the digest (or absent from it). */
  records: z.array(SignedRecordSchema).max(MAX_LIST),
  claims: z.array(DeadClaimSchema).max(MAX_LIST),
  /** Cells for which the asker's digest is newer than what the answerer holds: push them. */
  newer: z.array(CellIdSchema).max(MAX_LIST),
  /** True when `records` was cut at the size bound: ask again with the updated digest. */
  more: z.boolean(),
});
export type AntiEntropyAnswer = z.infer<typeof AntiEntropyAnswerSchema>;

export const AntiEntropyPushSchema = z.object({ records: z.array(SignedRecordSchema).max(MAX_LIST) });
export const AntiEntropyPushAnswerSchema = z.object({ accepted: CounterSchema });

export { encodeJson, type DecodeFailure } from '../platform/wire-json.js';
/** Decodes UTF-8 JSON bytes against `schema`, refusing more than `maxBytes` before parsing. Never throws. */
export { decodeJsonResult as decodeJson } from '../platform/wire-json.js';
