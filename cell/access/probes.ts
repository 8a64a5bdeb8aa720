import type { Clock } from '../../platform/clock.js';
import { EventLoopWatchdog, type LivenessVerdict } from '../../platform/event-loop-watchdog.js';
import type { Logger } from '../../platform/logger.js';
import type { Metrics, Registered } from '../../platform/metrics.js';

/**
 * The probes of a cell process (docs/operations.md, "Health and metrics").
 *
 * Readiness (`/v1/readyz`): `starting` until the cell serves its merchants (a first cell with no
 * peers is ready then: readiness never waits on peer discovery), `ready`, then `draining` from
 * the moment a graceful stop begins, before the cell leaves its mesh and closes its devices.
 *
 * Liveness (`/v1/healthz`): fails only when the process is stuck, which the event-loop watchdog
 * tells (platform/event-loop-watchdog.ts); a slow store or a lost mesh do not make it fail.
 */
export type Readiness = 'starting' | 'ready' | 'draining';

export interface Probes {
  liveness(): LivenessVerdict;
  /** Starts the watchdog: once the cell is assembled. */
  start(): void;
  /** Stops the watchdog and unregisters the probes' metrics. */
  stop(): void;
}

export interface ProbesInit {
  readonly clock: Clock;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** `health.maxEventLoopStallMs`: a longer stall of the loop fails the liveness probe. */
  readonly maxEventLoopStallMs: number;
  readonly readiness: () => Readiness;
}

/** The watchdog behind the liveness probe, and the metrics of both: `cellmesh_ready`, `cellmesh_event_loop_stalls_total`. */
export function cellProbes(init: ProbesInit): Probes {
  const stalls = init.metrics.counter({ name: 'cellmesh_event_loop_stalls_total', help: 'Times the event loop was blocked longer than health.maxEventLoopStallMs.' });
  const watchdog = new EventLoopWatchdog({
    clock: init.clock,
    maxStallMs: init.maxEventLoopStallMs,
    onStall: (stalledMs) => {
      stalls.inc();
      init.logger.warn({ stalledMs, maxEventLoopStallMs: init.maxEventLoopStallMs }, 'the event loop was blocked longer than health.maxEventLoopStallMs: /v1/healthz answers 503 for as long again');
    },
  });
  const ready: Registered = init.metrics.collectedGauge(
    { name: 'cellmesh_ready', help: 'Whether the cell takes traffic (1: /v1/readyz answers 200).', labelNames: [] },
    (emit) => emit({}, init.readiness() === 'ready' ? 1 : 0),
  );
  return {
    liveness: () => watchdog.verdict(),
    start: () => watchdog.start(),
    stop: () => {
      watchdog.stop();
      stalls.unregister();
      ready.unregister();
    },
  };
}
