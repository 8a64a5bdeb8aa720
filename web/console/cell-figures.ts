// The cell's own figures for the console, read from its Prometheus text (GET /v1/metrics):
// connections, the outbox to other cells, location queries, and the desks' queues, agents and
// consultations (summed over the merchants the cell hosts, as the metrics are).

/** Samples of one metric: labels and value. */
export type Samples = Array<{ labels: Record<string, string>; value: number }>;

/** Every sample of the text, by metric name (comments and malformed lines are skipped). */
export function parsePrometheus(text: string): Map<string, Samples> {
  const metrics = new Map<string, Samples>();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (match === null) continue;
    const [, name = '', labelText = '', valueText = ''] = match;
    const labels: Record<string, string> = {};
    for (const label of labelText.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[label[1] ?? ''] = (label[2] ?? '').replace(/\\(.)/g, '$1');
    const value = Number(valueText);
    if (!Number.isFinite(value)) continue;
    const samples = metrics.get(name) ?? [];
    samples.push({ labels, value });
    metrics.set(name, samples);
  }
  return metrics;
}

export interface CellFigures {
  connections: number;
  outboxEntries: number;
  outboxOldestSeconds: number;
  locateQueriesTotal: number;
  queueByGroup: Array<[group: string, waiting: number]>;
  agentsByStatus: Array<[status: string, agents: number]>;
  consultationsByState: Array<[state: string, consultations: number]>;
}

export function figuresOf(metrics: Map<string, Samples>): CellFigures {
  const sum = (name: string): number => (metrics.get(name) ?? []).reduce((total, sample) => total + sample.value, 0);
  const max = (name: string): number => Math.max(0, ...(metrics.get(name) ?? []).map((sample) => sample.value));
  const byLabel = (name: string, label: string): Array<[string, number]> => {
    const totals = new Map<string, number>();
    for (const sample of metrics.get(name) ?? []) totals.set(sample.labels[label] ?? '', (totals.get(sample.labels[label] ?? '') ?? 0) + sample.value);
    return [...totals].sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0));
  };
  return {
    connections: sum('cellmesh_connections'),
    outboxEntries: sum('cellmesh_outbox_waiting_entries'),
    outboxOldestSeconds: max('cellmesh_outbox_oldest_age_seconds'),
    locateQueriesTotal: sum('cellmesh_locate_queries_total'),
    queueByGroup: byLabel('cellmesh_desk_queue_length', 'group'),
    agentsByStatus: byLabel('cellmesh_desk_agents', 'status'),
    consultationsByState: byLabel('cellmesh_desk_consultations', 'state'),
  };
}
