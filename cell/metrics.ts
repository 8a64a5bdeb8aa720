import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Latency buckets in seconds, from 100 µs to 2.5 s: chat acks live in the low milliseconds. */
const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * A cell's Prometheus metrics, in a registry of its own (never the global one), so many cells
 * can share one process in tests and the simulator.
 */
export class CellMetrics {
  readonly registry = new Registry();
  readonly connections = new Gauge({ name: 'cellmesh_connections', help: 'Open device connections.', registers: [this.registry] });
  readonly connectionsOpened = new Counter({
    name: 'cellmesh_connections_opened_total',
    help: 'Device connections accepted.',
    registers: [this.registry],
  });
  readonly upgradesRejected = new Counter({
    name: 'cellmesh_upgrades_rejected_total',
    help: 'WebSocket upgrades refused, by error code.',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly messagesIn = new Counter({
    name: 'cellmesh_messages_in_total',
    help: 'Chat messages made durable (resends of a stored cmid are not counted).',
    registers: [this.registry],
  });
  readonly duplicateSends = new Counter({
    name: 'cellmesh_duplicate_sends_total',
    help: 'Sends answered from an earlier identical cmid without writing.',
    registers: [this.registry],
  });
  readonly messagesOut = new Counter({
    name: 'cellmesh_messages_out_total',
    help: 'Chat messages pushed to devices.',
    registers: [this.registry],
  });
  readonly framesIn = new Counter({
    name: 'cellmesh_frames_in_total',
    help: 'Client frames received, by operation.',
    labelNames: ['op'],
    registers: [this.registry],
  });
  /** One child per op, made on first use: `framesIn.inc({ op })` would hash its labels per frame. */
  private readonly framesInByOp = new Map<string, Counter.Internal>();
  readonly errors = new Counter({
    name: 'cellmesh_errors_total',
    help: 'Errors answered to clients, by code.',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly ackLatency = new Histogram({
    name: 'cellmesh_ack_latency_seconds',
    help: 'From a send frame received to its durable ack sent.',
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  readonly storeWriteLatency = new Histogram({
    name: 'cellmesh_store_write_seconds',
    help: 'Durable store writes, from call to resolution (includes group-commit waiting).',
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  readonly backpressureCloses = new Counter({
    name: 'cellmesh_backpressure_closes_total',
    help: 'Devices closed because they did not read fast enough.',
    registers: [this.registry],
  });
  readonly receipts = new Counter({
    name: 'cellmesh_read_receipts_total',
    help: 'Read cursors moved forward.',
    registers: [this.registry],
  });

  /** Messages made durable since the cell started (what the mesh's load figure is a rate of). */
  async messagesInTotal(): Promise<number> {
    return (await this.messagesIn.get()).values[0]?.value ?? 0;
  }

  /**
   * Exposes the cross-cell counters of a cell in a cluster, read from `stats` at each scrape:
   * `cellmesh_cross_cell_events_total{event}` (relayed sends, mirrored messages, history pages
   * served, entries enqueued for other cells, drops and failures). The core counts them; a
   * counter that is reset and refilled at each scrape exposes them with the type they have.
   */
  collectCrossCellStats(stats: () => Readonly<Record<string, number>> | undefined): void {
    new Counter({
      name: 'cellmesh_cross_cell_events_total',
      help: 'Cross-cell conversation events since start, by event (read from the core at scrape time).',
      labelNames: ['event'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [event, value] of Object.entries(stats() ?? {})) this.inc({ event }, value);
      },
    });
  }

  /** Counts one client frame of `op` (`cellmesh_frames_in_total{op}`). */
  countFrameIn(op: string): void {
    let child = this.framesInByOp.get(op);
    if (child === undefined) {
      child = this.framesIn.labels({ op });
      this.framesInByOp.set(op, child);
    }
    child.inc();
  }

  /**
   * Adds the process metrics (CPU, memory, event loop lag); only for a real process. prom-client
   * also registers gauges named `nodejs_active_{handles,requests,resources}_total`, which break
   * the naming rule that only counters end in `_total` (`promtool check metrics` flags them);
   * they are dropped, as each is the sum over its `type` label of the series without the suffix.
   */
  collectProcessMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
    for (const metric of this.registry.getMetricsAsArray()) {
      if (metric.name.startsWith('nodejs_') && metric.name.endsWith('_total') && !(metric instanceof Counter)) this.registry.removeSingleMetric(metric.name);
    }
  }
}
