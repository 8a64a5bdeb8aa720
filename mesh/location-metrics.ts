import type { CounterChild, Histogram, LabelledCounter, Metrics, Registered } from '../platform/metrics.js';

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

const COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/** The location service's counts: plain `stats` and the `cellmesh_locate_*` metrics on the port. */
export class LocationMetrics {
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
  private readonly registered: Registered[] = [];
  private readonly queries: CounterChild;
  private readonly usersPerQuery: Histogram;
  private readonly messagesPerQuery: Histogram;
  private readonly repliesSent: CounterChild;
  private readonly repliesReceived: CounterChild;
  private readonly cacheHits: CounterChild;
  private readonly cacheMisses: CounterChild;
  private readonly rejections: LabelledCounter<'reason'>;
  private readonly noticesSent: CounterChild;
  private readonly noticesReceived: CounterChild;
  private readonly watchesDropped: CounterChild;

  constructor(metrics: Metrics) {
    const register = <T extends Registered>(metric: T): T => {
      this.registered.push(metric);
      return metric;
    };
    this.queries = register(metrics.counter({ name: 'cellmesh_locate_queries_total', help: 'Location queries published (one publish each).' }));
    this.usersPerQuery = register(metrics.histogram({ name: 'cellmesh_locate_users_per_query', help: 'Users carried by one location query.', buckets: COUNT_BUCKETS }));
    this.messagesPerQuery = register(
      metrics.histogram({
        name: 'cellmesh_locate_messages_per_query',
        help: 'Network messages a completed location query cost: its publish plus the replies it received.',
        buckets: COUNT_BUCKETS,
      }),
    );
    const replies = register(metrics.labelledCounter({ name: 'cellmesh_locate_replies_total', help: 'Location replies, by direction.', labelNames: ['direction'] }));
    this.repliesSent = replies.labels({ direction: 'sent' });
    this.repliesReceived = replies.labels({ direction: 'received' });
    const cache = register(
      metrics.labelledCounter({ name: 'cellmesh_locate_cache_total', help: 'Locate calls answered from the cache (hit) or not (miss).', labelNames: ['result'] }),
    );
    this.cacheHits = cache.labels({ result: 'hit' });
    this.cacheMisses = cache.labels({ result: 'miss' });
    this.rejections = register(metrics.labelledCounter({ name: 'cellmesh_locate_rejected_total', help: 'Location messages rejected, by reason.', labelNames: ['reason'] }));
    const notices = register(
      metrics.labelledCounter({
        name: 'cellmesh_locate_notices_total',
        help: 'Notices that a watched user connected, by direction (sent to a watcher, received from a holder).',
        labelNames: ['direction'],
      }),
    );
    this.noticesSent = notices.labels({ direction: 'sent' });
    this.noticesReceived = notices.labels({ direction: 'received' });
    this.watchesDropped = register(
      metrics.counter({ name: 'cellmesh_locate_watches_dropped_total', help: 'Watches of other cells dropped to stay within the most watched users.' }),
    );
  }

  cacheHit(): void {
    this.stats.cacheHits++;
    this.cacheHits.inc();
  }

  cacheMiss(): void {
    this.stats.cacheMisses++;
    this.cacheMisses.inc();
  }

  querySent(users: number): void {
    this.stats.queriesSent++;
    this.stats.usersQueried += users;
    this.queries.inc();
    this.usersPerQuery.observe(users);
  }

  queryCompleted(replies: number): void {
    this.stats.queriesCompleted++;
    this.stats.queryMessages += 1 + replies;
    this.messagesPerQuery.observe(1 + replies);
  }

  replySent(): void {
    this.stats.repliesSent++;
    this.repliesSent.inc();
  }

  replyReceived(): void {
    this.stats.repliesReceived++;
    this.repliesReceived.inc();
  }

  noticeSent(): void {
    this.stats.noticesSent++;
    this.noticesSent.inc();
  }

  noticeReceived(): void {
    this.stats.noticesReceived++;
    this.noticesReceived.inc();
  }

  watchDropped(): void {
    this.stats.watchesDropped++;
    this.watchesDropped.inc();
  }

  rejected(reason: string): void {
    this.stats.messagesRejected++;
    this.rejections.labels({ reason }).inc();
  }

  /** Removes the metrics from the port, so a successor can register them again. */
  unregister(): void {
    for (const metric of this.registered.splice(0)) metric.unregister();
  }
}

