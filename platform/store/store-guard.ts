import assert from 'node:assert/strict';
import { StoreError, type RangeQuery, type StoreOp } from './store.js';

type Phase = 'new' | 'opening' | 'open' | 'closing' | 'closed';

/**
 * The lifecycle that every adapter shares: open once, run operations only while open, and on
 * close wait for the operations under way before releasing the backend.
 *
 * Operating errors of the backend come out as StoreError with the original as `cause`. Misuse
 * by the caller (an operation before open() resolved, a second open()) is a programmer error and
 * fails an assertion; so do the adapters' own assertions, which are never wrapped.
 */
export class StoreGuard {
  private phase: Phase = 'new';
  private opening: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private readonly underWay = new Set<Promise<unknown>>();

  /** `name` identifies the store in error messages, for example `LevelDB store at /data/cell`. */
  constructor(private readonly name: string) {}

  open(openBackend: () => Promise<void>): Promise<void> {
    assert.equal(this.phase, 'new', `${this.name}: open() must be called once, before anything else`);
    this.phase = 'opening';
    this.opening = (async () => {
      try {
        await openBackend();
      } catch (cause) {
        this.phase = 'closed';
        throw new StoreError(`${this.name}: open failed`, { cause });
      }
      // close() may have begun while the backend was opening; then it owns the phase.
      if (this.phase === 'opening') this.phase = 'open';
    })();
    return this.opening;
  }

  /**
   * Runs `perform` if the store is open, and remembers it until it settles so that close() can
   * wait for it. The phase is checked synchronously, at the call, so an operation called after
   * close() always rejects, whatever the timing of the promises.
   */
  run<T>(operation: string, perform: () => Promise<T>): Promise<T> {
    const promise = this.perform(operation, perform);
    this.underWay.add(promise);
    const forget = (): void => {
      this.underWay.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  }

  /** Runs a synchronous operation if the store is open, with the same errors as `run`. */
  runSync<T>(operation: string, perform: () => T): T {
    assert(this.phase !== 'new' && this.phase !== 'opening', `${this.name}: ${operation} called before open() resolved`);
    if (this.phase !== 'open') throw new StoreError(`${this.name}: ${operation} on a closed store`);
    try {
      return perform();
    } catch (cause) {
      if (cause instanceof StoreError || cause instanceof assert.AssertionError) throw cause;
      throw new StoreError(`${this.name}: ${operation} failed`, { cause });
    }
  }

  /** Idempotent: every call returns the same promise. */
  close(closeBackend: () => Promise<void>): Promise<void> {
    this.closing ??= this.shutDown(closeBackend);
    return this.closing;
  }

  private async perform<T>(operation: string, perform: () => Promise<T>): Promise<T> {
    assert(
      this.phase !== 'new' && this.phase !== 'opening',
      `${this.name}: ${operation} called before open() resolved`,
    );
    if (this.phase !== 'open') throw new StoreError(`${this.name}: ${operation} on a closed store`);
    try {
      return await perform();
    } catch (cause) {
      if (cause instanceof StoreError || cause instanceof assert.AssertionError) throw cause;
      throw new StoreError(`${this.name}: ${operation} failed`, { cause });
    }
  }

  private async shutDown(closeBackend: () => Promise<void>): Promise<void> {
    const neverOpened = this.phase === 'new';
    this.phase = 'closing';
    // A failed open() was reported to its own caller; close() only has to wait for it to end.
    await this.opening?.catch(() => undefined);
    // Writes resolve once durable, so close() right after a burst of writes loses none of them.
    await Promise.allSettled(this.underWay);
    try {
      if (!neverOpened) await closeBackend();
    } catch (cause) {
      throw new StoreError(`${this.name}: close failed`, { cause });
    } finally {
      this.phase = 'closed';
    }
  }
}

/**
 * A lone surrogate (half of a UTF-16 pair) has no UTF-8 form: LevelDB and Redis would store
 * U+FFFD in its place while the memory store kept it, so every adapter refuses it instead.
 * JSON.stringify never produces one (it escapes them), so values built with it always pass.
 */
const loneSurrogatePattern = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/**
 * Any surrogate at all. Most values have none, and this plain scan allocates nothing, where the
 * look-behind above allocated on every value (4% of the cell's allocations per message).
 */
const anySurrogatePattern = /[\uD800-\uDFFF]/;

/** Asserts that every value of `ops` is well-formed UTF-16. Keys may hold any code unit. */
export function assertValidOps(ops: readonly StoreOp[]): void {
  for (const op of ops) {
    if (op.type !== 'put' || !anySurrogatePattern.test(op.value)) continue;
    assert(
      !loneSurrogatePattern.test(op.value),
      `the value for key ${JSON.stringify(op.key)} holds a lone surrogate, which a store cannot keep`,
    );
  }
}

export function assertValidRange(query: RangeQuery): void {
  assert(
    Number.isSafeInteger(query.limit) && query.limit > 0,
    `range limit must be a positive integer, got ${query.limit}`,
  );
}
