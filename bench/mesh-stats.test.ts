import { describe, expect, it } from 'vitest';
import { metricValue } from '../platform/prometheus-text.js';
import { gcCounts, histogramSumCount, judgeGoals, metricTotal, percentile, round, summarize } from './mesh-stats.js';

describe('percentile (nearest rank)', () => {
  it('picks the smallest value with the quantile at or below it', () => {
    const values = Array.from({ length: 100 }, (_, index) => 100 - index); // 100..1, unsorted
    expect(percentile(values, 0.5)).toBe(50);
    expect(percentile(values, 0.99)).toBe(99);
    expect(percentile(values, 1)).toBe(100);
    expect(percentile(values, 0)).toBe(1);
  });

  it('gives the largest of 20 as the p99, and null for nothing', () => {
    const twenty = Array.from({ length: 20 }, (_, index) => index + 1);
    expect(percentile(twenty, 0.99)).toBe(20);
    expect(percentile(twenty, 0.5)).toBe(10);
    expect(percentile([], 0.5)).toBeNull();
    expect(() => percentile([1], 1.5)).toThrow(RangeError);
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    percentile(values, 0.5);
    expect(values).toEqual([3, 1, 2]);
  });
});

describe('summarize', () => {
  it('reports count, extremes, percentiles and mean', () => {
    expect(summarize([4, 1, 3, 2])).toEqual({ count: 4, min: 1, p50: 2, p90: 4, p99: 4, max: 4, mean: 2.5 });
    expect(summarize([])).toEqual({ count: 0, min: null, p50: null, p90: null, p99: null, max: null, mean: null });
  });
});

describe('round', () => {
  it('rounds and keeps null for missing or non-finite values', () => {
    expect(round(1.26, 1)).toBe(1.3);
    expect(round(null)).toBeNull();
    expect(round(Number.NaN)).toBeNull();
    expect(round(Infinity)).toBeNull();
  });
});

const EXPOSITION = `# HELP cellmesh_locate_messages_per_query Network messages a completed location query cost.
# TYPE cellmesh_locate_messages_per_query histogram
cellmesh_locate_messages_per_query_bucket{le="1"} 2
cellmesh_locate_messages_per_query_bucket{le="+Inf"} 5
cellmesh_locate_messages_per_query_sum 12
cellmesh_locate_messages_per_query_count 5
cellmesh_mesh_dead_declarations_total 3
cellmesh_mesh_probes_total{outcome="ack"} 10
cellmesh_mesh_probes_total{outcome="failed"} 2
`;

describe('Prometheus text readings', () => {
  it('reads a sample by name and labels', () => {
    expect(metricValue(EXPOSITION, 'cellmesh_mesh_dead_declarations_total')).toBe(3);
    expect(metricValue(EXPOSITION, 'cellmesh_mesh_probes_total', { outcome: 'failed' })).toBe(2);
    expect(metricValue(EXPOSITION, 'cellmesh_mesh_probes_total')).toBeUndefined();
    expect(metricValue(EXPOSITION, 'absent')).toBeUndefined();
  });

  it('sums every labelled sample of a metric', () => {
    expect(metricTotal(EXPOSITION, 'cellmesh_mesh_probes_total')).toBe(12);
    expect(metricTotal(EXPOSITION, 'absent')).toBe(0);
  });

  it('reads the sum and count of a histogram', () => {
    expect(histogramSumCount(EXPOSITION, 'cellmesh_locate_messages_per_query')).toEqual({ sum: 12, count: 5 });
    expect(histogramSumCount('', 'cellmesh_locate_messages_per_query')).toEqual({ sum: 0, count: 0 });
  });
});

describe('judgeGoals', () => {
  const none = {
    convergeMs: null,
    crossCellP99Ms: null,
    inCellP99Ms: 8,
    failureDetectMs: null,
    falsePositives: null,
    idleCellCpuMaxPercent: null,
    idleCellCpuP50Percent: null,
    idleBaselinePercent: null,
    formMs: null,
  };

  it('judges each goal, and leaves missing figures unjudged', () => {
    const goals = judgeGoals({ ...none, convergeMs: 120, crossCellP99Ms: 30, failureDetectMs: 3200, falsePositives: 0 });
    expect(goals.convergeMs.met).toBe(true);
    expect(goals.crossCellP99Ms).toMatchObject({ met: false, ratio: 3.75 });
    expect(goals.failureDetectMs.met).toBe(false);
    expect(goals.falsePositives.met).toBe(true);
    expect(Object.values(judgeGoals(none)).map((goal) => goal.met)).toEqual([null, null, null, null, null, null, null]);
  });

  it('judges the idle cost by the busiest cell, flatness against a baseline run, and the formation time', () => {
    const goals = judgeGoals({ ...none, idleCellCpuMaxPercent: 2.4, idleCellCpuP50Percent: 1.8, idleBaselinePercent: 1.6, formMs: 9_500 });
    expect(goals.idleCellCpuPercent).toMatchObject({ max: 2, met: false });
    expect(goals.idleVsBaseline).toMatchObject({ ratio: 1.13, met: true });
    expect(goals.formMs.met).toBe(true);
    expect(judgeGoals({ ...none, idleCellCpuMaxPercent: 2, idleCellCpuP50Percent: 2, idleBaselinePercent: 1.6 })).toMatchObject({
      idleCellCpuPercent: { met: true },
      idleVsBaseline: { ratio: 1.25, met: false },
    });
  });
});

describe('gcCounts', () => {
  it('adds up the kinds and counts the long collections from the buckets', () => {
    const text = [
      'nodejs_gc_duration_seconds_bucket{le="0.001",kind="minor"} 5',
      'nodejs_gc_duration_seconds_bucket{le="0.01",kind="minor"} 9',
      'nodejs_gc_duration_seconds_bucket{le="0.1",kind="minor"} 10',
      'nodejs_gc_duration_seconds_bucket{le="+Inf",kind="minor"} 10',
      'nodejs_gc_duration_seconds_sum{kind="minor"} 0.05',
      'nodejs_gc_duration_seconds_count{kind="minor"} 10',
      'nodejs_gc_duration_seconds_bucket{le="0.01",kind="major"} 0',
      'nodejs_gc_duration_seconds_bucket{le="0.1",kind="major"} 1',
      'nodejs_gc_duration_seconds_bucket{le="+Inf",kind="major"} 2',
      'nodejs_gc_duration_seconds_sum{kind="major"} 0.25',
      'nodejs_gc_duration_seconds_count{kind="major"} 2',
    ].join('\n');
    expect(gcCounts(text)).toEqual({ count: 12, totalSeconds: 0.3, over10ms: 3, over100ms: 1 });
    expect(gcCounts('')).toEqual({ count: 0, totalSeconds: 0, over10ms: 0, over100ms: 0 });
  });
});
