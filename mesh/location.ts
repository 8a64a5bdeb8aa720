import { Counter, Histogram, type Registry } from 'prom-client';
import { z } from 'zod';
import { CodedError } from '../platform/coded-error.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { randomId, type Random } from '../platform/random.js';
import { untilAborted } from '../platform/abortable.js';
import { decodeJson, encodeJson } from '../platform/wire-json.js';
import { sameBytes } from './same-bytes.js';
import type { MeshMessage, MeshTransport, PeerId, ValidationResult } from './transport.js';

/**
 * Location of users by broadcast: "which cells hold devices of this user now?"
 *
 * A conversation lives in its merchant's home cell, but the customer's (or an agent's) devices
 * may be connected to other cells. When the conversation's cell must reach a user who has no
 * device on it, it asks the whole mesh once: one gossipsub publish on `cellmesh/locate/v1`
 * carrying a batch of users; every cell that holds devices of any of them answers the asker
 * directly with a request on `/cellmesh/locate-reply/1.0.0`; cells that hold none stay silent.
 * A query therefore costs one publish plus one reply per holding cell, however large the mesh.
 *
 * Answers are cached (positive answers for `cacheTtlMs`, empty ones for `negativeCacheTtlMs`);
 * a delivery that finds the user gone calls `forget`, so the next locate asks again.
 *
 * Watches keep a cached answer true while it is served. Every cell that hears a query remembers
 * the asker as a watcher of its users for the query's `watchMs` (as long as the asker may serve
 * the answer from its cache, plus the answer window); a cell where a device of a watched user
 * then connects tells each watcher at once (`/cellmesh/locate-notice/1.0.0`), and the watcher
 * adds the cell to its cached answer. So an empty answer can be cached as long as a positive
 * one: a customer's burst of messages and receipts costs one broadcast, not one each. A notice
 * is best effort; a lost one (a partition, an overloaded cell) leaves the asker's answer short
 * until it expires, which the cell's followers and mirror repair cover (docs/mesh.md).
 *
 * The asker cannot know how many cells will answer, so it collects replies for a fixed
 * `answerWindowMs` and then resolves. The trade-off: a user held somewhere is found within one
 * round trip but the answer still waits for the window to close (a second holder may answer
 * late), and an absent user always costs a full window. A window shorter than the mesh's p99
 * round trip misses holders; a longer one delays every first delivery to a remote user. 150 ms
 * covers a LAN or one region with margin; raise it for meshes spanning regions.
 *
 * The asking cell itself is never in an answer: its own presence registry is authoritative and
 * changes faster than any cache, so the caller consults it directly.
 */

/** The gossipsub topic of location queries. */
export const LOCATE_TOPIC = 'cellmesh/locate/v1';
/** The request/response protocol on which holding cells answer the asker. */
export const LOCATE_REPLY_PROTOCOL = '/cellmesh/locate-reply/1.0.0';
/** The request/response protocol on which a cell tells watchers that a watched user connected to it. */
export const LOCATE_NOTICE_PROTOCOL = '/cellmesh/locate-notice/1.0.0';

/** Defaults of LocationInit, in one place; docs/mesh.md quotes them. */
export const LOCATION_DEFAULTS = {
  cacheTtlMs: 30_000,
  negativeCacheTtlMs: 30_000,
  cacheMaxEntries: 10_000,
  maxWatchedUsers: 100_000,
  batchWindowMs: 5,
  batchMaxUsers: 256,
  answerWindowMs: 150,
  maxInFlightUsers: 10_000,
  maxConcurrentReplies: 64,
  replyTimeoutMs: 1_000,
} as const;

/** Most users a query or a reply may carry on the wire; larger messages are rejected. */
export const LOCATE_WIRE_MAX_USERS = 1_024;
/** Largest query or reply accepted, in bytes, checked before parsing. */
export const LOCATE_WIRE_MAX_BYTES = 256 * 1024;
/** Longest watch a query may ask for; it bounds how long an asker may serve a cached answer. */
export const LOCATE_WIRE_MAX_WATCH_MS = 10 * 60_000;

export interface LocationInit {
  /** How long a non-empty answer is served from the cache (default 30 s). */
  readonly cacheTtlMs?: number;
  /**
   * How long an empty answer is served from the cache (default 30 s). The cells asked watch the
   * user that long (see watches above), so a device connecting meanwhile is still found. 0
   * disables negative caching.
   */
  readonly negativeCacheTtlMs?: number;
  /** Most cached users; the least recently used entry is evicted beyond (default 10,000). */
  readonly cacheMaxEntries?: number;
  /**
   * Most users this cell watches for other cells' queries (default 100,000); the least recently
   * asked are dropped beyond (`cellmesh_locate_watches_dropped_total`), and their askers then
   * learn of a connect only when their cache expires.
   */
  readonly maxWatchedUsers?: number;
  /** Misses within this window after the first one go out in one publish (default 5 ms). */
  readonly batchWindowMs?: number;
  /** Most users per publish; a larger batch is split into several queries (default 256). */
  readonly batchMaxUsers?: number;
  /** How long the asker collects replies before it resolves (default 150 ms). */
  readonly answerWindowMs?: number;
  /** Most users being located at once (batched or asked); beyond, locate rejects `LOCATE_OVERLOADED`. */
  readonly maxInFlightUsers?: number;
  /** Most replies this cell sends at once as a holder; queries beyond are left unanswered. */
  readonly maxConcurrentReplies?: number;
  /** Timeout of one reply request (default 1 s); a reply later than the asker's window is useless anyway. */
  readonly replyTimeoutMs?: number;
}

export interface LocationComponents {
  readonly transport: MeshTransport;
  readonly clock: Clock;
  readonly random: Random;
  /** This cell's id, as other cells' directories know it. */
  readonly cellId: string;
  /**
   * The cell of a peer, from the directory; undefined when the peer is not a known cell. (No
   * `resolvePeer` is needed: a holder replies to the query's signed publisher, after checking
   * that the directory maps that peer to the query's `fromCellId`.)
   */
  readonly cellOfPeer: (peer: PeerId) => string | undefined;
  /**
   * The subset of `userIds` of `tenant` that have at least one device connected to this cell
   * (from the cell's presence registry). Must be quick; it runs for every query heard.
   */
  readonly localUsers: (tenant: string, userIds: readonly string[]) => readonly string[] | Promise<readonly string[]>;
  /** Where to register the Prometheus metrics; none when omitted (the counters stay readable through `stats()`). */
  readonly registry?: Registry;
}

export interface LocateOptions {
  readonly signal?: AbortSignal;
}

export type LocationErrorCode = 'LOCATE_OVERLOADED' | 'LOCATE_STOPPED' | 'LOCATE_NOT_STARTED' | 'LOCATE_PUBLISH_FAILED' | 'LOCATE_ABORTED' | 'LOCATE_INVALID_ARGUMENT' | 'LOCATE_BAD_MESSAGE' | 'LOCATE_UNKNOWN_SENDER';

const LOCATION_ERROR_MESSAGES: Record<LocationErrorCode, string> = {
  LOCATE_OVERLOADED: 'too many users are being located at once',
  LOCATE_STOPPED: 'the location service stopped',
  LOCATE_NOT_STARTED: 'the location service is not started',
  LOCATE_PUBLISH_FAILED: 'the location query could not be published',
  LOCATE_ABORTED: 'the locate call was aborted',
  LOCATE_INVALID_ARGUMENT: 'tenant or user id is not a valid identifier',
  LOCATE_BAD_MESSAGE: 'malformed location message',
  LOCATE_UNKNOWN_SENDER: 'the sender is not a known cell of this mesh',
};

/** A typed location failure with a stable code; callers and tests match on `code`. */
export class LocationError extends CodedError<LocationErrorCode> {
  constructor(code: LocationErrorCode, message: string = LOCATION_ERROR_MESSAGES[code], options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Wire formats (JSON, UTF-8). Unknown fields are ignored, so a later minor version may add some.

const IDENTIFIER = /^[A-Za-z0-9_.-]{1,64}$/;
const identifier = z.string().regex(IDENTIFIER);
/** Cell ids come from configuration; bounded and printable, nothing more is assumed here. */
const cellIdSchema = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/);
const queryIdSchema = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/);
const userRef = z.object({ tenant: identifier, userId: identifier });

/**
 * `cellmesh/locate/v1`: {queryId, fromCellId, users:[{tenant,userId}], watchMs?}. `watchMs` asks
 * every cell that hears it to tell the asker, for that long, when a device of one of the users
 * connects there; a query without it (from a cell of an earlier version) sets no watch.
 */
export const LocateQuery = z.object({
  queryId: queryIdSchema,
  fromCellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
  watchMs: z.number().int().min(0).max(LOCATE_WIRE_MAX_WATCH_MS).optional(),
});
export type LocateQuery = z.infer<typeof LocateQuery>;

/** `/cellmesh/locate-reply/1.0.0` request: {queryId, cellId, users:[{tenant,userId}]}, the users of the query held by `cellId`. */
export const LocateReply = z.object({
  queryId: queryIdSchema,
  cellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
});
export type LocateReply = z.infer<typeof LocateReply>;

/** `/cellmesh/locate-notice/1.0.0` request: {cellId, users:[{tenant,userId}]}, watched users a device of which just connected to `cellId`. */
export const LocateNotice = z.object({
  cellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
});
export type LocateNotice = z.infer<typeof LocateNotice>;

/** The answer to a reply request: `{ok: true}` or `{ok: false, code}`; informative only. */
const ReplyAnswer = z.object({ ok: z.boolean(), code: z.string().max(64).optional() });

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------------------
// Metrics

/** Plain counters of the location service, for tests and the benchmark (`locateMsgsPerQuery`). */
export interface LocationStats {
  /** Cache answers given without network traffic. */
  cacheHits: number;
  /** Locates that needed (or joined) a query. */
  cacheMisses: number;
  /** Publishes sent (one per query). */
  queriesSent: number;
  /** Queries whose answer window closed. */
  queriesCompleted: number;
  /** Users carried by the queries sent. */
  usersQueried: number;
  /** Replies this cell sent as a holder. */
  repliesSent: number;
  /** Replies to this cell's queries that were accepted. */
  repliesReceived: number;
  /** Queries heard or replies received that were malformed or from unknown senders. */
  messagesRejected: number;
  /** Network messages of completed queries: 1 publish + the replies each received. */
  queryMessages: number;
  /** Notices this cell sent to watchers (a watched user connected here). */
  noticesSent: number;
  /** Notices from other cells that were accepted. */
  noticesReceived: number;
  /** Watches dropped to stay within `maxWatchedUsers`. */
  watchesDropped: number;
}

class LocationMetrics {
  readonly stats: LocationStats = {
    cacheHits: 0,
    cacheMisses: 0,
    queriesSent: 0,
    queriesCompleted: 0,
    usersQueried: 0,
    repliesSent: 0,
    repliesReceived: 0,
    messagesRejected: 0,
    queryMessages: 0,
    noticesSent: 0,
    noticesReceived: 0,
    watchesDropped: 0,
  };
  private readonly prom: ReturnType<typeof createPromMetrics> | undefined;

  constructor(private readonly registry: Registry | undefined) {
    this.prom = registry === undefined ? undefined : createPromMetrics(registry);
  }

  cacheHit(): void {
    this.stats.cacheHits++;
    this.prom?.cache.inc({ result: 'hit' });
  }

  cacheMiss(): void {
    this.stats.cacheMisses++;
    this.prom?.cache.inc({ result: 'miss' });
  }

  querySent(users: number): void {
    this.stats.queriesSent++;
    this.stats.usersQueried += users;
    this.prom?.queries.inc();
    this.prom?.usersPerQuery.observe(users);
  }

  queryCompleted(replies: number): void {
    this.stats.queriesCompleted++;
    this.stats.queryMessages += 1 + replies;
    this.prom?.messagesPerQuery.observe(1 + replies);
  }

  replySent(): void {
    this.stats.repliesSent++;
    this.prom?.replies.inc({ direction: 'sent' });
  }

  replyReceived(): void {
    this.stats.repliesReceived++;
    this.prom?.replies.inc({ direction: 'received' });
  }

  noticeSent(): void {
    this.stats.noticesSent++;
    this.prom?.notices.inc({ direction: 'sent' });
  }

  noticeReceived(): void {
    this.stats.noticesReceived++;
    this.prom?.notices.inc({ direction: 'received' });
  }

  watchDropped(): void {
    this.stats.watchesDropped++;
    this.prom?.watchesDropped.inc();
  }

  rejected(reason: string): void {
    this.stats.messagesRejected++;
    this.prom?.rejected.inc({ reason });
  }

  /** Removes the metrics from the registry, so a successor can register them again. */
  unregister(): void {
    if (this.prom === undefined || this.registry === undefined) return;
    for (const name of LOCATION_METRIC_NAMES) this.registry.removeSingleMetric(name);
  }
}

const LOCATION_METRIC_NAMES = [
  'cellmesh_locate_queries_total',
  'cellmesh_locate_users_per_query',
  'cellmesh_locate_messages_per_query',
  'cellmesh_locate_replies_total',
  'cellmesh_locate_cache_total',
  'cellmesh_locate_rejected_total',
  'cellmesh_locate_notices_total',
  'cellmesh_locate_watches_dropped_total',
] as const;

function createPromMetrics(registry: Registry) {
  const registers = [registry];
  const counts = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
  return {
    queries: new Counter({ name: 'cellmesh_locate_queries_total', help: 'Location queries published (one publish each).', registers }),
    usersPerQuery: new Histogram({ name: 'cellmesh_locate_users_per_query', help: 'Users carried by one location query.', buckets: counts, registers }),
    messagesPerQuery: new Histogram({
      name: 'cellmesh_locate_messages_per_query',
      help: 'Network messages a completed location query cost: its publish plus the replies it received.',
      buckets: counts,
      registers,
    }),
    replies: new Counter({ name: 'cellmesh_locate_replies_total', help: 'Location replies, by direction.', labelNames: ['direction'], registers }),
    cache: new Counter({ name: 'cellmesh_locate_cache_total', help: 'Locate calls answered from the cache (hit) or not (miss).', labelNames: ['result'], registers }),
    rejected: new Counter({ name: 'cellmesh_locate_rejected_total', help: 'Location messages rejected, by reason.', labelNames: ['reason'], registers }),
    notices: new Counter({
      name: 'cellmesh_locate_notices_total',
      help: 'Notices that a watched user connected, by direction (sent to a watcher, received from a holder).',
      labelNames: ['direction'],
      registers,
    }),
    watchesDropped: new Counter({
      name: 'cellmesh_locate_watches_dropped_total',
      help: 'Watches of other cells dropped to stay within the most watched users.',
      registers,
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// The service

interface CacheEntry {
  readonly cells: readonly string[];
  readonly expiresAtMs: number;
}

/** One user being located; every concurrent locate of that user shares it (single flight). */
interface Flight {
  readonly tenant: string;
  readonly userId: string;
  readonly key: string;
  readonly cells: Set<string>;
  readonly promise: Promise<string[]>;
  readonly resolve: (cells: string[]) => void;
  readonly reject: (error: unknown) => void;
}

interface OpenQuery {
  readonly flights: Map<string, Flight>;
  readonly timer: TimerHandle;
  replies: number;
}

/** When the last of a user's watches ends (clock ms). */
function lastWatchEndMs(askers: ReadonlyMap<PeerId, number>): number {
  let endMs = 0;
  for (const askerEndMs of askers.values()) endMs = Math.max(endMs, askerEndMs);
  return endMs;
}

function userKey(tenant: string, userId: string): string {
  return `${tenant}/${userId}`;
}

/**
 * Locates users by broadcast. Lifecycle: `start()` subscribes to the query topic and serves the
 * reply protocol; `stop()` unsubscribes, cancels its timers and rejects pending locates with
 * `LOCATE_STOPPED`. The transport must be started before `start()` and stopped after `stop()`.
 */
export class LocationService {
  private readonly settings: Required<LocationInit>;
  private readonly metrics: LocationMetrics;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly flights = new Map<string, Flight>();
  private batch: Flight[] = [];
  private batchTimer: TimerHandle | undefined;
  private readonly queries = new Map<string, OpenQuery>();
  /** Users other cells asked for lately, by userKey, each to its askers' peers and the clock ms their watch ends; least recently asked first. */
  private readonly watches = new Map<string, Map<PeerId, number>>();
  /** What this cell's queries ask the others to watch for: as long as it may serve their answers. */
  private readonly watchMs: number;
  private repliesInFlight = 0;
  private running = false;
  /** The last query message decoded, for its second reading (see decodeQuery). */
  private lastQuery: { readonly bytes: Uint8Array; readonly query: LocateQuery | undefined } | undefined;

  constructor(
    private readonly components: LocationComponents,
    init: LocationInit = {},
  ) {
    this.settings = { ...LOCATION_DEFAULTS, ...stripUndefined(init) };
    const { batchMaxUsers, cacheMaxEntries, maxInFlightUsers, maxWatchedUsers, cacheTtlMs, negativeCacheTtlMs, answerWindowMs } = this.settings;
    if (!Number.isInteger(batchMaxUsers) || batchMaxUsers < 1 || batchMaxUsers > LOCATE_WIRE_MAX_USERS) {
      throw new RangeError(`batchMaxUsers must be an integer in [1, ${LOCATE_WIRE_MAX_USERS}]`);
    }
    if (!Number.isInteger(cacheMaxEntries) || cacheMaxEntries < 0) throw new RangeError('cacheMaxEntries must be a non-negative integer');
    if (!Number.isInteger(maxInFlightUsers) || maxInFlightUsers < 1) throw new RangeError('maxInFlightUsers must be a positive integer');
    if (!Number.isInteger(maxWatchedUsers) || maxWatchedUsers < 0) throw new RangeError('maxWatchedUsers must be a non-negative integer');
    // The cached answer is served until answerWindowMs + TTL after the query left; the watch,
    // started when a cell heard it, must last at least that long.
    this.watchMs = answerWindowMs + Math.max(cacheTtlMs, negativeCacheTtlMs);
    if (!Number.isInteger(this.watchMs) || this.watchMs > LOCATE_WIRE_MAX_WATCH_MS) {
      throw new RangeError(`answerWindowMs plus the longer cache TTL must be an integer of at most ${LOCATE_WIRE_MAX_WATCH_MS} ms`);
    }
    this.metrics = new LocationMetrics(components.registry);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const { transport } = this.components;
    transport.subscribe(
      LOCATE_TOPIC,
      (message) => this.onQuery(message),
      (message) => this.validateQuery(message),
    );
    transport.handle(LOCATE_REPLY_PROTOCOL, (from, data) => this.onReply(from, data));
    transport.handle(LOCATE_NOTICE_PROTOCOL, (from, data) => this.onNotice(from, data));
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.components.transport.unsubscribe(LOCATE_TOPIC);
    this.batchTimer?.cancel();
    this.batchTimer = undefined;
    this.batch = [];
    for (const query of this.queries.values()) query.timer.cancel();
    this.queries.clear();
    this.watches.clear();
    const error = new LocationError('LOCATE_STOPPED');
    for (const flight of this.flights.values()) flight.reject(error);
    this.flights.clear();
    this.metrics.unregister();
  }

  /** Counters since construction. */
  stats(): Readonly<LocationStats> {
    return { ...this.metrics.stats };
  }

  /**
   * The cells (other than this one) that hold devices of the user now, possibly none. Answered
   * from the cache when fresh; otherwise joins the user's pending query or starts one, batched
   * with the other misses of the next `batchWindowMs`. Rejects with LocationError
   * (`LOCATE_INVALID_ARGUMENT`, `LOCATE_OVERLOADED`, `LOCATE_NOT_STARTED`, `LOCATE_STOPPED`,
   * `LOCATE_PUBLISH_FAILED`, `LOCATE_ABORTED`).
   */
  locate(tenant: string, userId: string, options: LocateOptions = {}): Promise<string[]> {
    if (!this.running) return Promise.reject(new LocationError('LOCATE_NOT_STARTED'));
    if (!IDENTIFIER.test(tenant) || !IDENTIFIER.test(userId)) return Promise.reject(new LocationError('LOCATE_INVALID_ARGUMENT'));
    if (options.signal?.aborted === true) return Promise.reject(new LocationError('LOCATE_ABORTED'));
    const key = userKey(tenant, userId);
    const cached = this.cacheGet(key);
    if (cached !== undefined) {
      this.metrics.cacheHit();
      return Promise.resolve([...cached]);
    }
    this.metrics.cacheMiss();
    let flight = this.flights.get(key);
    if (flight === undefined) {
      if (this.flights.size >= this.settings.maxInFlightUsers) return Promise.reject(new LocationError('LOCATE_OVERLOADED'));
      flight = this.newFlight(tenant, userId, key);
      this.flights.set(key, flight);
      this.batch.push(flight);
      if (this.batch.length >= this.settings.batchMaxUsers) this.flushBatch();
      else this.batchTimer ??= this.components.clock.setTimer(this.settings.batchWindowMs, () => this.flushBatch());
    }
    // LOCATE_ABORTED when the caller's signal aborts first; the shared flight goes on for others.
    return options.signal === undefined ? flight.promise : untilAborted(flight.promise, options.signal, () => new LocationError('LOCATE_ABORTED'));
  }

  /** Drops `cellId` from the cached location of the user: a delivery there found the user gone. */
  forget(tenant: string, userId: string, cellId: string): void {
    const key = userKey(tenant, userId);
    const entry = this.cache.get(key);
    if (entry === undefined || !entry.cells.includes(cellId)) return;
    const cells = entry.cells.filter((cell) => cell !== cellId);
    // An emptied entry is dropped rather than kept as a negative answer: the user probably moved,
    // and the next locate should ask where to.
    if (cells.length === 0) this.cache.delete(key);
    else this.cache.set(key, { cells, expiresAtMs: entry.expiresAtMs });
  }

  /**
   * Adds a location learnt without asking (for example: a forwarded message from the user came
   * from `cellId`) to the cached answer, or starts one with the positive TTL.
   */
  remember(tenant: string, userId: string, cellId: string): void {
    if (cellId === this.components.cellId || this.settings.cacheMaxEntries === 0) return;
    const key = userKey(tenant, userId);
    if (!this.addToCached(key, cellId)) this.cachePut(key, [cellId], this.components.clock.now() + this.settings.cacheTtlMs);
  }

  /**
   * `cellId` left the cluster: every cached answer naming it is dropped (not just trimmed), so the
   * next locate of those users asks where their devices went.
   */
  forgetCell(cellId: string): void {
    for (const [key, entry] of this.cache) if (entry.cells.includes(cellId)) this.cache.delete(key);
  }

  /** Drops everything cached about the user. */
  invalidate(tenant: string, userId: string): void {
    this.cache.delete(userKey(tenant, userId));
  }

  /**
   * A device of the user connected to this cell: the cells watching the user (they asked for it
   * lately and may be serving an answer without this cell) are told, one notice each.
   */
  userArrived(tenant: string, userId: string): void {
    if (!this.running) return;
    const key = userKey(tenant, userId);
    const askers = this.watches.get(key);
    if (askers === undefined) return;
    const nowMs = this.components.clock.now();
    const notice = encodeJson({ cellId: this.components.cellId, users: [{ tenant, userId }] } satisfies LocateNotice);
    for (const [asker, endsAtMs] of askers) {
      if (endsAtMs <= nowMs) {
        askers.delete(asker);
        continue;
      }
      this.metrics.noticeSent();
      // Best effort: a lost notice leaves the asker's answer short until its TTL (see above).
      this.components.transport.request(asker, LOCATE_NOTICE_PROTOCOL, notice, { timeoutMs: this.settings.replyTimeoutMs }).catch(() => undefined);
    }
    if (askers.size === 0) this.watches.delete(key);
  }

  // -- asking ---------------------------------------------------------------------------------

  private newFlight(tenant: string, userId: string, key: string): Flight {
    // Not Promise.withResolvers: Node 20 lacks it, and core code must not depend on the shim.
    let resolve!: (cells: string[]) => void;
    let reject!: (error: unknown) => void;
    const promise = new Promise<string[]>((resolvePromise, rejectPromise) => {
      resolve = resolvePromise;
      reject = rejectPromise;
    });
    // A flight nobody awaits any more (every caller aborted) must not raise an unhandled rejection.
    promise.catch(() => undefined);
    return { tenant, userId, key, cells: new Set(), promise, resolve, reject };
  }

  private flushBatch(): void {
    this.batchTimer?.cancel();
    this.batchTimer = undefined;
    const flights = this.batch;
    this.batch = [];
    for (let start = 0; start < flights.length; start += this.settings.batchMaxUsers) {
      this.sendQuery(flights.slice(start, start + this.settings.batchMaxUsers));
    }
  }

  private sendQuery(flights: readonly Flight[]): void {
    if (flights.length === 0) return;
    const queryId = randomId(this.components.random, 16);
    const query: LocateQuery = {
      queryId,
      fromCellId: this.components.cellId,
      users: flights.map((flight) => ({ tenant: flight.tenant, userId: flight.userId })),
      watchMs: this.watchMs,
    };
    const open: OpenQuery = {
      flights: new Map(flights.map((flight) => [flight.key, flight])),
      timer: this.components.clock.setTimer(this.settings.answerWindowMs, () => this.closeQuery(queryId)),
      replies: 0,
    };
    this.queries.set(queryId, open);
    this.metrics.querySent(flights.length);
    this.components.transport.publish(LOCATE_TOPIC, encodeJson(query)).catch((error: unknown) => {
      const open = this.queries.get(queryId);
      if (open === undefined) return;
      open.timer.cancel();
      this.queries.delete(queryId);
      const failure = new LocationError('LOCATE_PUBLISH_FAILED', undefined, { cause: error });
      for (const flight of open.flights.values()) {
        this.flights.delete(flight.key);
        flight.reject(failure);
      }
    });
  }

  private closeQuery(queryId: string): void {
    const open = this.queries.get(queryId);
    if (open === undefined) return;
    this.queries.delete(queryId);
    this.metrics.queryCompleted(open.replies);
    const now = this.components.clock.now();
    for (const flight of open.flights.values()) {
      this.flights.delete(flight.key);
      const cells = [...flight.cells].sort();
      const ttlMs = cells.length > 0 ? this.settings.cacheTtlMs : this.settings.negativeCacheTtlMs;
      if (ttlMs > 0) this.cachePut(flight.key, cells, now + ttlMs);
      flight.resolve(cells);
    }
  }

  private async onReply(from: PeerId, data: Uint8Array): Promise<Uint8Array> {
    const reply = decodeJson(LocateReply, data, LOCATE_WIRE_MAX_BYTES);
    if (reply === undefined) {
      this.metrics.rejected('malformed');
      return encodeJson({ ok: false, code: 'LOCATE_BAD_MESSAGE' });
    }
    // The reply must come from the cell it names, so one cell cannot place users on another.
    const senderCell = this.components.cellOfPeer(from);
    if (senderCell === undefined || senderCell !== reply.cellId) {
      this.metrics.rejected('unknown-sender');
      return encodeJson({ ok: false, code: 'LOCATE_UNKNOWN_SENDER' });
    }
    const open = this.queries.get(reply.queryId);
    if (open === undefined) {
      // Late (after the window) or not ours: harmless, the cache learns nothing from it.
      this.metrics.rejected('late');
      return encodeJson({ ok: true });
    }
    open.replies++;
    this.metrics.replyReceived();
    for (const user of reply.users) open.flights.get(userKey(user.tenant, user.userId))?.cells.add(reply.cellId);
    return encodeJson({ ok: true });
  }

  /** A cell this one watches users on says a device of some of them connected there. */
  private async onNotice(from: PeerId, data: Uint8Array): Promise<Uint8Array> {
    const notice = decodeJson(LocateNotice, data, LOCATE_WIRE_MAX_BYTES);
    if (notice === undefined) {
      this.metrics.rejected('malformed');
      return encodeJson({ ok: false, code: 'LOCATE_BAD_MESSAGE' });
    }
    if (this.components.cellOfPeer(from) !== notice.cellId) {
      this.metrics.rejected('unknown-sender');
      return encodeJson({ ok: false, code: 'LOCATE_UNKNOWN_SENDER' });
    }
    this.metrics.noticeReceived();
    for (const { tenant, userId } of notice.users) {
      const key = userKey(tenant, userId);
      // A query in flight collects it as a reply; a cached answer (empty or not) gains the cell.
      // Nothing cached: the next locate asks anyway.
      this.flights.get(key)?.cells.add(notice.cellId);
      this.addToCached(key, notice.cellId);
    }
    return encodeJson({ ok: true });
  }

  // -- answering ------------------------------------------------------------------------------

  /**
   * The query in `bytes`, decoded once: the topic validator and the handler each get a copy of
   * the same message, so the last one decoded is recognised by content (as heartbeats are).
   */
  private decodeQuery(bytes: Uint8Array): LocateQuery | undefined {
    const last = this.lastQuery;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.query;
    const query = decodeJson(LocateQuery, bytes, LOCATE_WIRE_MAX_BYTES);
    this.lastQuery = { bytes, query };
    return query;
  }

  private validateQuery(message: MeshMessage): ValidationResult {
    const query = this.decodeQuery(message.data);
    if (query === undefined) {
      this.metrics.rejected('malformed');
      return 'reject';
    }
    const senderCell = this.components.cellOfPeer(message.from);
    // A peer the directory does not know yet (a cell still joining) is ignored, not penalised;
    // a known peer asking in another cell's name is rejected.
    if (senderCell === undefined) {
      this.metrics.rejected('unknown-sender');
      return 'ignore';
    }
    if (senderCell !== query.fromCellId) {
      this.metrics.rejected('sender-mismatch');
      return 'reject';
    }
    return 'accept';
  }

  private onQuery(message: MeshMessage): void {
    if (!this.running) return;
    // Validators ran already; decoding here too keeps the handler safe on transports that skip them.
    const query = this.decodeQuery(message.data);
    if (query === undefined || query.fromCellId === this.components.cellId) return;
    if (this.components.cellOfPeer(message.from) !== query.fromCellId) return;
    // Watched before the answer is looked up, so a device connecting meanwhile is told of either way.
    if (query.watchMs !== undefined && query.watchMs > 0) this.watch(message.from, query.users, query.watchMs);
    if (this.repliesInFlight >= this.settings.maxConcurrentReplies) {
      this.metrics.rejected('reply-overload');
      return;
    }
    this.repliesInFlight++;
    void this.answer(message.from, query).finally(() => {
      this.repliesInFlight--;
    });
  }

  private async answer(asker: PeerId, query: LocateQuery): Promise<void> {
    const byTenant = new Map<string, string[]>();
    for (const { tenant, userId } of query.users) {
      let users = byTenant.get(tenant);
      if (users === undefined) byTenant.set(tenant, (users = []));
      users.push(userId);
    }
    const held: Array<{ tenant: string; userId: string }> = [];
    try {
      for (const [tenant, userIds] of byTenant) {
        const asked = new Set(userIds);
        for (const userId of await this.components.localUsers(tenant, userIds)) {
          // Only users that were asked for, each once: a presence callback cannot widen the answer.
          if (asked.delete(userId)) held.push({ tenant, userId });
        }
      }
    } catch {
      this.metrics.rejected('local-users-failed');
      return;
    }
    if (held.length === 0 || !this.running) return;
    const reply: LocateReply = { queryId: query.queryId, cellId: this.components.cellId, users: held };
    this.metrics.replySent();
    try {
      await this.components.transport.request(asker, LOCATE_REPLY_PROTOCOL, encodeJson(reply), { timeoutMs: this.settings.replyTimeoutMs });
    } catch {
      // Best effort: the asker's window closes anyway; it will ask again on its next miss.
    }
  }

  /** Remembers `asker` as a watcher of `users` for `watchMs`; drops expired and excess watches, oldest first. */
  private watch(asker: PeerId, users: readonly { tenant: string; userId: string }[], watchMs: number): void {
    const { maxWatchedUsers } = this.settings;
    if (maxWatchedUsers === 0) return;
    const nowMs = this.components.clock.now();
    const endsAtMs = nowMs + watchMs;
    for (const { tenant, userId } of users) {
      const key = userKey(tenant, userId);
      const askers = this.watches.get(key) ?? new Map<PeerId, number>();
      this.watches.delete(key);
      askers.set(asker, Math.max(askers.get(asker) ?? 0, endsAtMs));
      this.watches.set(key, askers);
    }
    // Least recently asked first: the expired ones are at the front (with one watch length for all askers).
    for (const [key, askers] of this.watches) {
      const live = lastWatchEndMs(askers) > nowMs;
      if (live && this.watches.size <= maxWatchedUsers) break;
      if (live) this.metrics.watchDropped();
      this.watches.delete(key);
    }
  }

  // -- cache ----------------------------------------------------------------------------------

  /**
   * Adds `cellId` to the user's cached answer, if one is fresh; false when none is. The answer
   * keeps its expiry: the watches of the query behind it last only that long.
   */
  private addToCached(key: string, cellId: string): boolean {
    const cells = this.cacheGet(key);
    if (cells === undefined) return false;
    if (!cells.includes(cellId)) this.cachePut(key, [...cells, cellId].sort(), this.cache.get(key)!.expiresAtMs);
    return true;
  }

  private cacheGet(key: string): readonly string[] | undefined {
    const entry = this.cache.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs <= this.components.clock.now()) {
      this.cache.delete(key);
      return undefined;
    }
    // Map order is insertion order: re-inserting marks the entry most recently used.
    this.cache.delete(key);
    this.cache.set(key, entry);
    return entry.cells;
  }

  private cachePut(key: string, cells: readonly string[], expiresAtMs: number): void {
    if (this.settings.cacheMaxEntries === 0) return;
    this.cache.delete(key);
    this.cache.set(key, { cells, expiresAtMs });
    while (this.cache.size > this.settings.cacheMaxEntries) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as Partial<T>;
}
