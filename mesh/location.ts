import { CodedError } from '../platform/coded-error.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { noopMetrics, type Metrics } from '../platform/metrics.js';
import { randomId, type Random } from '../platform/random.js';
import { untilAborted } from '../platform/abortable.js';
import { withDefaults } from '../platform/with-defaults.js';
import { decodeJson, encodeJson } from '../platform/wire-json.js';
import {
  IDENTIFIER,
  LOCATE_NOTICE_PROTOCOL,
  LOCATE_REPLY_PROTOCOL,
  LOCATE_TOPIC,
  LOCATE_WIRE_MAX_BYTES,
  LOCATE_WIRE_MAX_USERS,
  LOCATE_WIRE_MAX_WATCH_MS,
  LocateNotice,
  LocateQuery,
  LocateReply,
  userKey,
} from './locate-wire.js';
import { LocationCache } from './location-cache.js';
import { LocationHolder } from './location-holder.js';
import { LocationMetrics, type LocationStats } from './location-metrics.js';
import type { MeshTransport, PeerId } from './transport.js';

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
  /** The users of `userIds` with a device here that wants conversations homed at `askerCellId` (location-holder.ts). */
  readonly localUsers: (tenant: string, userIds: readonly string[], askerCellId: string) => readonly string[] | Promise<readonly string[]>;
  /** Where the metrics go; nowhere when omitted (the counters stay readable through `stats()`). */
  readonly metrics?: Metrics | undefined;
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

/**
 * Locates users by broadcast. Lifecycle: `start()` subscribes to the query topic and serves the
 * reply protocol; `stop()` unsubscribes, cancels its timers and rejects pending locates with
 * `LOCATE_STOPPED`. The transport must be started before `start()` and stopped after `stop()`.
 */
export class LocationService {
  private readonly settings: Required<LocationInit>;
  private readonly metrics: LocationMetrics;
  private readonly cache: LocationCache;
  private readonly flights = new Map<string, Flight>();
  private batch: Flight[] = [];
  private batchTimer: TimerHandle | undefined;
  private readonly queries = new Map<string, OpenQuery>();
  private readonly holder: LocationHolder;
  /** What this cell's queries ask the others to watch for: as long as it may serve their answers. */
  private readonly watchMs: number;
  private running = false;

  constructor(
    private readonly components: LocationComponents,
    init: LocationInit = {},
  ) {
    this.settings = withDefaults<LocationInit>(LOCATION_DEFAULTS, init);
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
    this.metrics = new LocationMetrics(components.metrics ?? noopMetrics);
    this.cache = new LocationCache(components.clock, cacheMaxEntries);
    this.holder = new LocationHolder({ ...components, running: () => this.running }, this.settings, this.metrics);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const { transport } = this.components;
    transport.subscribe(
      LOCATE_TOPIC,
      (message) => this.holder.onQuery(message),
      (message) => this.holder.validateQuery(message),
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
    this.holder.clear();
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
    const cached = this.cache.get(key);
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
    this.cache.remove(userKey(tenant, userId), cellId);
  }

  /**
   * Adds a location learnt without asking (for example: a forwarded message from the user came
   * from `cellId`) to the cached answer, or starts one with the positive TTL.
   */
  remember(tenant: string, userId: string, cellId: string): void {
    if (cellId === this.components.cellId || this.settings.cacheMaxEntries === 0) return;
    const key = userKey(tenant, userId);
    if (!this.cache.add(key, cellId)) this.cache.put(key, [cellId], this.components.clock.now() + this.settings.cacheTtlMs);
  }

  /**
   * `cellId` left the cluster: every cached answer naming it is dropped (not just trimmed), so the
   * next locate of those users asks where their devices went.
   */
  forgetCell(cellId: string): void {
    this.cache.removeCell(cellId);
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
    if (this.running) this.holder.userArrived(tenant, userId);
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
      if (ttlMs > 0) this.cache.put(flight.key, cells, now + ttlMs);
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
      this.cache.add(key, notice.cellId);
    }
    return encodeJson({ ok: true });
  }
}
