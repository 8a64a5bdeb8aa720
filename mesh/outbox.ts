import type { StoreOp, Store } from '../platform/store/store.js';
import type { Clock } from '../platform/clock.js';
import { noopMetrics, type Metrics } from '../platform/metrics.js';
import { randomId, type Random } from '../platform/random.js';
import { withDefaults } from '../platform/with-defaults.js';
import { parseJson } from '../platform/wire-json.js';
import { CodedError } from '../platform/coded-error.js';
import { outboxKeys, scanOutboxStore, StoredEntry } from './forward-store.js';
import { cellIdSchema, epochSchema, FORWARD_MAX_KEY_CHARS, FORWARD_WIRE_MAX_ENTRIES, type JsonValue, type OutboxEpoch } from './forward-wire.js';
import { DestinationQueue } from './outbox-destination.js';
import { createOutboxMetrics, type OutboxMetrics, type OutboxStats } from './outbox-metrics.js';
import { DestinationSender } from './outbox-sender.js';
import type { MeshTransport, PeerId } from './transport.js';

/**
 * The sending side of cross-cell forwarding (forward-wire.ts describes the protocol): durable
 * entries per destination cell, sent in order by one loop per destination until acknowledged.
 */

/** Defaults of OutboxInit, in one place; docs/mesh.md quotes them. */
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

/** What a caller hands to the outbox: `key` names the entry for the receiver (for example a message id). */
export interface OutboxEntry {
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
  /** Where the metrics go; nowhere when omitted (`stats()` still counts). */
  readonly metrics?: Metrics | undefined;
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

/**
 * The sending side of cross-cell forwarding. Lifecycle: `start()` once (after the store is open
 * and the transport started) loads the epoch and what is waiting and starts the sender loops;
 * `stop()` aborts requests under way, ends the loops and resolves when they have; close the store
 * after it. An Outbox is not restarted: make a new one on the same store.
 */
export class Outbox {
  private readonly settings: Required<OutboxInit>;
  private readonly destinations = new Map<string, DestinationQueue>();
  private readonly abort = new AbortController();
  private epoch: OutboxEpoch | undefined;
  private epochWrites: Promise<void> = Promise.resolve();
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  private readonly statsCounts: OutboxStats = { enqueuedEntries: 0, ackedEntries: 0, attempts: 0, failedAttempts: 0, corruptEntries: 0, epochRaises: 0 };
  private readonly metrics: OutboxMetrics;
  private readonly sender: DestinationSender;

  constructor(
    private readonly components: OutboxComponents,
    init: OutboxInit = {},
  ) {
    this.settings = withDefaults<OutboxInit>(OUTBOX_DEFAULTS, init);
    const { maxBatchEntries, maxBatchBytes, maxEntryBytes, backoffInitialMs, backoffMaxMs } = this.settings;
    if (!Number.isInteger(maxBatchEntries) || maxBatchEntries < 1 || maxBatchEntries > FORWARD_WIRE_MAX_ENTRIES) {
      throw new RangeError(`maxBatchEntries must be an integer in [1, ${FORWARD_WIRE_MAX_ENTRIES}]`);
    }
    if (maxEntryBytes < 1 || maxBatchBytes < maxEntryBytes) throw new RangeError('maxBatchBytes must be at least maxEntryBytes');
    if (backoffInitialMs < 1 || backoffMaxMs < backoffInitialMs) throw new RangeError('need 1 <= backoffInitialMs <= backoffMaxMs');
    this.metrics = createOutboxMetrics(components.metrics ?? noopMetrics, this.destinations, components.clock);
    this.sender = new DestinationSender({
      components,
      settings: this.settings,
      stats: this.statsCounts,
      metrics: this.metrics,
      signal: this.abort.signal,
      running: () => this.state === 'running',
      epoch: () => this.epoch!,
      raiseGeneration: (generation) => this.raiseGeneration(generation),
    });
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
    for (const destination of this.destinations.values()) destination.releaseFlushWaiters();
    for (const metric of Object.values(this.metrics)) metric.unregister();
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
    if (state.backlog + entries.length > this.settings.maxWaitingEntries) {
      throw new OutboxError('OUTBOX_FULL', `${state.backlog} entries already wait for ${destination}`);
    }
    const pending = state.reserve(entries.length);
    const { firstSeq } = pending;
    const ops: StoreOp[] = values.map((value, index) => ({ type: 'put', key: outboxKeys.entry(destination, firstSeq + index), value }));
    let settled = false;
    const settle = (durable: boolean): void => {
      if (settled) return;
      settled = true;
      if (durable) {
        this.statsCounts.enqueuedEntries += entries.length;
        this.metrics.enqueued.inc(entries.length);
      }
      state.settle(pending, durable, enqueuedAtMs);
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
    if (state === undefined || this.state === 'stopped') return Promise.resolve();
    return state.flushed();
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

  private destinationState(destination: string): DestinationQueue {
    let state = this.destinations.get(destination);
    if (state !== undefined) return state;
    if (this.destinations.size >= this.settings.maxDestinations) {
      throw new OutboxError('OUTBOX_TOO_MANY_DESTINATIONS', `already ${this.destinations.size} destinations`);
    }
    state = new DestinationQueue(destination);
    this.destinations.set(destination, state);
    return state;
  }

  /** Reads every destination with stored entries: counts, oldest, and where numbering resumes. */
  private loadWaiting(): Promise<void> {
    return scanOutboxStore(this.components.store, this.components.clock, (destination) => this.destinationState(destination));
  }

  private ensureLoop(state: DestinationQueue): void {
    if (state.loop !== undefined || this.state !== 'running') return;
    state.loop = this.sender.run(state);
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
}
