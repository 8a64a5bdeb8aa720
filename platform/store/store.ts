/**
 * The storage port of a cell: an ordered key-value store with atomic, durable batches.
 *
 * Keys and values are strings; keys sort by UTF-16 code unit (plain `<` on strings), which every
 * adapter must match, so range reads return the same entries in the same order everywhere.
 * The memory, LevelDB and Redis adapters (memory-store.ts, level-store.ts, redis-store.ts) pass
 * one contract suite, testing/store-contract.ts; the Redis run needs a redis-server binary and
 * reports itself skipped without one.
 */
export type StoreOp =
  | { type: 'put'; key: string; value: string }
  | { type: 'del'; key: string };

export interface RangeQuery {
  /** Inclusive lower bound. */
  gte: string;
  /** Exclusive upper bound. */
  lt: string;
  /** Newest-first (descending keys) when true. */
  reverse?: boolean;
  /** At most this many entries; must be a positive integer. */
  limit: number;
}

export interface Store {
  /** Opens the store; must be called once before anything else. */
  open(): Promise<void>;
  /** Waits for writes under way, then closes. Idempotent. */
  close(): Promise<void>;
  get(key: string): Promise<string | undefined>;
  /** Values in the order of `keys`, `undefined` where absent. */
  getMany(keys: readonly string[]): Promise<Array<string | undefined>>;
  /**
   * Optional: the same as `getMany`, answered synchronously from what the adapter holds on this
   * machine (LevelDB's memtable, block cache and bloom filters; memory). Hot paths use it to
   * skip a thread-pool round trip per lookup. Adapters that would need the network (Redis) leave
   * it out and callers use `getMany`. Throws StoreError when the store is not open.
   */
  getManySync?(keys: readonly string[]): Array<string | undefined>;
  /**
   * Applies all ops atomically (all or none) and resolves only once they are durable: a
   * `kill -9` of the process after the promise resolves loses none of them. Writes resolve in
   * the order they were called. Rejects with StoreError when the store cannot write.
   */
  write(ops: readonly StoreOp[]): Promise<void>;
  /** Entries with gte <= key < lt, ascending by key (descending when `reverse`). */
  range(query: RangeQuery): Promise<Array<[key: string, value: string]>>;
}

/** The store failed an operation (I/O error, closed, unreachable). */
export class StoreError extends Error {
  readonly code = 'STORE_UNAVAILABLE';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
  }
}

/**
 * A write refused because this process no longer holds the fence it wrote under (an adapter's
 * `fence` option, the lease of a merchant on Redis): nothing of the write was applied. Its code
 * stays STORE_UNAVAILABLE, so callers that only know StoreError answer it as any failed write;
 * `fenced` tells the ones that care (the owner of a lease gives the merchant up).
 */
export class StoreFencedError extends StoreError {
  readonly fenced = true;

  constructor(message: string) {
    super(message);
    this.name = 'StoreFencedError';
  }
}
