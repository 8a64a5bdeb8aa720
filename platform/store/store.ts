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
   * the order they were called. Rejects with StoreError when the store cannot write, and then
   * nothing of the write was applied, nor ever will be: a write whose outcome the adapter could
   * not see (a Redis reply lost with its connection) is settled before it is answered. The one
   * exception is a StoreError with `ambiguous: true`: the adapter could not learn the outcome
   * (Redis stayed unreachable while it tried; its next write settles it first), or the write is
   * applied on a Redis primary that its replicas did not acknowledge. The write may then be
   * found in the store, and a caller that keeps state over it must read it again.
   */
  write(ops: readonly StoreOp[]): Promise<void>;
  /** Entries with gte <= key < lt, ascending by key (descending when `reverse`). */
  range(query: RangeQuery): Promise<Array<[key: string, value: string]>>;
  /**
   * Optional: every entry of a key range, ascending, as the store was at the call, while writes
   * go on (a backup of a running cell). Read in pages of about `pageSize` entries, so a large
   * range never sits in memory at once; the caller must read to the end or `return()` the
   * generator, which releases the snapshot. LevelDB has snapshots and offers it; adapters
   * without one (Redis) leave it out, and a consistent copy of a running cell is then the
   * backend's own (docs/operations.md, "Backup and restore"). Throws StoreError when the store
   * is not open or closes during the scan.
   */
  snapshotScan?(range: { gte: string; lt: string }, pageSize: number): AsyncGenerator<[key: string, value: string]>;
}

/**
 * The store failed an operation (I/O error, closed, unreachable). A failed write applied
 * nothing, unless `ambiguous` (see Store.write).
 */
export class StoreError extends Error {
  readonly code = 'STORE_UNAVAILABLE';
  /** A write that may have been applied all the same: the store could not learn whether. */
  readonly ambiguous: boolean;

  constructor(message: string, options?: { cause?: unknown; ambiguous?: boolean | undefined }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StoreError';
    this.ambiguous = options?.ambiguous === true;
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
