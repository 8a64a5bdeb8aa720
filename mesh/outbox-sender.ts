import type { StoreOp, Store } from '../platform/store/store.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import { InvariantError } from '../platform/invariant.js';
import type { Random } from '../platform/random.js';
import { decodeJson, encodeJson, parseJson } from '../platform/wire-json.js';
import { outboxKeys, parseEntryKey, StoredEntry } from './forward-store.js';
import { FORWARD_PROTOCOL, ForwardResponse, type ForwardRequest, type JsonValue, type OutboxEpoch } from './forward-wire.js';
import type { DestinationQueue } from './outbox-destination.js';
import type { OutboxMetrics, OutboxStats } from './outbox-metrics.js';
import type { MeshTransport, PeerId } from './transport.js';

/** What the sender loops need of their outbox. */
export interface SenderContext {
  readonly components: {
    readonly store: Store;
    readonly transport: MeshTransport;
    readonly clock: Clock;
    readonly random: Random;
    readonly cellId: string;
    readonly resolvePeer: (cellId: string) => PeerId | undefined;
  };
  readonly settings: {
    readonly maxBatchEntries: number;
    readonly maxBatchBytes: number;
    readonly requestTimeoutMs: number;
    readonly backoffInitialMs: number;
    readonly backoffMaxMs: number;
  };
  readonly stats: OutboxStats;
  readonly metrics: OutboxMetrics;
  /** Aborts the requests under way when the outbox stops. */
  readonly signal: AbortSignal;
  running(): boolean;
  /** The outbox store's epoch (loaded before any loop runs). */
  epoch(): OutboxEpoch;
  /** Raises the epoch's generation to at least `generation`, durably. */
  raiseGeneration(generation: number): Promise<void>;
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
 * The sender loops of the outbox, one per destination: each reads the oldest entries above the
 * acknowledged seq, sends them in one forward request, deletes what the destination
 * acknowledged, and on failure retries with exponential backoff and jitter, forever.
 */
export class DestinationSender {
  constructor(private readonly context: SenderContext) {}

  /** The sender loop of one destination; ends only on stop. Rejects only on a broken invariant, which is a bug. */
  async run(state: DestinationQueue): Promise<void> {
    while (this.context.running()) {
      const workVersion = state.workVersion;
      let batch: LoadedEntry[];
      try {
        batch = await this.loadBatch(state);
      } catch (error) {
        if (error instanceof InvariantError) throw error;
        await this.sleep(state, this.backoffMs(state.attempt++));
        continue;
      }
      if (batch.length === 0) {
        state.resolveFlushWaiters();
        // Checked after the await and before waiting, in one synchronous step: a commit or a stop
        // that happened while the batch was read must not leave the loop asleep.
        if (state.workVersion !== workVersion || !this.context.running()) continue;
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
        } catch (error) {
          if (error instanceof InvariantError) throw error;
          // The entries stay stored and go again; the receiver drops them as duplicates.
          await this.sleep(state, this.backoffMs(state.attempt++));
        }
        continue;
      }
      if (outcome.kind === 'stale') {
        try {
          await this.context.raiseGeneration(outcome.generation + 1);
        } catch {
          // Retried with the next attempt.
        }
      }
      await this.sleep(state, this.backoffMs(state.attempt++));
    }
  }

  /** The next batch: the oldest entries above the acked seq and below any unsettled reservation. */
  private async loadBatch(state: DestinationQueue): Promise<LoadedEntry[]> {
    const limitSeq = state.sendableBelow();
    if (limitSeq <= state.ackedSeq + 1) return [];
    const rows = await this.context.components.store.range({
      gte: outboxKeys.entry(state.id, state.ackedSeq + 1),
      lt: outboxKeys.entry(state.id, limitSeq),
      limit: this.context.settings.maxBatchEntries,
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
      if (batch.length > 0 && bytes + size > this.context.settings.maxBatchBytes) break;
      bytes += size;
      batch.push({ seq, storeKey, key: entry.key, payload: entry.payload as JsonValue, enqueuedAtMs: entry.enqueuedAtMs });
    }
    if (corrupt.length > 0) {
      // An entry that cannot be read back can never be delivered; keeping it would stall every
      // later entry of this destination. It is counted and dropped.
      await this.context.components.store.write(corrupt);
      this.context.stats.corruptEntries += corrupt.length;
      state.dropped(corrupt.length);
      this.context.metrics.corrupt.inc(corrupt.length);
      if (batch.length === 0) return this.loadBatch(state);
    }
    return batch;
  }

  private async attempt(state: DestinationQueue, batch: readonly LoadedEntry[]): Promise<Attempt> {
    this.context.stats.attempts++;
    const peer = this.context.components.resolvePeer(state.id);
    if (peer === undefined) return this.countFailure('UNRESOLVED');
    const epoch = this.context.epoch();
    const request: ForwardRequest = {
      v: 1,
      sourceCellId: this.context.components.cellId,
      epoch: { ...epoch },
      entries: batch.map(({ seq, key, payload }) => ({ seq, key, payload })),
    };
    state.sending(batch);
    let answer: Uint8Array;
    try {
      answer = await this.context.components.transport.request(peer, FORWARD_PROTOCOL, encodeJson(request), {
        timeoutMs: this.context.settings.requestTimeoutMs,
        signal: this.context.signal,
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
    this.context.metrics.attempts.labels({ result: 'ok' }).inc();
    return { kind: 'acked', hw: response.hw };
  }

  private countFailure(code: string): Attempt {
    this.context.stats.failedAttempts++;
    this.context.metrics.attempts.labels({ result: code }).inc();
    return { kind: 'failed', code };
  }

  private async deleteAcked(state: DestinationQueue, done: readonly LoadedEntry[]): Promise<void> {
    const ackedSeq = done[done.length - 1]!.seq;
    await this.context.components.store.write([
      ...done.map((entry): StoreOp => ({ type: 'del', key: entry.storeKey })),
      // Kept so that numbering resumes above it after a restart with nothing left stored.
      { type: 'put', key: outboxKeys.acked(state.id), value: String(ackedSeq) },
    ]);
    state.acknowledged(ackedSeq, done.length);
    this.context.stats.ackedEntries += done.length;
    this.context.metrics.acked.inc(done.length);
  }

  /** Exponential backoff with "equal jitter": half the delay fixed, half random. */
  private backoffMs(attempt: number): number {
    const { backoffInitialMs, backoffMaxMs } = this.context.settings;
    const delayMs = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(attempt, 30));
    return delayMs / 2 + this.context.components.random.next() * (delayMs / 2);
  }

  private sleep(state: DestinationQueue, delayMs: number): Promise<void> {
    if (!this.context.running()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: TimerHandle | undefined;
      const wake = (): void => {
        timer?.cancel();
        state.wakeSleep = undefined;
        resolve();
      };
      state.wakeSleep = wake;
      timer = this.context.components.clock.setTimer(delayMs, wake);
    });
  }
}
