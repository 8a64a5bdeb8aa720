import type { Clock } from '../platform/clock.js';
import type { Metrics } from '../platform/metrics.js';

/** Plain counts of the outbox, since it was made (`Outbox.stats()`). */
export interface OutboxStats {
  enqueuedEntries: number;
  /** Entries acknowledged by their destination and deleted. */
  ackedEntries: number;
  attempts: number;
  failedAttempts: number;
  /** Stored entries that could not be read back (corrupt) and were dropped. */
  corruptEntries: number;
  /** Generation raises after a STALE_EPOCH refusal. */
  epochRaises: number;
}

/** What the outbox's gauges read of a destination when the metrics are scraped. */
export interface DestinationBacklog {
  readonly waiting: number;
  readonly oldestEnqueuedAtMs: number | undefined;
}

/**
 * The outbox's metrics (`cellmesh_outbox_*`). The gauges read the live state of `destinations`
 * at scrape time, so no timer keeps them fresh.
 */
export function createOutboxMetrics(metrics: Metrics, destinations: ReadonlyMap<string, DestinationBacklog>, clock: Clock) {
  return {
    waiting: metrics.collectedGauge(
      {
        name: 'cellmesh_outbox_waiting_entries',
        help: 'Entries stored in the outbox and not yet acknowledged, by destination cell.',
        labelNames: ['destination'],
      },
      (emit) => {
        for (const [destination, state] of destinations) emit({ destination }, state.waiting);
      },
    ),
    oldestAge: metrics.collectedGauge(
      {
        name: 'cellmesh_outbox_oldest_age_seconds',
        help: 'Age of the oldest waiting outbox entry, by destination cell (0 when none waits).',
        labelNames: ['destination'],
      },
      (emit) => {
        const now = clock.now();
        for (const [destination, state] of destinations) {
          emit({ destination }, state.oldestEnqueuedAtMs === undefined ? 0 : Math.max(0, now - state.oldestEnqueuedAtMs) / 1_000);
        }
      },
    ),
    enqueued: metrics.counter({ name: 'cellmesh_outbox_enqueued_entries_total', help: 'Entries made durable in the outbox.' }),
    acked: metrics.counter({ name: 'cellmesh_outbox_acked_entries_total', help: 'Outbox entries acknowledged by their destination and deleted.' }),
    attempts: metrics.labelledCounter({
      name: 'cellmesh_outbox_attempts_total',
      help: 'Forward requests, by result (ok, or the failure code).',
      labelNames: ['result'],
    }),
    corrupt: metrics.counter({ name: 'cellmesh_outbox_corrupt_entries_total', help: 'Stored outbox entries that could not be read back and were dropped.' }),
  };
}

export type OutboxMetrics = ReturnType<typeof createOutboxMetrics>;
