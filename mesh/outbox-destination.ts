import { invariant } from '../platform/invariant.js';
import type { StoredDestination } from './forward-store.js';

/** Sequence numbers handed out by one `enqueueOps` and not yet written or abandoned. */
export interface PendingReservation {
  readonly firstSeq: number;
  readonly count: number;
}

/**
 * The bookkeeping of one destination of the outbox: its sequence numbers (reserved, sent,
 * acknowledged), its backlog, and the wake-ups of its sender loop. The seqs only go forward:
 * each reservation starts above the last one and above what was acknowledged, a batch sent lies
 * between the acknowledged seq and the first unsettled reservation, and an acknowledgement never
 * goes beyond what was sent; a violation is a bug and throws an InvariantError.
 */
export class DestinationQueue implements StoredDestination {
  nextSeq = 1;
  /** Highest seq acknowledged; the next batch is read from above it. */
  ackedSeq = 0;
  /** Highest seq sent in a batch (since start). */
  private sentSeq = 0;
  /** Entries stored and not yet acknowledged. */
  waiting = 0;
  /** Entries of unsettled reservations. */
  private reserved = 0;
  oldestEnqueuedAtMs: number | undefined = undefined;
  /** Unsettled reservations, ascending by firstSeq (they are made in that order). */
  private readonly reservations: PendingReservation[] = [];
  /** Failed attempts in a row, for the backoff. */
  attempt = 0;
  /** Bumped by every event that may give the loop work, so a wake-up between its read and its wait is not lost. */
  workVersion = 0;
  loop: Promise<void> | undefined = undefined;
  /** Wakes the loop when it waits for work (idle) or for its backoff delay. */
  wakeIdle: (() => void) | undefined = undefined;
  wakeSleep: (() => void) | undefined = undefined;
  private readonly flushWaiters: Array<() => void> = [];

  constructor(readonly id: string) {}

  /** Entries waiting or reserved: what counts against the outbox's bound per destination. */
  get backlog(): number {
    return this.waiting + this.reserved;
  }

  /** Takes the next `count` seqs for entries about to be written. */
  reserve(count: number): PendingReservation {
    const firstSeq = this.nextSeq;
    const previous = this.reservations[this.reservations.length - 1];
    invariant(firstSeq > Math.max(this.ackedSeq, this.sentSeq) && (previous === undefined || previous.firstSeq + previous.count <= firstSeq), () =>
      `outbox seq for ${this.id} goes back: reserving ${firstSeq} with ${this.ackedSeq} acknowledged, ${this.sentSeq} sent, last reservation ${JSON.stringify(previous)}`,
    );
    this.nextSeq += count;
    this.reserved += count;
    const pending: PendingReservation = { firstSeq, count };
    this.reservations.push(pending);
    return pending;
  }

  /** The reservation was written (`durable`) or abandoned: the loop may send what lies below the next one. */
  settle(pending: PendingReservation, durable: boolean, enqueuedAtMs: number): void {
    const at = this.reservations.indexOf(pending);
    if (at >= 0) this.reservations.splice(at, 1);
    this.reserved -= pending.count;
    if (durable) {
      this.waiting += pending.count;
      this.oldestEnqueuedAtMs ??= enqueuedAtMs;
    }
    this.workVersion++;
    this.wakeIdle?.();
    this.resolveFlushWaiters();
  }

  /** The first seq the next batch must not include: an unsettled reservation's, or the next to be reserved. */
  sendableBelow(): number {
    return this.reservations[0]?.firstSeq ?? this.nextSeq;
  }

  /** A batch of these entries (ascending by seq, as read) goes out. */
  sending(batch: readonly { readonly seq: number }[]): void {
    const limit = this.sendableBelow();
    let previous = this.ackedSeq;
    for (const { seq } of batch) {
      invariant(seq > previous && seq < limit, () => `outbox batch for ${this.id} out of order: ${seq} after ${previous} (acknowledged ${this.ackedSeq}, sendable below ${limit})`);
      previous = seq;
    }
    this.sentSeq = Math.max(this.sentSeq, previous);
  }

  /** The destination acknowledged every entry up to `ackedSeq`, `count` of them, which are deleted. */
  acknowledged(ackedSeq: number, count: number): void {
    invariant(ackedSeq > this.ackedSeq && ackedSeq <= this.sentSeq, () => `outbox ack for ${this.id} out of bounds: ${ackedSeq} with ${this.ackedSeq} acknowledged and ${this.sentSeq} sent`);
    this.ackedSeq = ackedSeq;
    this.dropped(count);
  }

  /** `count` waiting entries are gone (acknowledged, or unreadable and deleted). */
  dropped(count: number): void {
    this.waiting = Math.max(0, this.waiting - count);
    if (this.waiting === 0) this.oldestEnqueuedAtMs = undefined;
  }

  /** Resolves when nothing waits and nothing is reserved, or on `releaseFlushWaiters`. */
  flushed(): Promise<void> {
    if (this.waiting === 0 && this.reserved === 0) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  resolveFlushWaiters(): void {
    if (this.waiting !== 0 || this.reserved !== 0) return;
    this.releaseFlushWaiters();
  }

  releaseFlushWaiters(): void {
    for (const resolve of this.flushWaiters.splice(0)) resolve();
  }
}
