import type { CounterChild, Histogram, LabelledCounter, Metrics } from '../../platform/metrics.js';
import type { OpenDesk } from './open-desk.js';

/** Wait buckets in seconds, from 1 s to 1 h: customers wait for people, not for disks. */
const WAIT_BUCKETS_SECONDS = [1, 5, 15, 30, 60, 120, 300, 600, 1_200, 1_800, 3_600];

/** What the desks of a cell hold now, read at scrape time. */
export interface DeskSnapshot {
  /** Customers waiting, and how long the longest-waiting one has waited (ms), by group. */
  queues: Map<string, { length: number; oldestWaitMs: number }>;
  consultations: { waiting: number; assigned: number };
  agents: Record<'online' | 'busy' | 'away' | 'offline', number>;
  /** Open consultations and capacity of the online agents. */
  onlineLoad: { open: number; capacity: number };
}

/**
 * The desk's metrics (`cellmesh_desk_*`, docs/operations.md). Groups are labels: a merchant's
 * groups are a small vocabulary (pre-sales, after-sales), summed over the cell's merchants.
 */
export class DeskMetrics {
  readonly firstAssignment: Histogram;
  private readonly closed: LabelledCounter<'by'>;
  private readonly closedBy = new Map<string, CounterChild>();
  private readonly ratings: LabelledCounter<'score'>;
  private readonly ratingsByScore = new Map<number, CounterChild>();

  constructor(metrics: Metrics, snapshot: () => DeskSnapshot) {
    this.firstAssignment = metrics.histogram({
      name: 'cellmesh_desk_first_assignment_seconds',
      help: 'From a consultation opened to its first agent (queue wait included).',
      buckets: WAIT_BUCKETS_SECONDS,
    });
    this.closed = metrics.labelledCounter({ name: 'cellmesh_desk_consultations_closed_total', help: 'Consultations closed, by who closed them.', labelNames: ['by'] });
    this.ratings = metrics.labelledCounter({ name: 'cellmesh_desk_ratings_total', help: 'Ratings customers gave closed consultations, by score.', labelNames: ['score'] });
    metrics.collectedGauge({ name: 'cellmesh_desk_queue_length', help: 'Customers waiting for an agent, by group.', labelNames: ['group'] }, (emit) => {
      for (const [group, queue] of snapshot().queues) emit({ group }, queue.length);
    });
    metrics.collectedGauge({ name: 'cellmesh_desk_queue_oldest_wait_seconds', help: 'How long the longest-waiting customer of each group has waited.', labelNames: ['group'] }, (emit) => {
      for (const [group, queue] of snapshot().queues) emit({ group }, queue.oldestWaitMs / 1000);
    });
    metrics.collectedGauge({ name: 'cellmesh_desk_consultations', help: 'Open consultations, by state.', labelNames: ['state'] }, (emit) => {
      const { consultations } = snapshot();
      emit({ state: 'waiting' }, consultations.waiting);
      emit({ state: 'assigned' }, consultations.assigned);
    });
    metrics.collectedGauge({ name: 'cellmesh_desk_agents', help: 'Agents of the desks, by status.', labelNames: ['status'] }, (emit) => {
      for (const [status, count] of Object.entries(snapshot().agents)) emit({ status }, count);
    });
    metrics.collectedGauge({ name: 'cellmesh_desk_agent_utilisation_ratio', help: 'Open consultations of online agents divided by their capacity.', labelNames: [] }, (emit) => {
      const { open, capacity } = snapshot().onlineLoad;
      emit({}, capacity === 0 ? 0 : open / capacity);
    });
  }

  countClosed(by: string): void {
    let child = this.closedBy.get(by);
    if (child === undefined) {
      child = this.closed.labels({ by });
      this.closedBy.set(by, child);
    }
    child.inc();
  }

  countRating(score: number): void {
    let child = this.ratingsByScore.get(score);
    if (child === undefined) {
      child = this.ratings.labels({ score: String(score) });
      this.ratingsByScore.set(score, child);
    }
    child.inc();
  }
}

/** What `desks` hold at `nowMs`: queues by group, consultations by state, agents by status, the online load. */
export function deskSnapshot(desks: Iterable<OpenDesk>, nowMs: number): DeskSnapshot {
  const snapshot: DeskSnapshot = { queues: new Map(), consultations: { waiting: 0, assigned: 0 }, agents: { online: 0, busy: 0, away: 0, offline: 0 }, onlineLoad: { open: 0, capacity: 0 } };
  for (const open of desks) {
    for (const record of open.records.values()) {
      if (record.opening === true) continue;
      snapshot.consultations[record.state]++;
      if (record.state !== 'waiting') continue;
      const queue = snapshot.queues.get(record.group) ?? { length: 0, oldestWaitMs: 0 };
      queue.length++;
      queue.oldestWaitMs = Math.max(queue.oldestWaitMs, nowMs - record.queuedAtMs);
      snapshot.queues.set(record.group, queue);
    }
    for (const agent of open.rules.allAgents()) {
      snapshot.agents[agent.status]++;
      if (agent.status !== 'online') continue;
      snapshot.onlineLoad.open += agent.open;
      snapshot.onlineLoad.capacity += agent.capacity;
    }
  }
  return snapshot;
}
