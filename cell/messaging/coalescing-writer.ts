import type { Logger } from '../logger.js';
import type { Store } from '../store/store.js';

/**
 * Writes the latest value of each key, one store write at a time: values set while a write is
 * under way wait and go together in the next one, and a key set many times meanwhile is
 * written once. For delivery cursors, which devices move with every ack: losing the newest
 * values in a crash only means a redelivery the client drops by seq, so callers do not wait.
 */
export class CoalescingWriter {
  private pending = new Map<string, string>();
  /** The batch being written, readable until it lands. */
  private inFlight = new Map<string, string>();
  private writing: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
  ) {}

  set(key: string, value: string): void {
    this.pending.set(key, value);
    this.writing ??= this.writeAll();
  }

  /** Values set and not yet written, with keys that start with `prefix` (newest wins). */
  unwritten(prefix: string): Map<string, string> {
    const found = new Map<string, string>();
    for (const source of [this.inFlight, this.pending]) {
      for (const [key, value] of source) if (key.startsWith(prefix)) found.set(key, value);
    }
    return found;
  }

  /** Resolves once everything set so far is written (or failed and was logged). */
  async flushed(): Promise<void> {
    while (this.writing !== undefined) await this.writing;
  }

  private async writeAll(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = this.pending;
      this.pending = new Map();
      this.inFlight = batch;
      try {
        await this.store.write([...batch].map(([key, value]) => ({ type: 'put' as const, key, value })));
      } catch (error) {
        this.logger.warn({ err: error, keys: batch.size }, 'delivery cursors not persisted');
      }
    }
    this.inFlight = new Map();
    this.writing = undefined;
  }
}
