import type { Clock } from '../../platform/clock.js';
import type { ConsultationView } from '../protocol/frames.js';

/** A waiting customer's devices on other cells get at most one position update per conversation this often. */
export const QUEUE_POSITION_INTERVAL_MS = 1_000;
/** Conversations whose position updates are held back at once; beyond, new ones are dropped (a later one, or a change of state, follows). */
export const MAX_HELD_POSITIONS = 10_000;

interface Held {
  tenant: string;
  /** The newest update not sent yet. */
  latest: ConsultationView | undefined;
}

/**
 * The queue positions a home cell's desk tells its waiting customers between changes of state,
 * on their way to the customers' devices on other cells. They are hints of the moment, never
 * stored, so they are thinned out before they cost outbox entries: a conversation's first update
 * goes at once, then at most one per interval, the newest (latest wins). A change of state of the
 * consultation drops the update still held, so an older position never follows it; the ones sent
 * already went through the conversation's fan-out before the change, so they arrive before it.
 */
export class QueuePositions {
  private readonly held = new Map<string, Held>();

  constructor(
    private readonly clock: Clock,
    /** Fans one update out to the customer's other cells (in order with the conversation's entries). */
    private readonly send: (tenant: string, view: ConsultationView) => void,
    private readonly intervalMs = QUEUE_POSITION_INTERVAL_MS,
    private readonly maxHeld = MAX_HELD_POSITIONS,
  ) {}

  /** The desk told a waiting customer its position (`view.state` is `waiting`). */
  offer(tenant: string, view: ConsultationView): void {
    const key = `${tenant}/${view.conv}`;
    const held = this.held.get(key);
    if (held !== undefined) {
      held.latest = view;
      return;
    }
    if (this.held.size >= this.maxHeld) return;
    this.send(tenant, view);
    this.held.set(key, { tenant, latest: undefined });
    this.clock.setTimer(this.intervalMs, () => this.intervalEnded(key));
  }

  /** The consultation of `conv` changed state: the position held back is out of date. */
  stateChanged(tenant: string, conv: string): void {
    const held = this.held.get(`${tenant}/${conv}`);
    if (held !== undefined) held.latest = undefined;
  }

  private intervalEnded(key: string): void {
    const held = this.held.get(key);
    if (held === undefined) return;
    if (held.latest === undefined) {
      this.held.delete(key);
      return;
    }
    this.send(held.tenant, held.latest);
    held.latest = undefined;
    this.clock.setTimer(this.intervalMs, () => this.intervalEnded(key));
  }
}
