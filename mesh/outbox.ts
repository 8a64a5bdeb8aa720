import { Counter, Gauge, type Registry } from 'prom-client';
import { z } from 'zod';
import type { StoreOp, Store } from '../platform/store/store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { randomId, type Random } from '../platform/random.js';
import { decodeJson, encodeJson, parseJson } from '../platform/wire-json.js';
import type { MeshTransport, PeerId } from './transport.js';
import { CodedError } from '../platform/coded-error.js';

/**
 * Cross-cell forwarding from a durable outbox (guarantee 6 of the brief).
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
 *
 * Store keys (ASCII; cell ids are URI-encoded, so '/' separates fields):
 *   mesh/outbox/<dest>/<seq, 16 digits>   an entry waiting for <dest>: {key, payload, enqueuedAtMs}
 *   mesh/outbox-acked/<dest>              the highest seq <dest> acknowledged (so numbering never restarts)
 *   mesh/outbox-epoch                     this outbox store's epoch {id, generation}
 *   mesh/inbox-hw/<source>                the receiver's mark for <source> {epochId, generation, hw}
 */

export const FORWARD_PROTOCOL = '/cellmesh/forward/1.0.0';

/** Defaults of OutboxInit and InboxInit, in one place; docs/mesh.md quotes them. */
export const OUTBOX_DEFAULTS = {
  maxBatchEntries: 256,
  maxBatchBytes: 256 * 1024,
  maxEntryBytes: 64 * 1024,
  maxEnqueueEntries: 4_096,
  maxWaitingEntries: 100_000,
  maxDestinations: 1_024,
  requestTimeoutMs: 5_000,
  backoffInitialMs: 100,
  backoffMaxMs: 10_000,
} as const;

export const INBOX_DEFAULTS = {
  maxRequestBytes: 4 * 1024 * 1024,
  maxQueuedRequestsPerSource: 4,
  maxCachedSources: 4_096,
} as const;

/** Most entries one forward request may carry; a receiver rejects more. */
export const FORWARD_WIRE_MAX_ENTRIES = 4_096;
/** Longest entry key, in UTF-16 code units. */
export const FORWARD_MAX_KEY_CHARS = 256;

const SEQ_DIGITS = 16;
/** Scans at start read the store in pages of this many entries. */
const SCAN_PAGE_ENTRIES = 1_024;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** What a caller hands to the outbox: `key` names the entry for the receiver (for example a message id). */
export interface OutboxEntry {
  readonly key: string;
  readonly payload: JsonValue;
}

/** What the receiver's handler gets: the entry with the sequence number its source gave it. */
export interface ForwardedEntry {
  readonly seq: number;
  readonly key: string;
  readonly payload: JsonValue;
}

export type OutboxErrorCode =
  | 'OUTBOX_NOT_STARTED'
  | 'OUTBOX_STOPPED'
  | 'OUTBOX_FULL'
  | 'OUTBOX_TOO_MANY_DESTINATIONS'
  | 'OUTBOX_INVALID_DESTINATION'
  | 'OUTBOX_INVALID_ENTRY'
  | 'OUTBOX_STORE_FAILED';

/** A typed outbox failure with a stable code; callers and tests match on `code`. */
export class OutboxError extends CodedError<OutboxErrorCode> {}

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

// ---------------------------------------------------------------------------------------------
// Wire formats (JSON, UTF-8). Unknown fields are ignored, so a later minor version may add some.

const cellIdSchema = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/);
const seqSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const epochSchema = z.object({
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

const StoredEntry = z.object({ key: z.string(), payload: z.json(), enqueuedAtMs: z.number() });
const StoredMark = z.object({ epochId: z.string(), generation: z.number().int().min(1), hw: z.number().int().min(0) });
type StoredMark = z.infer<typeof StoredMark>;

// ---------------------------------------------------------------------------------------------
// Keys

function encodeSeq(seq: number): string {
  return seq.toString().padStart(SEQ_DIGITS, '0');
}

const OUTBOX_PREFIX = 'mesh/outbox/';
/** '0' follows '/' in ASCII: closes the range of every `mesh/outbox/...` key. */
const OUTBOX_PREFIX_END = 'mesh/outbox0';

const ACKED_PREFIX = 'mesh/outbox-acked/';
const ACKED_PREFIX_END = 'mesh/outbox-acked0';

export const outboxKeys = {
  entry: (destination: string, seq: number) => `${OUTBOX_PREFIX}${encodeURIComponent(destination)}/${encodeSeq(seq)}`,
  entries: (destination: string) => `${OUTBOX_PREFIX}${encodeURIComponent(destination)}/`,
  acked: (destination: string) => `${ACKED_PREFIX}${encodeURIComponent(destination)}`,
  epoch: 'mesh/outbox-epoch',
  inboxMark: (source: string) => `mesh/inbox-hw/${encodeURIComponent(source)}`,
};

/** The destination and seq of an outbox entry key; undefined for another key. */
function parseEntryKey(key: string): { destination: string; seq: number } | undefined {
  if (!key.startsWith(OUTBOX_PREFIX)) return undefined;
  const rest = key.slice(OUTBOX_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const seq = Number(rest.slice(slash + 1));
  if (!Number.isSafeInteger(seq) || seq < 1) return undefined;
  try {
    return { destination: decodeURIComponent(rest.slice(0, slash)), seq };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Outbox (sending side)

export interface OutboxInit {
  /** Most entries per forward request (default 256). */
  readonly maxBatchEntries?: number;
  /** Most bytes of entries per forward request (default 256 KiB); a single entry always goes. */
  readonly maxBatchBytes?: number;
  /** Largest entry (its JSON), in bytes (default 64 KiB); larger ones are refused at enqueue. */
  readonly maxEntryBytes?: number;
  /** Most entries in one enqueue call (default 4,096). */
  readonly maxEnqueueEntries?: number;
  /** Most entries waiting for one destination; beyond, enqueue rejects `OUTBOX_FULL` (default 100,000). */
  readonly maxWaitingEntries?: number;
  /** Most destinations with state in memory (default 1,024; a cluster has fewer cells). */
  readonly maxDestinations?: number;
  /** Timeout of one forward request (default 5 s). */
  readonly requestTimeoutMs?: number;
  /** First retry delay after a failed attempt (default 100 ms); doubles per failure. */
  readonly backoffInitialMs?: number;
  /** Longest retry delay (default 10 s): the bound on how long a healed link stays idle. */
  readonly backoffMaxMs?: number;
}

export interface OutboxComponents {
  readonly store: Store;
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  /** This cell's id, as the directory knows it. */
  readonly cellId: string;
  /** The peer of a cell now, from the directory; asked again at every attempt (addresses change). */
  readonly resolvePeer: (cellId: string) => PeerId | undefined;
  /** Where to register the Prometheus metrics; none when omitted (`stats()` still counts). */
  readonly registry?: Registry;
}

/**
 * Sequence numbers reserved by `enqueueOps` and the ops that store the entries. The caller puts
 * `ops` in one of its own atomic writes and then calls exactly one of `committed()` (the write
 * resolved) or `abandoned()` (it rejected). Until then the destination's sender holds back every
 * later entry, because sending a later seq first would move the receiver's mark past this one.
 * A reservation never settled stalls its destination: settle it in a `finally`.
 */
export interface OutboxReservation {
  readonly destination: string;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly ops: readonly StoreOp[];
  committed(): void;
  abandoned(): void;
}

export interface WaitingInfo {
  /** Entries stored and not yet acknowledged (not counting unsettled reservations). */
  readonly entries: number;
  /** When the oldest of them was enqueued (clock ms), as far as the sender has read; undefined when none. */
  readonly oldestEnqueuedAtMs: number | undefined;
}

export interface OutboxStats {
  enqueuedEntries: number;
  /** Entries acknowledged by their destination and deleted. */
  ackedEntries: number;
  attempts: number;
  failedAttempts: number;
  /** Stored entries that could not be read back (corrupt) and were dropped. */
  corruptEntries: number;
  /** Generation raises after a STALE_EPOCH refusal. */
  epochRaises: number;
}

interface PendingReservation {
  readonly firstSeq: number;
  readonly count: number;
}

interface Destination {
  readonly id: string;
  nextSeq: number;
  /** Highest seq acknowledged; the next batch is read from above it. */
  ackedSeq: number;
  waiting: number;
  reserved: number;
  oldestEnqueuedAtMs: number | undefined;
  /** Unsettled reservations, ascending by firstSeq (they are made in that order). */
  readonly reservations: PendingReservation[];
  attempt: number;
  /** Bumped by every event that may give the loop work, so a wake-up between its read and its wait is not lost. */
  workVersion: number;
  loop: Promise<void> | undefined;
  /** Wakes the loop when it waits for work (idle) or for its backoff delay. */
  wakeIdle: (() => void) | undefined;
  wakeSleep: (() => void) | undefined;
  readonly flushWaiters: Array<() => void>;
}

interface LoadedEntry {
  readonly seq: number;
  readonly storeKey: string;
  readonly key: string;
  readonly payload: JsonValue;
  readonly enqueuedAtMs: number;
}

type Attempt = { kind: 'acked'; hw: number } | { kind: 'failed'; code: string } | { kind: 'stale'; generation: number };

/**
 * The sending side of cross-cell forwarding. Lifecycle: `start()` once (after the store is open
 * and the transport started) loads the epoch and what is waiting and starts the sender loops;
 * `stop()` aborts requests under way, ends the loops and resolves when they have; close the store
 * after it. An Outbox is not restarted: make a new one on the same store.
 */
export class Outbox {
  private readonly settings: Required<OutboxInit>;
  private readonly destinations = new Map<string, Destination>();
  private readonly abort = new AbortController();
  private epoch: OutboxEpoch | undefined;
  private epochWrites: Promise<void> = Promise.resolve();
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  private readonly statsCounts: OutboxStats = { enqueuedEntries: 0, ackedEntries: 0, attempts: 0, failedAttempts: 0, corruptEntries: 0, epochRaises: 0 };
  private readonly prom: ReturnType<Outbox['createPromMetrics']> | undefined;

  constructor(
    private readonly components: OutboxComponents,
    init: OutboxInit = {},
  ) {
    this.settings = { ...OUTBOX_DEFAULTS, ...stripUndefined(init) };
    const { maxBatchEntries, maxBatchBytes, maxEntryBytes, backoffInitialMs, backoffMaxMs } = this.settings;
    if (!Number.isInteger(maxBatchEntries) || maxBatchEntries < 1 || maxBatchEntries > FORWARD_WIRE_MAX_ENTRIES) {
      throw new RangeError(`maxBatchEntries must be an integer in [1, ${FORWARD_WIRE_MAX_ENTRIES}]`);
    }
    if (maxEntryBytes < 1 || maxBatchBytes < maxEntryBytes) throw new RangeError('maxBatchBytes must be at least maxEntryBytes');
    if (backoffInitialMs < 1 || backoffMaxMs < backoffInitialMs) throw new RangeError('need 1 <= backoffInitialMs <= backoffMaxMs');
    this.prom = components.registry === undefined ? undefined : this.createPromMetrics(components.registry);
  }

  /** The epoch of this outbox store (after start). */
  get currentEpoch(): OutboxEpoch | undefined {
    return this.epoch === undefined ? undefined : { ...this.epoch };
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new OutboxError('OUTBOX_STOPPED', 'an Outbox starts once; make a new one on the same store');
    this.state = 'starting';
    const { store } = this.components;
    const storedEpoch = await store.get(outboxKeys.epoch);
    const parsedEpoch = storedEpoch === undefined ? undefined : parseJson(epochSchema, storedEpoch);
    if (storedEpoch !== undefined && parsedEpoch === undefined) {
      // A new epoch would make receivers reapply whatever of the stored entries they already
      // applied; refusing to start is the lesser harm, and an operator can look at the store.
      this.state = 'stopped';
      throw new OutboxError('OUTBOX_STORE_FAILED', `unreadable outbox epoch at ${outboxKeys.epoch}: ${storedEpoch.slice(0, 100)}`);
    }
    if (parsedEpoch === undefined) {
      // First use of this store: a new incarnation.
      this.epoch = { id: randomId(this.components.random, 16), generation: 1 };
      await store.write([{ type: 'put', key: outboxKeys.epoch, value: JSON.stringify(this.epoch) }]);
    } else {
      this.epoch = parsedEpoch;
    }
    await this.loadWaiting();
    if (this.state !== 'starting') return; // stopped while starting
    this.state = 'running';
    for (const destination of this.destinations.values()) this.ensureLoop(destination);
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.abort.abort();
    for (const destination of this.destinations.values()) {
      destination.wakeIdle?.();
      destination.wakeSleep?.();
    }
    await Promise.all([...this.destinations.values()].map((destination) => destination.loop));
    for (const destination of this.destinations.values()) for (const resolve of destination.flushWaiters.splice(0)) resolve();
    if (this.prom !== undefined && this.components.registry !== undefined) {
      for (const name of OUTBOX_METRIC_NAMES) this.components.registry.removeSingleMetric(name);
    }
  }

  /**
   * Appends entries for `destination` durably and resolves once the write is durable; they will
   * be delivered in this order, after every entry enqueued for that destination before. Rejects
   * with OutboxError (`OUTBOX_NOT_STARTED`, `OUTBOX_INVALID_DESTINATION`, `OUTBOX_INVALID_ENTRY`,
   * `OUTBOX_FULL`, `OUTBOX_TOO_MANY_DESTINATIONS`, `OUTBOX_STORE_FAILED`).
   */
  async enqueue(destination: string, entries: readonly OutboxEntry[]): Promise<void> {
    const reservation = this.enqueueOps(destination, entries);
    try {
      await this.components.store.write(reservation.ops);
    } catch (error) {
      reservation.abandoned();
      throw new OutboxError('OUTBOX_STORE_FAILED', `could not store ${entries.length} outbox entries for ${destination}`, { cause: error });
    }
    reservation.committed();
  }

  /**
   * Reserves sequence numbers for `entries` and returns the StoreOps that store them, for the
   * caller to write atomically with its own data (a message and its forward together). See
   * OutboxReservation for the obligations. Throws OutboxError synchronously on invalid input,
   * a full outbox or a stopped one.
   */
  enqueueOps(destination: string, entries: readonly OutboxEntry[]): OutboxReservation {
    if (this.state !== 'running') {
      throw new OutboxError(this.state === 'stopped' ? 'OUTBOX_STOPPED' : 'OUTBOX_NOT_STARTED', 'the outbox is not running');
    }
    if (!cellIdSchema.safeParse(destination).success || destination === this.components.cellId) {
      throw new OutboxError('OUTBOX_INVALID_DESTINATION', `not a valid destination cell: ${JSON.stringify(destination).slice(0, 140)}`);
    }
    if (entries.length === 0 || entries.length > this.settings.maxEnqueueEntries) {
      throw new OutboxError('OUTBOX_INVALID_ENTRY', `enqueue takes 1 to ${this.settings.maxEnqueueEntries} entries, got ${entries.length}`);
    }
    const enqueuedAtMs = this.components.clock.now();
    const values = entries.map((entry, index) => this.encodeEntry(entry, index, enqueuedAtMs));
    const state = this.destinationState(destination);
    if (state.waiting + state.reserved + entries.length > this.settings.maxWaitingEntries) {
      throw new OutboxError('OUTBOX_FULL', `${state.waiting + state.reserved} entries already wait for ${destination}`);
    }
    const firstSeq = state.nextSeq;
    state.nextSeq += entries.length;
    state.reserved += entries.length;
    const pending: PendingReservation = { firstSeq, count: entries.length };
    state.reservations.push(pending);
    const ops: StoreOp[] = values.map((value, index) => ({ type: 'put', key: outboxKeys.entry(destination, firstSeq + index), value }));
    let settled = false;
    const settle = (durable: boolean): void => {
      if (settled) return;
      settled = true;
      const at = state.reservations.indexOf(pending);
      if (at >= 0) state.reservations.splice(at, 1);
      state.reserved -= pending.count;
      if (durable) {
        state.waiting += pending.count;
        state.oldestEnqueuedAtMs ??= enqueuedAtMs;
        this.statsCounts.enqueuedEntries += pending.count;
        this.prom?.enqueued.inc(pending.count);
      }
      state.workVersion++;
      state.wakeIdle?.();
      this.resolveFlushWaiters(state);
    };
    this.ensureLoop(state);
    return {
      destination,
      firstSeq,
      lastSeq: firstSeq + entries.length - 1,
      ops,
      committed: () => settle(true),
      abandoned: () => settle(false),
    };
  }

  /** Entries waiting per destination (destinations with none are included once known). */
  waiting(): Map<string, WaitingInfo> {
    const result = new Map<string, WaitingInfo>();
    for (const [id, state] of this.destinations) result.set(id, { entries: state.waiting, oldestEnqueuedAtMs: state.oldestEnqueuedAtMs });
    return result;
  }

  /** Resolves when nothing waits for `destination` (no entry, no unsettled reservation), or on stop. */
  flushed(destination: string): Promise<void> {
    const state = this.destinations.get(destination);
    if (state === undefined || this.state === 'stopped' || (state.waiting === 0 && state.reserved === 0)) return Promise.resolve();
    return new Promise((resolve) => state.flushWaiters.push(resolve));
  }

  /**
   * Cuts the backoff of `destination` (or of every destination) short: call it when the
   * directory learns that a cell is reachable again, so a healed link does not wait up to
   * `backoffMaxMs` for the next attempt.
   */
  nudge(destination?: string): void {
    const targets = destination === undefined ? [...this.destinations.values()] : [this.destinations.get(destination)];
    for (const state of targets) {
      if (state === undefined) continue;
      state.attempt = 0;
      state.wakeSleep?.();
    }
  }

  stats(): Readonly<OutboxStats> {
    return { ...this.statsCounts };
  }

  // -- internals ------------------------------------------------------------------------------

  private encodeEntry(entry: OutboxEntry, index: number, enqueuedAtMs: number): string {
    if (typeof entry.key !== 'string' || entry.key.length === 0 || entry.key.length > FORWARD_MAX_KEY_CHARS) {
      throw new OutboxError('OUTBOX_INVALID_ENTRY', `entry ${index}: key must be 1 to ${FORWARD_MAX_KEY_CHARS} characters`);
    }
    let value: string | undefined;
    try {
      value = JSON.stringify({ key: entry.key, payload: entry.payload, enqueuedAtMs });
    } catch (error) {
      throw new OutboxError('OUTBOX_INVALID_ENTRY', `entry ${index}: payload is not JSON`, { cause: error });
    }
    // JSON.stringify drops undefined and functions silently; the round trip catches that.
    if (value === undefined || parseJson(StoredEntry, value) === undefined) {
      throw new OutboxError('OUTBOX_INVALID_ENTRY', `entry ${index}: payload is not a JSON value`);
    }
    if (Buffer.byteLength(value) > this.settings.maxEntryBytes) {
      throw new OutboxError('OUTBOX_INVALID_ENTRY', `entry ${index}: larger than ${this.settings.maxEntryBytes} bytes`);
    }
    return value;
  }

  private destinationState(destination: string): Destination {
    let state = this.destinations.get(destination);
    if (state !== undefined) return state;
    if (this.destinations.size >= this.settings.maxDestinations) {
      throw new OutboxError('OUTBOX_TOO_MANY_DESTINATIONS', `already ${this.destinations.size} destinations`);
    }
    state = {
      id: destination,
      nextSeq: 1,
      ackedSeq: 0,
      waiting: 0,
      reserved: 0,
      oldestEnqueuedAtMs: undefined,
      reservations: [],
      attempt: 0,
      workVersion: 0,
      loop: undefined,
      wakeIdle: undefined,
      wakeSleep: undefined,
      flushWaiters: [],
    };
    this.destinations.set(destination, state);
    return state;
  }

  /** Reads every destination with stored entries: counts, oldest, and where numbering resumes. */
  private async loadWaiting(): Promise<void> {
    const { store } = this.components;
    let from = OUTBOX_PREFIX;
    for (;;) {
      const [first] = await store.range({ gte: from, lt: OUTBOX_PREFIX_END, limit: 1 });
      if (first === undefined) break;
      const parsed = parseEntryKey(first[0]);
      if (parsed === undefined) {
        // Not an entry key (should not exist): step over it.
        from = `${first[0]}\0`;
        continue;
      }
      const state = this.destinationState(parsed.destination);
      const prefix = outboxKeys.entries(parsed.destination);
      state.oldestEnqueuedAtMs = parseJson(StoredEntry, first[1])?.enqueuedAtMs ?? this.components.clock.now();
      let lastSeq = 0;
      let cursor = prefix;
      for (;;) {
        const page = await store.range({ gte: cursor, lt: `${prefix}\x7f`, limit: SCAN_PAGE_ENTRIES });
        for (const [key] of page) lastSeq = Math.max(lastSeq, parseEntryKey(key)?.seq ?? 0);
        state.waiting += page.length;
        if (page.length < SCAN_PAGE_ENTRIES) break;
        cursor = `${page[page.length - 1]![0]}\0`;
      }
      state.nextSeq = lastSeq + 1;
      // Every later destination's key sorts after this one's entries ('0' follows '/').
      from = `${OUTBOX_PREFIX}${encodeURIComponent(parsed.destination)}0`;
    }
    // Destinations with nothing waiting still have an acked mark: numbering resumes above it,
    // or the receiver would drop the next entries as duplicates of long-acknowledged ones.
    let cursor = ACKED_PREFIX;
    for (;;) {
      const page = await store.range({ gte: cursor, lt: ACKED_PREFIX_END, limit: SCAN_PAGE_ENTRIES });
      for (const [key, value] of page) {
        let destination: string;
        try {
          destination = decodeURIComponent(key.slice(ACKED_PREFIX.length));
        } catch {
          continue;
        }
        const acked = Number(value);
        if (!Number.isSafeInteger(acked) || acked < 0) continue;
        const state = this.destinationState(destination);
        state.ackedSeq = Math.max(state.ackedSeq, acked);
        state.nextSeq = Math.max(state.nextSeq, acked + 1);
      }
      if (page.length < SCAN_PAGE_ENTRIES) break;
      cursor = `${page[page.length - 1]![0]}\0`;
    }
  }

  private ensureLoop(state: Destination): void {
    if (state.loop !== undefined || this.state !== 'running') return;
    state.loop = this.run(state);
  }

  /** The sender loop of one destination; ends only on stop. Never rejects. */
  private async run(state: Destination): Promise<void> {
    while (this.state === 'running') {
      const workVersion = state.workVersion;
      let batch: LoadedEntry[];
      try {
        batch = await this.loadBatch(state);
      } catch {
        await this.sleep(state, this.backoffMs(state.attempt++));
        continue;
      }
      if (batch.length === 0) {
        this.resolveFlushWaiters(state);
        // Checked after the await and before waiting, in one synchronous step: a commit or a stop
        // that happened while the batch was read must not leave the loop asleep.
        if (state.workVersion !== workVersion || this.state !== 'running') continue;
        await new Promise<void>((resolve) => (state.wakeIdle = resolve));
        state.wakeIdle = undefined;
        continue;
      }
      state.oldestEnqueuedAtMs = batch[0]!.enqueuedAtMs;
      const outcome = await this.attempt(state, batch);
      if (outcome.kind === 'acked') {
        const done = batch.filter((entry) => entry.seq <= outcome.hw);
        if (done.length === 0) {
          // The receiver applied nothing of this batch (it should not happen): back off.
          this.countFailure('NO_PROGRESS');
          await this.sleep(state, this.backoffMs(state.attempt++));
          continue;
        }
        try {
          await this.deleteAcked(state, done);
          state.attempt = 0;
        } catch {
          // The entries stay stored and go again; the receiver drops them as duplicates.
          await this.sleep(state, this.backoffMs(state.attempt++));
        }
        continue;
      }
      if (outcome.kind === 'stale') {
        try {
          await this.raiseGeneration(outcome.generation + 1);
        } catch {
          // Retried with the next attempt.
        }
      }
      await this.sleep(state, this.backoffMs(state.attempt++));
    }
  }

  /** The next batch: the oldest entries above the acked seq and below any unsettled reservation. */
  private async loadBatch(state: Destination): Promise<LoadedEntry[]> {
    const limitSeq = state.reservations[0]?.firstSeq ?? state.nextSeq;
    if (limitSeq <= state.ackedSeq + 1) return [];
    const rows = await this.components.store.range({
      gte: outboxKeys.entry(state.id, state.ackedSeq + 1),
      lt: outboxKeys.entry(state.id, limitSeq),
      limit: this.settings.maxBatchEntries,
    });
    const batch: LoadedEntry[] = [];
    const corrupt: StoreOp[] = [];
    let bytes = 0;
    for (const [storeKey, value] of rows) {
      const seq = parseEntryKey(storeKey)?.seq;
      const entry = parseJson(StoredEntry, value);
      if (seq === undefined || entry === undefined) {
        corrupt.push({ type: 'del', key: storeKey });
        continue;
      }
      const size = Buffer.byteLength(value);
      if (batch.length > 0 && bytes + size > this.settings.maxBatchBytes) break;
      bytes += size;
      batch.push({ seq, storeKey, key: entry.key, payload: entry.payload as JsonValue, enqueuedAtMs: entry.enqueuedAtMs });
    }
    if (corrupt.length > 0) {
      // An entry that cannot be read back can never be delivered; keeping it would stall every
      // later entry of this destination. It is counted and dropped.
      await this.components.store.write(corrupt);
      this.statsCounts.corruptEntries += corrupt.length;
      state.waiting = Math.max(0, state.waiting - corrupt.length);
      this.prom?.corrupt.inc(corrupt.length);
      if (batch.length === 0) return this.loadBatch(state);
    }
    return batch;
  }

  private async attempt(state: Destination, batch: readonly LoadedEntry[]): Promise<Attempt> {
    this.statsCounts.attempts++;
    const peer = this.components.resolvePeer(state.id);
    if (peer === undefined) return this.countFailure('UNRESOLVED');
    const epoch = this.epoch!;
    const request: ForwardRequest = {
      v: 1,
      sourceCellId: this.components.cellId,
      epoch: { ...epoch },
      entries: batch.map(({ seq, key, payload }) => ({ seq, key, payload })),
    };
    let answer: Uint8Array;
    try {
      answer = await this.components.transport.request(peer, FORWARD_PROTOCOL, encodeJson(request), {
        timeoutMs: this.settings.requestTimeoutMs,
        signal: this.abort.signal,
      });
    } catch (error) {
      const code = typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : 'REQUEST_FAILED';
      return this.countFailure(code);
    }
    const response = decodeJson(ForwardResponse, answer);
    if (response === undefined) return this.countFailure('BAD_RESPONSE');
    if (!response.ok) {
      this.countFailure(response.code);
      if (response.code === 'STALE_EPOCH' && response.generation !== undefined) return { kind: 'stale', generation: response.generation };
      return { kind: 'failed', code: response.code };
    }
    this.prom?.attempts.inc({ result: 'ok' });
    return { kind: 'acked', hw: response.hw };
  }

  private countFailure(code: string): Attempt {
    this.statsCounts.failedAttempts++;
    this.prom?.attempts.inc({ result: code });
    return { kind: 'failed', code };
  }

  private async deleteAcked(state: Destination, done: readonly LoadedEntry[]): Promise<void> {
    const ackedSeq = done[done.length - 1]!.seq;
    await this.components.store.write([
      ...done.map((entry): StoreOp => ({ type: 'del', key: entry.storeKey })),
      // Kept so that numbering resumes above it after a restart with nothing left stored.
      { type: 'put', key: outboxKeys.acked(state.id), value: String(ackedSeq) },
    ]);
    state.ackedSeq = Math.max(state.ackedSeq, ackedSeq);
    state.waiting = Math.max(0, state.waiting - done.length);
    if (state.waiting === 0) state.oldestEnqueuedAtMs = undefined;
    this.statsCounts.ackedEntries += done.length;
    this.prom?.acked.inc(done.length);
  }

  /** Raises the epoch's generation to at least `generation` and persists it; serialised. */
  private raiseGeneration(generation: number): Promise<void> {
    const write = this.epochWrites.then(async () => {
      const epoch = this.epoch!;
      if (epoch.generation >= generation) return;
      const raised = { id: epoch.id, generation };
      await this.components.store.write([{ type: 'put', key: outboxKeys.epoch, value: JSON.stringify(raised) }]);
      this.epoch = raised;
      this.statsCounts.epochRaises++;
    });
    this.epochWrites = write.catch(() => undefined);
    return write;
  }

  /** Exponential backoff with "equal jitter": half the delay fixed, half random. */
  private backoffMs(attempt: number): number {
    const { backoffInitialMs, backoffMaxMs } = this.settings;
    const delayMs = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(attempt, 30));
    return delayMs / 2 + this.components.random.next() * (delayMs / 2);
  }

  private sleep(state: Destination, delayMs: number): Promise<void> {
    if (this.state !== 'running') return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: TimerHandle | undefined;
      const wake = (): void => {
        timer?.cancel();
        state.wakeSleep = undefined;
        resolve();
      };
      state.wakeSleep = wake;
      timer = this.components.clock.setTimer(delayMs, wake);
    });
  }

  private resolveFlushWaiters(state: Destination): void {
    if (state.waiting !== 0 || state.reserved !== 0) return;
    for (const resolve of state.flushWaiters.splice(0)) resolve();
  }

  private createPromMetrics(registry: Registry) {
    const registers = [registry];
    // Collect callbacks read the live state when Prometheus scrapes, so no timer keeps them fresh.
    const destinations = this.destinations;
    const clock = this.components.clock;
    return {
      waiting: new Gauge({
        name: 'cellmesh_outbox_waiting_entries',
        help: 'Entries stored in the outbox and not yet acknowledged, by destination cell.',
        labelNames: ['destination'],
        registers,
        collect() {
          this.reset();
          for (const [id, state] of destinations) this.set({ destination: id }, state.waiting);
        },
      }),
      oldestAge: new Gauge({
        name: 'cellmesh_outbox_oldest_age_seconds',
        help: 'Age of the oldest waiting outbox entry, by destination cell (0 when none waits).',
        labelNames: ['destination'],
        registers,
        collect() {
          this.reset();
          const now = clock.now();
          for (const [id, state] of destinations) {
            this.set({ destination: id }, state.oldestEnqueuedAtMs === undefined ? 0 : Math.max(0, now - state.oldestEnqueuedAtMs) / 1_000);
          }
        },
      }),
      enqueued: new Counter({ name: 'cellmesh_outbox_enqueued_entries_total', help: 'Entries made durable in the outbox.', registers }),
      acked: new Counter({ name: 'cellmesh_outbox_acked_entries_total', help: 'Outbox entries acknowledged by their destination and deleted.', registers }),
      attempts: new Counter({
        name: 'cellmesh_outbox_attempts_total',
        help: 'Forward requests, by result (ok, or the failure code).',
        labelNames: ['result'],
        registers,
      }),
      corrupt: new Counter({ name: 'cellmesh_outbox_corrupt_entries_total', help: 'Stored outbox entries that could not be read back and were dropped.', registers }),
    };
  }
}

const OUTBOX_METRIC_NAMES = [
  'cellmesh_outbox_waiting_entries',
  'cellmesh_outbox_oldest_age_seconds',
  'cellmesh_outbox_enqueued_entries_total',
  'cellmesh_outbox_acked_entries_total',
  'cellmesh_outbox_attempts_total',
  'cellmesh_outbox_corrupt_entries_total',
] as const;

// ---------------------------------------------------------------------------------------------
// Inbox (receiving side)

/**
 * Applies forwarded entries of `sourceCellId`, in order; only entries above the source's mark
 * are given, each exactly once as long as the handler keeps this contract:
 * - Preferred: return the StoreOps that apply the entries (and do nothing else durable). The
 *   Inbox writes them atomically with the new mark, so an entry is applied exactly once even if
 *   this cell crashes before its ack leaves: the resend finds the mark moved.
 * - Otherwise (side effects of its own, returning nothing): the handler's effects and the mark
 *   are two writes, and a crash between them makes the source resend entries already applied.
 *   Such a handler must be idempotent (for example: keyed by the entry's `key`).
 * Either way, do non-durable follow-ups (pushing to devices) only after the promise resolved,
 * or accept that they may repeat. Throwing refuses the whole batch (`HANDLER_FAILED`): the
 * source retries it with backoff, forever, so throw only for transient reasons; an entry that
 * can never be applied must be accepted (and recorded) rather than block its source.
 */
export type ForwardHandler = (sourceCellId: string, entries: readonly ForwardedEntry[]) => Promise<readonly StoreOp[] | void>;

export interface InboxInit {
  /** Largest forward request accepted, in bytes (default 4 MiB). */
  readonly maxRequestBytes?: number;
  /** Most requests of one source waiting behind the one being applied (default 4); beyond: BUSY. */
  readonly maxQueuedRequestsPerSource?: number;
  /** Most sources whose mark is kept in memory (default 4,096); others are read from the store. */
  readonly maxCachedSources?: number;
}

export interface InboxComponents {
  readonly store: Store;
  readonly transport: MeshTransport;
  /** The cell of a peer, from the directory; a peer it does not know is refused (UNKNOWN_SENDER). */
  readonly cellOfPeer: (peer: PeerId) => string | undefined;
  readonly registry?: Registry;
}

export interface InboxStats {
  appliedEntries: number;
  duplicateEntries: number;
  refusedRequests: number;
  epochChanges: number;
}

interface Lane {
  tail: Promise<void>;
  depth: number;
}

/**
 * The receiving side of cross-cell forwarding. Lifecycle: `onForward(handler)`, then `start()`
 * (serves the protocol); `stop()` refuses new requests (NOT_READY) and resolves once the ones
 * under way have finished, after which the store may close.
 */
export class Inbox {
  private readonly settings: Required<InboxInit>;
  private handler: ForwardHandler | undefined;
  private running = false;
  private readonly marks = new Map<string, StoredMark>();
  private readonly lanes = new Map<string, Lane>();
  private readonly statsCounts: InboxStats = { appliedEntries: 0, duplicateEntries: 0, refusedRequests: 0, epochChanges: 0 };
  private readonly prom: ReturnType<typeof createInboxMetrics> | undefined;

  constructor(
    private readonly components: InboxComponents,
    init: InboxInit = {},
  ) {
    this.settings = { ...INBOX_DEFAULTS, ...stripUndefined(init) };
    this.prom = components.registry === undefined ? undefined : createInboxMetrics(components.registry);
  }

  onForward(handler: ForwardHandler): void {
    this.handler = handler;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.components.transport.handle(FORWARD_PROTOCOL, (from, data) => this.serve(from, data));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all([...this.lanes.values()].map((lane) => lane.tail));
    if (this.prom !== undefined && this.components.registry !== undefined) {
      for (const name of INBOX_METRIC_NAMES) this.components.registry.removeSingleMetric(name);
    }
  }

  stats(): Readonly<InboxStats> {
    return { ...this.statsCounts };
  }

  /** The persisted mark of `source`: its epoch and the highest seq applied; undefined if none. */
  async highWaterMark(source: string): Promise<{ epochId: string; generation: number; hw: number } | undefined> {
    const cached = this.marks.get(source);
    if (cached !== undefined) return { ...cached };
    const stored = await this.components.store.get(outboxKeys.inboxMark(source));
    return stored === undefined ? undefined : parseJson(StoredMark, stored);
  }

  private async serve(from: PeerId, data: Uint8Array): Promise<Uint8Array> {
    const response = await this.answer(from, data);
    if (!response.ok) {
      this.statsCounts.refusedRequests++;
      this.prom?.refused.inc({ code: response.code });
    }
    return encodeJson(response);
  }

  private async answer(from: PeerId, data: Uint8Array): Promise<ForwardResponse> {
    if (!this.running || this.handler === undefined) return refuse('NOT_READY', 'this cell does not accept forwards now');
    if (data.byteLength > this.settings.maxRequestBytes) return refuse('BAD_REQUEST', `request larger than ${this.settings.maxRequestBytes} bytes`);
    const request = decodeJson(ForwardRequest, data);
    if (request === undefined) return refuse('BAD_REQUEST', 'not a valid forward request');
    const sourceCell = this.components.cellOfPeer(from);
    if (sourceCell === undefined) return refuse('UNKNOWN_SENDER', 'the sending peer is not a known cell');
    if (sourceCell !== request.sourceCellId) return refuse('SENDER_MISMATCH', 'the sending peer belongs to another cell');
    for (let index = 1; index < request.entries.length; index++) {
      if (request.entries[index]!.seq <= request.entries[index - 1]!.seq) return refuse('BAD_REQUEST', 'entries must ascend by seq');
    }
    const lane = this.laneOf(sourceCell);
    if (lane.depth > this.settings.maxQueuedRequestsPerSource) return refuse('BUSY', 'too many requests of this source under way');
    lane.depth++;
    const run = lane.tail.then(() => this.apply(sourceCell, request));
    lane.tail = run.then(
      () => undefined,
      () => undefined,
    );
    try {
      return await run;
    } catch (error) {
      return refuse('STORE_UNAVAILABLE', error instanceof Error ? error.message.slice(0, 200) : 'store failed');
    } finally {
      lane.depth--;
      if (lane.depth === 0 && this.lanes.get(sourceCell) === lane) this.lanes.delete(sourceCell);
    }
  }

  private laneOf(source: string): Lane {
    let lane = this.lanes.get(source);
    if (lane === undefined) {
      lane = { tail: Promise.resolve(), depth: 0 };
      this.lanes.set(source, lane);
    }
    return lane;
  }

  /** Applies one request; runs alone for its source (requests of one source are serialised). */
  private async apply(source: string, request: ForwardRequest): Promise<ForwardResponse> {
    if (!this.running) return refuse('NOT_READY', 'this cell is stopping');
    const known = await this.loadMark(source);
    let mark: StoredMark;
    if (known === undefined) {
      mark = { epochId: request.epoch.id, generation: request.epoch.generation, hw: 0 };
    } else if (known.epochId === request.epoch.id) {
      mark = { ...known, generation: Math.max(known.generation, request.epoch.generation) };
    } else if (request.epoch.generation > known.generation) {
      // A new incarnation of the source (it lost its outbox store): its numbering restarts.
      mark = { epochId: request.epoch.id, generation: request.epoch.generation, hw: 0 };
      this.statsCounts.epochChanges++;
      this.prom?.epochChanges.inc();
    } else {
      return { ok: false, code: 'STALE_EPOCH', message: 'another incarnation of this source is known', generation: known.generation };
    }

    const fresh = request.entries.filter((entry) => entry.seq > mark.hw);
    const duplicates = request.entries.length - fresh.length;
    if (duplicates > 0) {
      this.statsCounts.duplicateEntries += duplicates;
      this.prom?.duplicates.inc(duplicates);
    }
    if (fresh.length === 0) return { ok: true, hw: mark.hw };

    let ops: readonly StoreOp[] | void;
    try {
      ops = await this.handler!(
        source,
        fresh.map((entry) => ({ seq: entry.seq, key: entry.key, payload: entry.payload as JsonValue })),
      );
    } catch (error) {
      return refuse('HANDLER_FAILED', error instanceof Error ? error.message.slice(0, 200) : 'handler failed');
    }
    const next: StoredMark = { ...mark, hw: fresh[fresh.length - 1]!.seq };
    await this.components.store.write([...(ops ?? []), { type: 'put', key: outboxKeys.inboxMark(source), value: JSON.stringify(next) }]);
    this.cacheMark(source, next);
    this.statsCounts.appliedEntries += fresh.length;
    this.prom?.applied.inc(fresh.length);
    return { ok: true, hw: next.hw };
  }

  private async loadMark(source: string): Promise<StoredMark | undefined> {
    const cached = this.marks.get(source);
    if (cached !== undefined) return cached;
    const stored = await this.components.store.get(outboxKeys.inboxMark(source));
    if (stored === undefined) return undefined;
    const mark = parseJson(StoredMark, stored);
    // An unreadable mark is an invariant broken by something else; refusing would stall the
    // source forever, so it counts as no mark: entries may repeat, none is lost.
    if (mark !== undefined) this.cacheMark(source, mark);
    return mark;
  }

  private cacheMark(source: string, mark: StoredMark): void {
    this.marks.delete(source);
    this.marks.set(source, mark);
    while (this.marks.size > this.settings.maxCachedSources) this.marks.delete(this.marks.keys().next().value as string);
  }
}

function refuse(code: ForwardRefusalCode, message: string): ForwardResponse {
  return { ok: false, code, message };
}

function createInboxMetrics(registry: Registry) {
  const registers = [registry];
  return {
    applied: new Counter({ name: 'cellmesh_inbox_applied_entries_total', help: 'Forwarded entries applied (first arrival).', registers }),
    duplicates: new Counter({ name: 'cellmesh_inbox_duplicate_entries_total', help: 'Forwarded entries dropped as already applied.', registers }),
    refused: new Counter({ name: 'cellmesh_inbox_refused_total', help: 'Forward requests refused, by code.', labelNames: ['code'], registers }),
    epochChanges: new Counter({ name: 'cellmesh_inbox_epoch_changes_total', help: 'Sources seen with a new outbox incarnation.', registers }),
  };
}

const INBOX_METRIC_NAMES = [
  'cellmesh_inbox_applied_entries_total',
  'cellmesh_inbox_duplicate_entries_total',
  'cellmesh_inbox_refused_total',
  'cellmesh_inbox_epoch_changes_total',
] as const;

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as Partial<T>;
}
