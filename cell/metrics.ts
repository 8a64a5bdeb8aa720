import type { Counter, CounterChild, Gauge, Histogram, LabelledCounter, Metrics } from '../platform/metrics.js';
import { DeskMetrics, type DeskSnapshot } from './desk/desk-metrics.js';
import type { ClosureSnapshot } from './messaging/closure-counts.js';

/** Latency buckets in seconds, from 100 µs to 2.5 s: chat acks live in the low milliseconds. */
const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * A cell's metrics (`cellmesh_*` of docs/operations.md), registered on the metrics port the
 * cell is given: Prometheus in a process, nothing in the simulator.
 */
export class CellMetrics {
  readonly connections: Gauge;
  readonly connectionsOpened: Counter;
  readonly upgradesRejected: LabelledCounter<'code'>;
  private readonly messagesIn: Counter;
  /** What `messagesIn` counted, kept here so that the core reads it whatever the adapter. */
  private messagesInCount = 0;
  readonly duplicateSends: Counter;
  readonly messagesOut: Counter;
  private readonly framesIn: LabelledCounter<'op'>;
  /** One child per op, made on first use: `framesIn.labels({ op })` may cost a lookup per frame. */
  private readonly framesInByOp = new Map<string, CounterChild>();
  readonly errors: LabelledCounter<'code'>;
  readonly ackLatency: Histogram;
  readonly storeWriteLatency: Histogram;
  readonly backpressureCloses: Counter;
  readonly receipts: Counter;

  constructor(private readonly metrics: Metrics) {
    this.connections = metrics.gauge({ name: 'cellmesh_connections', help: 'Open device connections.' });
    this.connectionsOpened = metrics.counter({ name: 'cellmesh_connections_opened_total', help: 'Device connections accepted.' });
    this.upgradesRejected = metrics.labelledCounter({
      name: 'cellmesh_upgrades_rejected_total',
      help: 'WebSocket upgrades refused, by error code.',
      labelNames: ['code'],
    });
    this.messagesIn = metrics.counter({
      name: 'cellmesh_messages_in_total',
      help: 'Chat messages made durable (resends of a stored cmid are not counted).',
    });
    this.duplicateSends = metrics.counter({
      name: 'cellmesh_duplicate_sends_total',
      help: 'Sends answered from an earlier identical cmid without writing.',
    });
    this.messagesOut = metrics.counter({ name: 'cellmesh_messages_out_total', help: 'Chat messages pushed to devices.' });
    this.framesIn = metrics.labelledCounter({ name: 'cellmesh_frames_in_total', help: 'Client frames received, by operation.', labelNames: ['op'] });
    this.errors = metrics.labelledCounter({ name: 'cellmesh_errors_total', help: 'Errors answered to clients, by code.', labelNames: ['code'] });
    this.ackLatency = metrics.histogram({
      name: 'cellmesh_ack_latency_seconds',
      help: 'From a send frame received to its durable ack sent.',
      buckets: LATENCY_BUCKETS_SECONDS,
    });
    this.storeWriteLatency = metrics.histogram({
      name: 'cellmesh_store_write_seconds',
      help: 'Durable store writes, from call to resolution (includes group-commit waiting).',
      buckets: LATENCY_BUCKETS_SECONDS,
    });
    this.backpressureCloses = metrics.counter({
      name: 'cellmesh_backpressure_closes_total',
      help: 'Devices closed because they did not read fast enough.',
    });
    this.receipts = metrics.counter({ name: 'cellmesh_read_receipts_total', help: 'Read cursors moved forward.' });
  }

  /** Counts one chat message made durable (`cellmesh_messages_in_total`). */
  countMessageIn(): void {
    this.messagesInCount++;
    this.messagesIn.inc();
  }

  /** Messages made durable since the cell started (what the mesh's load figure is a rate of). */
  messagesInTotal(): number {
    return this.messagesInCount;
  }

  /**
   * Exposes the cross-cell counters of a cell in a cluster, read from `stats` at each scrape:
   * `cellmesh_cross_cell_events_total{event}` (relayed sends, mirrored messages, history pages
   * served, entries enqueued for other cells, drops and failures). The core counts them.
   */
  collectCrossCellStats(stats: () => Readonly<Record<string, number>> | undefined): void {
    this.metrics.collectedCounter(
      {
        name: 'cellmesh_cross_cell_events_total',
        help: 'Cross-cell conversation events since start, by event (read from the core at scrape time).',
        labelNames: ['event'],
      },
      (emit) => {
        for (const [event, value] of Object.entries(stats() ?? {})) emit({ event }, value);
      },
    );
  }

  /**
   * Exposes the in-cell closure of the messages this cell hosts (docs/routing.md, "In-cell
   * closure"), read from `closure` at each scrape: `cellmesh_closure_messages_total{path}`
   * (`in_cell`, `relayed`, `copied`), `cellmesh_closure_conversations_total` and
   * `cellmesh_closure_crossed_conversations_total`.
   */
  collectClosure(closure: () => ClosureSnapshot | undefined): void {
    this.metrics.collectedCounter(
      { name: 'cellmesh_closure_messages_total', help: 'Messages made durable in their home cell since start, by whether they crossed a cell boundary (path).', labelNames: ['path'] },
      (emit) => {
        const messages = closure()?.messages;
        if (messages === undefined) return;
        emit({ path: 'in_cell' }, messages.inCell);
        emit({ path: 'relayed' }, messages.relayed);
        emit({ path: 'copied' }, messages.copied);
      },
    );
    this.metrics.collectedCounter(
      { name: 'cellmesh_closure_conversations_total', help: 'Conversations hosted here with a message since start.', labelNames: [] },
      (emit) => {
        const conversations = closure()?.conversations;
        if (conversations !== undefined) emit({}, conversations.total);
      },
    );
    this.metrics.collectedCounter(
      { name: 'cellmesh_closure_crossed_conversations_total', help: 'Conversations hosted here with a message since start that crossed a cell boundary.', labelNames: [] },
      (emit) => {
        const conversations = closure()?.conversations;
        if (conversations !== undefined) emit({}, conversations.crossed);
      },
    );
  }

  /** The desk's metrics (`cellmesh_desk_*`), reading what the desks hold from `snapshot` at scrape time. */
  deskMetrics(snapshot: () => DeskSnapshot): DeskMetrics {
    return new DeskMetrics(this.metrics, snapshot);
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
}
