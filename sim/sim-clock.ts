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
    readonly order: number,
    readonly callback: () => void,
    readonly life: Life | undefined,
  ) {}

  cancel(): void {
    this.cancelled = true;
  }
}

/**
 * The simulator's virtual clock: the semantics of platform/manual-clock.ts (timers fire in due
 * order, ties in the order they were set; time moves only when told to) on a binary heap, since
 * a run holds hundreds of thousands of timers and ManualClock's sorted array costs O(n) per
 * insert and per fire. Cancelled timers are dropped lazily when they reach the top.
 */
export class SimClock implements Clock {
  private nowMs: number;
  private nextOrder = 0;
  private readonly heap: SimTimer[] = [];
  private firedCount = 0;

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
    const timer = new SimTimer(this.nowMs + Math.max(0, delayMs), this.nextOrder++, callback, life);
    this.push(timer);
    return timer;
  }

  /** Timers set and neither fired nor cancelled (counts cancelled ones still in the heap: O(n)). */
  pendingTimers(): number {
    let count = 0;
    for (const timer of this.heap) if (!timer.cancelled) count++;
    return count;
  }

  /** Entries in the heap, cancelled ones included (O(1)). */
  get heapSize(): number {
    return this.heap.length;
  }

  /** The due time of the next live timer, or undefined when none is left. */
  nextDueMs(): number | undefined {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined) return undefined;
      if (!top.cancelled) return top.dueMs;
      this.pop();
    }
  }

  /** Moves time forward by `deltaMs`, firing every timer that falls due on the way. */
  advance(deltaMs: number): void {
    this.advanceTo(this.nowMs + deltaMs);
  }

  /** Fires, in order, every timer due at or before `targetMs` (also those set meanwhile), then sets the time to it. */
  advanceTo(targetMs: number): void {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined || top.dueMs > targetMs) break;
      this.pop();
      if (top.cancelled) continue;
      this.nowMs = Math.max(this.nowMs, top.dueMs);
      this.firedCount++;
      if (top.life === undefined || top.life.alive) top.callback();
    }
    this.nowMs = Math.max(this.nowMs, targetMs);
  }

  private push(timer: SimTimer): void {
    const heap = this.heap;
    heap.push(timer);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >>> 1;
      const above = heap[parent]!;
      if (!before(timer, above)) break;
      heap[index] = above;
      index = parent;
    }
    heap[index] = timer;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let index = 0;
    const length = heap.length;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && before(heap[right]!, heap[left]!) ? right : left;
      if (!before(heap[child]!, last)) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
  }
}

function before(a: SimTimer, b: SimTimer): boolean {
  return a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.order < b.order);
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
