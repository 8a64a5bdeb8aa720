import type { StoreOp, Store } from '../platform/store/store.js';
import { noopMetrics, type Metrics } from '../platform/metrics.js';
import { withDefaults } from '../platform/with-defaults.js';
import { decodeJson, encodeJson, parseJson } from '../platform/wire-json.js';
import { outboxKeys, StoredMark } from './forward-store.js';
import { FORWARD_PROTOCOL, ForwardRequest, type ForwardedEntry, type ForwardRefusalCode, type ForwardResponse, type JsonValue } from './forward-wire.js';
import type { MeshTransport, PeerId } from './transport.js';

/**
 * The receiving side of cross-cell forwarding (forward-wire.ts describes the protocol): it
 * applies the entries of each source in order, each once, by the source's persisted mark.
 */

export const INBOX_DEFAULTS = {
  maxRequestBytes: 4 * 1024 * 1024,
  maxQueuedRequestsPerSource: 4,
  maxCachedSources: 4_096,
} as const;

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
  /** Where the metrics go; nowhere when omitted (`stats()` still counts). */
  readonly metrics?: Metrics | undefined;
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
  private readonly metrics: InboxMetrics;

  constructor(
    private readonly components: InboxComponents,
    init: InboxInit = {},
  ) {
    this.settings = withDefaults<InboxInit>(INBOX_DEFAULTS, init);
    this.metrics = createInboxMetrics(components.metrics ?? noopMetrics);
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
    for (const metric of Object.values(this.metrics)) metric.unregister();
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
      this.metrics.refused.labels({ code: response.code }).inc();
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
      this.metrics.epochChanges.inc();
    } else {
      return { ok: false, code: 'STALE_EPOCH', message: 'another incarnation of this source is known', generation: known.generation };
    }

    const fresh = request.entries.filter((entry) => entry.seq > mark.hw);
    const duplicates = request.entries.length - fresh.length;
    if (duplicates > 0) {
      this.statsCounts.duplicateEntries += duplicates;
      this.metrics.duplicates.inc(duplicates);
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
    this.metrics.applied.inc(fresh.length);
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

function createInboxMetrics(metrics: Metrics) {
  return {
    applied: metrics.counter({ name: 'cellmesh_inbox_applied_entries_total', help: 'Forwarded entries applied (first arrival).' }),
    duplicates: metrics.counter({ name: 'cellmesh_inbox_duplicate_entries_total', help: 'Forwarded entries dropped as already applied.' }),
    refused: metrics.labelledCounter({ name: 'cellmesh_inbox_refused_total', help: 'Forward requests refused, by code.', labelNames: ['code'] }),
    epochChanges: metrics.counter({ name: 'cellmesh_inbox_epoch_changes_total', help: 'Sources seen with a new outbox incarnation.' }),
  };
}

type InboxMetrics = ReturnType<typeof createInboxMetrics>;
