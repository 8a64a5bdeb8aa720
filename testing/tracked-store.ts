import type { RangeQuery, Store, StoreOp } from '../platform/store/store.js';
import { whenIdle, type BusyCount } from './tracked-work.js';

/**
 * A store that counts its operations under way, so that a test on a virtual clock can wait
 * until the code under test is done instead of for a guessed number of event-loop turns: in
 * worlds whose only I/O is the store, nothing but a store operation can wake the code once the
 * timers due have run (tracked-work.ts says why).
 */
export class TrackedStore implements Store, BusyCount {
  private underWay = 0;
  readonly getManySync?: (keys: readonly string[]) => Array<string | undefined>;

  /** `heldWrites`, when the inner store has it, counts writes the test holds back on purpose. */
  constructor(private readonly inner: Store & { readonly heldWrites?: number }) {
    const getManySync = inner.getManySync?.bind(inner);
    if (getManySync !== undefined) this.getManySync = getManySync;
  }

  /** Operations under way that can finish by themselves (not the writes a test holds back). */
  get busy(): number {
    return this.underWay - (this.inner.heldWrites ?? 0);
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  get(key: string): Promise<string | undefined> {
    return this.track(this.inner.get(key));
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.track(this.inner.getMany(keys));
  }

  write(ops: readonly StoreOp[]): Promise<void> {
    return this.track(this.inner.write(ops));
  }

  range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    return this.track(this.inner.range(query));
  }

  private track<T>(operation: Promise<T>): Promise<T> {
    this.underWay++;
    return operation.finally(() => this.underWay--);
  }
}

/**
 * Resolves once none of `stores` has an operation under way after a full event-loop turn (see
 * TrackedStore); fails, rather than returning early, when that does not happen within `maxTurns`.
 */
export function whenStoresIdle(stores: Iterable<TrackedStore>, maxTurns = 10_000): Promise<void> {
  return whenIdle(stores, 'the stores', maxTurns);
}
