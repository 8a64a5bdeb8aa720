import { z } from 'zod';

/**
 * Cross-cell forwarding from a durable outbox (guarantee 6 of the brief): the protocol and its
 * wire format. The sending side is outbox.ts, the receiving side inbox.ts, the store keys both
 * use forward-store.ts.
 *
 * The sending cell appends entries for a destination cell to its Store, in the same atomic
 * write as the data they come from when it wants (`enqueueOps`); a sender loop per destination
 * then sends them in order, in bounded batches, over the request/response protocol
 * `/cellmesh/forward/1.0.0`, and deletes them once the destination acknowledged them. While the
 * destination is unreachable the loop retries with exponential backoff and jitter, forever:
 * nothing is dropped, and order is kept per destination, hence per conversation. A new Outbox
 * on the same Store resumes from what is stored.
 *
 * The receiving cell's Inbox deduplicates by a persisted per-source high-water mark: every
 * entry carries the source's sequence number for that destination, and only entries above the
 * mark reach the handler, in order. The handler may return StoreOps; the Inbox writes them in
 * one atomic write together with the new mark, which makes application exactly-once even if the
 * receiver crashes before its ack leaves: the resend finds the mark already moved.
 *
 * Incarnations ("epochs") of a source. Sequence numbers are only meaningful within one outbox
 * store: a source that lost its store (a disk replaced, a cell rebuilt) starts again at 1, and a
 * receiver comparing those numbers with the old mark would drop everything as duplicates. So the
 * outbox store holds an epoch `{id, generation}`, made once when the store is first used: `id`
 * is random, `generation` starts at 1. The receiver keeps the epoch with the mark:
 * - same `id`: the same outbox; the mark applies (the generation may have grown, see below).
 * - another `id` with a higher generation: a new incarnation; the mark restarts at 0.
 * - another `id` with a generation not higher: refused with `STALE_EPOCH` and the generation the
 *   receiver knows. The sender then raises its own generation above it, persists that, and
 *   retries; its `id` stays, so receivers that already know it keep their marks.
 * A fresh store therefore costs one refused round trip per receiver that knew the old one, and
 * a late request of a dead incarnation (lower generation, other id) can never reset a mark.
 * Two live processes sharing one cell id with different stores would keep outbidding each other
 * and cause duplicates: a configuration error that the `epochChanges` counter makes visible.
 */

export const FORWARD_PROTOCOL = '/cellmesh/forward/1.0.0';

/** Most entries one forward request may carry; a receiver rejects more. */
export const FORWARD_WIRE_MAX_ENTRIES = 4_096;
/** Longest entry key, in UTF-16 code units. */
export const FORWARD_MAX_KEY_CHARS = 256;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** What the receiver's handler gets: the entry with the sequence number its source gave it. */
export interface ForwardedEntry {
  readonly seq: number;
  readonly key: string;
  readonly payload: JsonValue;
}

/** Codes of a refused forward request, as the receiver answers them on the wire. */
export type ForwardRefusalCode =
  | 'BAD_REQUEST'
  | 'UNKNOWN_SENDER'
  | 'SENDER_MISMATCH'
  | 'STALE_EPOCH'
  | 'NOT_READY'
  | 'BUSY'
  | 'HANDLER_FAILED'
  | 'STORE_UNAVAILABLE';

// The formats are JSON, UTF-8. Unknown fields are ignored, so a later minor version may add some.

/** Cell ids come from configuration; bounded and printable, nothing more is assumed here. */
export const cellIdSchema = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/);
const seqSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
export const epochSchema = z.object({
  id: z.string().regex(/^[0-9a-z]{1,64}$/),
  generation: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
});
export type OutboxEpoch = z.infer<typeof epochSchema>;

/** `/cellmesh/forward/1.0.0` request: a batch of entries of one source for this cell, ascending by seq. */
export const ForwardRequest = z.object({
  v: z.literal(1),
  sourceCellId: cellIdSchema,
  epoch: epochSchema,
  entries: z
    .array(z.object({ seq: seqSchema, key: z.string().min(1).max(FORWARD_MAX_KEY_CHARS), payload: z.json() }))
    .min(1)
    .max(FORWARD_WIRE_MAX_ENTRIES),
});
export type ForwardRequest = z.infer<typeof ForwardRequest>;

/** The answer: `{ok: true, hw}` (every entry up to `hw` is applied) or a refusal with a code. */
export const ForwardResponse = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), hw: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
  z.object({
    ok: z.literal(false),
    code: z.string().min(1).max(64),
    message: z.string().max(1_024).optional(),
    /** With STALE_EPOCH: the generation the receiver knows for this source. */
    generation: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  }),
]);
export type ForwardResponse = z.infer<typeof ForwardResponse>;
