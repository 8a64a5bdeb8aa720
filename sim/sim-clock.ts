import type { Clock, TimerHandle } from '../platform/clock.js';

/**
 * One timer, which is also its own handle: a run sets millions of timers, and a closure plus a
 * handle object per timer (each also named at runtime by tsx's keepNames) was a measurable share
 * of the simulator's time. `life`, when set, fences the callback (FencedClock).
 */
class SimTimer implements TimerHandle {
  cancelled = false;

  constructor(
    readonly dueMs: number,
    readonly callback: () => void,
    readonly life: Life | undefined,
  ) {}

  cancel(): void {
    this.cancelled = true;
  }
}

/** The timers due at one instant, in the order they were set; `next` is the first not yet fired. */
interface Bucket {
  readonly timers: SimTimer[];
  next: number;
}

/**
 * The simulator's virtual clock: the semantics of platform/manual-clock.ts (timers fire in due
 * order, ties in the order they were set; time moves only when told to) on a calendar queue: one
 * bucket per due instant, appended to in the order timers are set, and a binary heap of the
 * instants. A run holds up to a million timers, most of them network deliveries due within a few
 * ms, so many share an instant: setting and firing one is O(1) but for the first timer of an
 * instant, where a heap of all the timers cost about 20 cache-missing steps per timer at 1,000
 * cells (ManualClock's sorted array costs O(n)). Cancelled timers are dropped when reached.
 */
export class SimClock implements Clock {
  private nowMs: number;
  private readonly buckets = new Map<number, Bucket>();
  /** The instants that have a bucket, as a binary min-heap. */
  private readonly instants: number[] = [];
  private firedCount = 0;
  /** The bucket of the timer peek() last returned. */
  private head: Bucket | undefined;

  constructor(startMs = 1_700_000_000_000) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  /** Timers fired since the start (a measure of the work a run did). */
  get fired(): number {
    return this.firedCount;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    return this.setTimerOf(undefined, delayMs, callback);
  }

  /** A timer whose callback runs only if `life` is still alive when it fires (counted as fired either way). */
  setTimerOf(life: Life | undefined, delayMs: number, callback: () => void): TimerHandle {
    const dueMs = this.nowMs + Math.max(0, delayMs);
    const timer = new SimTimer(dueMs, callback, life);
    const bucket = this.buckets.get(dueMs);
    if (bucket !== undefined) {
      bucket.timers.push(timer);
    } else {
      this.buckets.set(dueMs, { timers: [timer], next: 0 });
      this.pushInstant(dueMs);
    }
    return timer;
  }

  /** Timers set and neither fired nor cancelled (O(n)). */
  pendingTimers(): number {
    let count = 0;
    for (const bucket of this.buckets.values()) for (let index = bucket.next; index < bucket.timers.length; index++) if (!bucket.timers[index]!.cancelled) count++;
    return count;
  }

  /** The due time of the next live timer, or undefined when none is left. */
  nextDueMs(): number | undefined {
    return this.peek()?.dueMs;
  }

  /** Moves time forward by `deltaMs`, firing every timer that falls due on the way. */
  advance(deltaMs: number): void {
    this.advanceTo(this.nowMs + deltaMs);
  }

  /** Fires, in order, every timer due at or before `targetMs` (also those set meanwhile), then sets the time to it. */
  advanceTo(targetMs: number): void {
    for (;;) {
      const top = this.peek();
      if (top === undefined || top.dueMs > targetMs) break;
      // Taken from the bucket peek() found; a callback may add timers to it, and peek() drops it once empty.
      this.head!.next++;
      this.nowMs = Math.max(this.nowMs, top.dueMs);
      this.firedCount++;
      if (top.life === undefined || top.life.alive) top.callback();
    }
    this.nowMs = Math.max(this.nowMs, targetMs);
  }

  /** The next live timer, without taking it; drops the cancelled ones before it. */
  private peek(): SimTimer | undefined {
    for (;;) {
      const instant = this.instants[0];
      if (instant === undefined) return undefined;
      const bucket = this.buckets.get(instant)!;
      while (bucket.next < bucket.timers.length && bucket.timers[bucket.next]!.cancelled) bucket.next++;
      if (bucket.next < bucket.timers.length) {
        this.head = bucket;
        return bucket.timers[bucket.next];
      }
      this.buckets.delete(instant);
      this.popInstant();
    }
  }

  private pushInstant(instant: number): void {
    const heap = this.instants;
    heap.push(instant);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >>> 1;
      const above = heap[parent]!;
      if (above <= instant) break;
      heap[index] = above;
      index = parent;
    }
    heap[index] = instant;
  }

  private popInstant(): void {
    const heap = this.instants;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let index = 0;
    const length = heap.length;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && heap[right]! < heap[left]! ? right : left;
      if (heap[child]! >= last) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
  }
}

/**
 * The life of one incarnation of a cell. Every port the simulator hands to that incarnation
 * (clock, store, transport, device connections) checks it: once the cell crashes, nothing the
 * old objects do reaches the world any more and nothing from the world reaches them, which is
 * what a killed process looks like from outside.
 */
export class Life {
  private aliveValue = true;

  get alive(): boolean {
    return this.aliveValue;
  }

  end(): void {
    this.aliveValue = false;
  }
}

/** A promise that never settles: what a dead process's pending calls turn into. */
export function never<T>(): Promise<T> {
  return new Promise<T>(() => {});
}

const NOOP_HANDLE: TimerHandle = { cancel: () => {} };

/** The clock of one incarnation: its timers die with it. */
export class FencedClock implements Clock {
  constructor(
    private readonly base: Clock,
    private readonly life: Life,
  ) {}

  now(): number {
    return this.base.now();
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    if (!this.life.alive) return NOOP_HANDLE;
    const { base, life } = this;
    // On the simulator's own clock the fence is a field of the timer rather than a closure.
    if (base instanceof SimClock) return base.setTimerOf(life, delayMs, callback);
    return base.setTimer(delayMs, () => {
      if (life.alive) callback();
    });
  }
}
