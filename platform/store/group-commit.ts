import assert from 'node:assert/strict';
import { StoreError } from './store.js';

/**
 * Group commit: concurrent writes share one durable flush.
 *
 * A durable flush (an fsync for LevelDB, a round trip for Redis) costs about the same for one
 * op as for a thousand, so writes that arrive while a flush is under way wait and go together
 * in the next one. Guarantees:
 * - a write's ops are never split: they land in one flush, all or none;
 * - flushes run one at a time, in queue order, so writes resolve in the order they were
 *   submitted and a later write to the same key wins;
 * - a write resolves only after the flush holding its ops has resolved (is durable);
 * - when a flush fails, every write in it rejects with a StoreError whose cause is the failure;
 *   the writes queued behind it still go on in the next flush.
 *
 * Memory is bounded: at most `maxQueuedOps` ops wait in the queue, plus the one flush under way
 * (at most `maxBatchOps` ops, or a single larger write). A write that would pass the bound is
 * rejected at once with StoreError, which callers answer as STORE_UNAVAILABLE: a store that
 * cannot keep up should push back on clients rather than buffer without end.
 */

export const groupCommitDefaults = {
  /** Caps the size of one flush, so one slow fsync never holds a huge batch of acks. */
  maxBatchOps: 2_048,
  /** At about 1 KiB a value, this bounds the queue near 64 MiB. */
  maxQueuedOps: 65_536,
} as const;

export interface GroupCommitInit<Op> {
  /**
   * Writes `ops` atomically and durably. Called with one batch at a time, never concurrently;
   * the array belongs to the callee.
   */
  flush: (ops: Op[]) => Promise<void>;
  /** Most ops coalesced into one flush; a single write larger than this goes alone, unsplit. */
  maxBatchOps?: number | undefined;
  /** Most ops waiting behind the flush under way. */
  maxQueuedOps?: number | undefined;
  /**
   * Awaited before each flush takes its batch from the queue, so an adapter can space flushes
   * out: writes arriving meanwhile join the batch, and fewer, larger flushes cost less.
   */
  beforeFlush?: () => Promise<void> | void;
}

export interface GroupCommitStats {
  /** Flushes that succeeded (underlying batches written). */
  batches: number;
  /** Writes (submit calls) made durable. */
  writes: number;
}

interface PendingWrite<Op> {
  readonly ops: readonly Op[];
  readonly resolve: () => void;
  readonly reject: (error: StoreError) => void;
}

export class GroupCommit<Op> {
  private readonly flush: (ops: Op[]) => Promise<void>;
  private readonly beforeFlush: (() => Promise<void> | void) | undefined;
  private readonly maxBatchOps: number;
  private readonly maxQueuedOps: number;
  private readonly queue: Array<PendingWrite<Op>> = [];
  private queuedOps = 0;
  private flushing = false;
  private batches = 0;
  private writes = 0;

  constructor(init: GroupCommitInit<Op>) {
    this.flush = init.flush;
    this.beforeFlush = init.beforeFlush;
    this.maxBatchOps = init.maxBatchOps ?? groupCommitDefaults.maxBatchOps;
    this.maxQueuedOps = init.maxQueuedOps ?? groupCommitDefaults.maxQueuedOps;
    assert(Number.isSafeInteger(this.maxBatchOps) && this.maxBatchOps > 0, 'maxBatchOps must be > 0');
    assert(Number.isSafeInteger(this.maxQueuedOps) && this.maxQueuedOps > 0, 'maxQueuedOps must be > 0');
  }

  /** Queues `ops` as one atomic write; resolves once they are durable. */
  submit(ops: readonly Op[]): Promise<void> {
    if (this.queuedOps + ops.length > this.maxQueuedOps) {
      const message =
        `write queue full: ${this.queuedOps} ops waiting, ` +
        `${ops.length} more would pass the bound of ${this.maxQueuedOps}`;
      return Promise.reject(new StoreError(message));
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ops, resolve, reject });
      this.queuedOps += ops.length;
      if (!this.flushing) {
        this.flushing = true;
        void this.flushQueue();
      }
    });
  }

  stats(): GroupCommitStats {
    return { batches: this.batches, writes: this.writes };
  }

  private async flushQueue(): Promise<void> {
    // Yield one microtask, so that the writes submitted by the same synchronous stretch of code
    // share the first flush instead of the first write going alone.
    await undefined;
    while (this.queue.length > 0) {
      await this.beforeFlush?.();
      const batch = this.takeBatch();
      const ops = batch.flatMap((write) => write.ops);
      try {
        // An empty write still waits its turn, so that it resolves in order, but costs no flush.
        if (ops.length > 0) {
          await this.flush(ops);
          this.batches += 1;
        }
      } catch (cause) {
        const error =
          cause instanceof StoreError ? cause : new StoreError('batch write failed', { cause });
        for (const write of batch) write.reject(error);
        continue;
      }
      this.writes += batch.length;
      for (const write of batch) write.resolve();
    }
    this.flushing = false;
  }

  /** Takes whole writes from the head of the queue: up to maxBatchOps ops, at least one write. */
  private takeBatch(): Array<PendingWrite<Op>> {
    let writeCount = 0;
    let opCount = 0;
    for (const write of this.queue) {
      if (writeCount > 0 && opCount + write.ops.length > this.maxBatchOps) break;
      writeCount += 1;
      opCount += write.ops.length;
    }
    this.queuedOps -= opCount;
    return this.queue.splice(0, writeCount);
  }
}
