import assert from 'node:assert/strict';
import { Level } from 'level';
import { GroupCommit, type GroupCommitStats } from './group-commit.js';
import { decodeKey, encodeKey } from './key-codec.js';
import type { RangeQuery, Store, StoreOp } from './store.js';
import { StoreGuard, assertValidOps, assertValidRange } from './store-guard.js';

export interface LevelStoreInit {
  /** Directory of the LevelDB database; created (with its parents) when missing. */
  directory: string;
  /**
   * Fsync each batch before acknowledging its writes (default true). Without it a write
   * survives a crash of the process but not of the machine; only benchmarks should turn it off.
   */
  sync?: boolean;
  /**
   * LevelDB's write buffer (memtable) in bytes, default 32 MiB (LevelDB's own is 4 MiB). A chat
   * cell writes a steady stream of small values; a larger buffer means fewer level-0 files and
   * compactions competing with the cell for the CPU, at the cost of memory (up to two buffers)
   * and a longer log replay after a crash.
   */
  writeBufferBytes?: number;
  /**
   * Least time between the starts of two fsynced batches, default 0 (back to back). Each flush
   * has a fixed cost (a thread-pool hop, the fsync in the kernel); under steady moderate load a
   * millisecond or two gathers many writes into one flush for that much more ack latency.
   */
  minFlushIntervalMs?: number;
  /** Most ops coalesced into one LevelDB batch (default in group-commit.ts). */
  maxBatchOps?: number;
  /** Most ops waiting behind the batch being written (default in group-commit.ts). */
  maxQueuedOps?: number;
}

const DEFAULT_WRITE_BUFFER_BYTES = 32 * 1024 * 1024;


/**
 * The embedded, durable Store of a cell: LevelDB through `level` (classic-level).
 *
 * Concurrent writes are group-committed: they queue while a batch is being written and go
 * together in the next one, so a single fsync acknowledges many writes. Keys are stored with
 * the order-preserving codec of key-codec.ts, so any string may be a key and ranges follow the
 * port's string order; values are stored as UTF-8.
 */
export class LevelStore implements Store {
  private readonly directory: string;
  private readonly sync: boolean;
  private readonly writeBufferBytes: number;
  private readonly minFlushIntervalMs: number;
  private lastFlushStartMs = 0;
  private readonly guard: StoreGuard;
  /** Writes wait here as given (copied, not encoded): a key is encoded only as its batch is built. */
  private readonly commits: GroupCommit<StoreOp>;
  // Made in open(): constructing a Level already starts opening the directory.
  private db: Level<Buffer, string> | undefined;

  constructor(init: LevelStoreInit) {
    this.directory = init.directory;
    this.sync = init.sync ?? true;
    this.writeBufferBytes = init.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES;
    this.minFlushIntervalMs = init.minFlushIntervalMs ?? 0;
    this.guard = new StoreGuard(`LevelDB store at ${init.directory}`);
    this.commits = new GroupCommit<StoreOp>({
      flush: (ops) => this.writeBatch(ops),
      beforeFlush: () => this.spaceFlushes(),
      maxBatchOps: init.maxBatchOps,
      maxQueuedOps: init.maxQueuedOps,
    });
  }

  open(): Promise<void> {
    return this.guard.open(async () => {
      this.db = new Level<Buffer, string>(this.directory, {
        keyEncoding: 'buffer',
        valueEncoding: 'utf8',
        writeBufferSize: this.writeBufferBytes,
      });
      await this.db.open();
    });
  }

  close(): Promise<void> {
    return this.guard.close(async () => {
      await this.db?.close();
    });
  }

  get(key: string): Promise<string | undefined> {
    return this.guard.run('get', () => this.database().get(encodeKey(key)));
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.guard.run('getMany', () => this.database().getMany(keys.map(encodeKey)));
  }

  getManySync(keys: readonly string[]): Array<string | undefined> {
    return this.guard.runSync('getManySync', () => {
      const db = this.database();
      return keys.map((key) => db.getSync(encodeKey(key)));
    });
  }

  write(ops: readonly StoreOp[]): Promise<void> {
    // Everything up to submit() runs synchronously in this call, so the queue holds writes in
    // call order.
    return this.guard.run('write', () => {
      assertValidOps(ops);
      return this.commits.submit(ops.slice());
    });
  }

  range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    return this.guard.run('range', async () => {
      assertValidRange(query);
      const entries = await this.database()
        .iterator({
          gte: encodeKey(query.gte),
          lt: encodeKey(query.lt),
          reverse: query.reverse ?? false,
          limit: query.limit,
        })
        .all();
      return entries.map(([key, value]): [string, string] => [decodeKey(key), value]);
    });
  }

  /**
   * One LevelDB iterator reads the whole range: it reads from the implicit snapshot LevelDB takes
   * when it is created, whatever is written meanwhile. Each page is one operation of the guard,
   * so close() waits for the page under way (and closing the database ends the iterator).
   */
  async *snapshotScan(range: { gte: string; lt: string }, pageSize: number): AsyncGenerator<[key: string, value: string]> {
    assert(Number.isSafeInteger(pageSize) && pageSize > 0, `page size must be a positive integer, got ${pageSize}`);
    const iterator = this.guard.runSync('snapshotScan', () => this.database().iterator({ gte: encodeKey(range.gte), lt: encodeKey(range.lt) }));
    try {
      for (;;) {
        const page = await this.guard.run('snapshotScan', () => iterator.nextv(pageSize));
        for (const [key, value] of page) yield [decodeKey(key), value];
        if (page.length === 0) return;
      }
    } finally {
      await iterator.close().catch(() => undefined);
    }
  }

  /**
   * One atomic, durable LevelDB batch. The chained-batch API costs less than half as much per op
   * as `db.batch(array)`, whose per-op copies and checks were the main thread's largest cost.
   */
  private async writeBatch(ops: StoreOp[]): Promise<void> {
    const batch = this.database().batch();
    for (const op of ops) {
      if (op.type === 'put') batch.put(encodeKey(op.key), op.value);
      else batch.del(encodeKey(op.key));
    }
    await batch.write({ sync: this.sync });
  }

  /** Waits out `minFlushIntervalMs` since the last flush began (this adapter owns real time). */
  private async spaceFlushes(): Promise<void> {
    if (this.minFlushIntervalMs <= 0) return;
    const waitMs = this.lastFlushStartMs + this.minFlushIntervalMs - performance.now(); // real-clock-ok
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs)); // real-clock-ok
    this.lastFlushStartMs = performance.now(); // real-clock-ok
  }

  /** Batches written and writes acknowledged so far; writes / batches is the grouping factor. */
  stats(): GroupCommitStats {
    return this.commits.stats();
  }

  private database(): Level<Buffer, string> {
    assert(this.db !== undefined, 'LevelStore used before open()');
    return this.db;
  }
}

/**
 * Whether opening a LevelDB store failed because another process holds its directory's LOCK
 * (LevelDB allows one process per directory): `LEVEL_LOCKED` somewhere in the cause chain.
 */
export function isLockedByAnotherProcess(error: unknown): boolean {
  let current = error;
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    if ((current as { code?: unknown }).code === 'LEVEL_LOCKED') return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
