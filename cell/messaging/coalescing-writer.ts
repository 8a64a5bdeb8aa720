import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { Store } from '../../platform/store/store.js';

/**
 * Writes the latest value of each key at most every `intervalMs`, one store write at a time: a
 * key set many times meanwhile is written once. For delivery cursors, which devices move with
 * every ack (agents ack every conversation of their merchant): written at every ack they would
 * outnumber the messages in the store's batches. The values not yet written stay readable
 * (`unwritten`), so a device reconnecting at once still resumes from its latest ack; a crash
 * loses at most `intervalMs` of acks, which means a redelivery the client drops by seq. A batch
 * whose write failed is set again (where no newer value was set meanwhile) and retried at the
 * next interval, so a store that fails for a while delays cursors but does not lose them.
 */
/** Keys per store write: small enough to keep each write's synchronous work well under a millisecond. */
const MAX_KEYS_PER_WRITE = 128;

export class CoalescingWriter {
  private pending = new Map<string, string>();
  /** The batch being written, readable until it lands. */
  private inFlight = new Map<string, string>();
  /** The write under way; resolves whether it landed. */
  private writing: Promise<boolean> | undefined;
  private timer: TimerHandle | undefined;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  set(key: string, value: string): void {
    this.pending.set(key, value);
    this.schedule();
  }

  /** The value set for `key` and not yet written, if any. */
  unwrittenValue(key: string): string | undefined {
    return this.pending.get(key) ?? this.inFlight.get(key);
  }

  /** Values set and not yet written, with keys that start with `prefix` (newest wins). */
  unwritten(prefix: string): Map<string, string> {
    const found = new Map<string, string>();
    for (const source of [this.inFlight, this.pending]) {
      for (const [key, value] of source) if (key.startsWith(prefix)) found.set(key, value);
    }
    return found;
  }

  /** Writes everything set so far now, and resolves once it landed (or a write failed and was logged). */
  async flushed(): Promise<void> {
    for (;;) {
      if (this.writing !== undefined) {
        if (!(await this.writing)) return;
        continue;
      }
      if (this.pending.size === 0) return;
      this.timer?.cancel();
      this.timer = undefined;
      this.writing = this.writeAll();
    }
  }

  private schedule(): void {
    if (this.timer !== undefined || this.writing !== undefined) return;
    this.timer = this.clock.setTimer(this.intervalMs, () => {
      this.timer = undefined;
      this.writing ??= this.writeAll();
    });
  }

  private async writeAll(): Promise<boolean> {
    const batch = this.pending;
    this.pending = new Map();
    this.inFlight = batch;
    try {
      const ops = [...batch].map(([key, value]) => ({ type: 'put' as const, key, value }));
      // In slices: thousands of cursors in one store write are one long synchronous stretch of
      // batch building on the event loop, which every message behind it would wait for.
      for (let start = 0; start < ops.length; start += MAX_KEYS_PER_WRITE) {
        await this.store.write(ops.slice(start, start + MAX_KEYS_PER_WRITE));
      }
      return true;
    } catch (error) {
      this.logger.warn({ err: error, keys: batch.size }, 'delivery cursors not persisted; retrying at the next interval');
      // Bounded: at most one value per key, the keys this writer was given.
      for (const [key, value] of batch) if (!this.pending.has(key)) this.pending.set(key, value);
      return false;
    } finally {
      this.inFlight = new Map();
      this.writing = undefined;
      if (this.pending.size > 0) this.schedule();
    }
  }
}
