/**
 * Waiting on a virtual clock for the code under test to be done, instead of for a guessed number
 * of event-loop turns. With time standing still, once the timers due have run, only work that
 * ends outside the promise queue (a store operation, a port the test plays) can wake the code
 * again: promise callbacks all run before the next turn. So when none of that work is under way
 * after a full turn, nothing is left to do.
 */

/** Counts operations under way that can finish by themselves. */
export interface BusyCount {
  readonly busy: number;
}

/** Counts the calls of a test double (a port, a handler) until what they return has settled. */
export class TrackedWork implements BusyCount {
  private underWay = 0;

  get busy(): number {
    return this.underWay;
  }

  /** Counts `work` as under way until it settles; a plain value is done already. */
  track<T>(work: T | Promise<T>): Promise<T> {
    this.underWay++;
    return Promise.resolve(work).finally(() => this.underWay--);
  }
}

/**
 * Resolves once none of `sources` has work under way after a full event-loop turn; fails, rather
 * than returning early, when that does not happen within `maxTurns`.
 */
export async function whenIdle(sources: Iterable<BusyCount>, what: string, maxTurns = 10_000): Promise<void> {
  for (let turn = 0; turn < maxTurns; turn++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    let busy = 0;
    for (const source of sources) busy += source.busy;
    if (busy === 0) return;
  }
  throw new Error(`${what} did not go idle within ${maxTurns} event-loop turns`);
}
