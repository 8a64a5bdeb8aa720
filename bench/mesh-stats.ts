/**
 * Pure helpers of the mesh benchmark: exact percentiles of small samples, the Prometheus text
 * readings it takes from the cells, and the goals it judges the figures against.
 */

import { metricValue } from '../platform/prometheus-text.js';

/** Summary of a small sample (every value kept), milliseconds unless said otherwise. */
export interface SampleSummary {
  count: number;
  min: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

/**
 * The nearest-rank percentile: the smallest value with at least `quantile` of the sample at or
 * below it (so the p99 of 20 values is the largest, of 200 the second largest). Null when empty.
 */
export function percentile(values: readonly number[], quantile: number): number | null {
  if (values.length === 0) return null;
  if (!(quantile >= 0 && quantile <= 1)) throw new RangeError(`quantile must be within 0..1, got ${quantile}`);
  const sorted = [...values].sort((left, right) => left - right);
  const rank = Math.max(1, Math.ceil(quantile * sorted.length));
  return sorted[rank - 1]!;
}

export function summarize(values: readonly number[]): SampleSummary {
  if (values.length === 0) return { count: 0, min: null, p50: null, p90: null, p99: null, max: null, mean: null };
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const value of values) {
    sum += value;
    if (value < min) min = value;
    if (value > max) max = value;
  }
  return {
    count: values.length,
    min,
    p50: percentile(values, 0.5),
    p90: percentile(values, 0.9),
    p99: percentile(values, 0.99),
    max,
    mean: sum / values.length,
  };
}

/** Rounds to `digits` decimals; null stays null (and so do NaN and infinities). */
export function round(value: number | null | undefined, digits = 1): number | null {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Every value of a summary rounded, for the report. */
export function roundSummary(summary: SampleSummary, digits = 1): SampleSummary {
  return {
    count: summary.count,
    min: round(summary.min, digits),
    p50: round(summary.p50, digits),
    p90: round(summary.p90, digits),
    p99: round(summary.p99, digits),
    max: round(summary.max, digits),
    mean: round(summary.mean, digits),
  };
}

/** The sum of every sample of `name`, whatever its labels (0 when absent). */
export function metricTotal(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match !== null && match[1] === name) {
      const value = Number(match[2]);
      if (Number.isFinite(value)) total += value;
    }
  }
  return total;
}

/** Sum and count of a histogram (`<name>_sum`, `<name>_count`). */
export function histogramSumCount(text: string, name: string): { sum: number; count: number } {
  return { sum: metricValue(text, `${name}_sum`) ?? 0, count: metricValue(text, `${name}_count`) ?? 0 };
}

/**
 * The goals of issue 4 (convergence, cross-cell delivery, no false positive) and issue 22 (what
 * an idle cell costs, formation time, detection under 3 s where issue 4 asked 5 s), each judged
 * only when its figure exists.
 */
export const MESH_GOALS = {
  convergeMsMax: 1000,
  crossCellVsInCellMax: 3,
  failureDetectMsMax: 3000,
  falsePositivesMax: 0,
  /** Every idle cell, percent of one core. */
  idleCellCpuPercentMax: 2,
  /** The p50 idle cell of a larger cluster against that of 5 cells (another run: `--idle-baseline-percent`). */
  idleVsBaselineMax: 1.2,
  /** The last cell's `listening` line -> every view shows every cell alive. */
  formMsMax: 10_000,
} as const;

export interface GoalVerdict {
  met: boolean | null;
  [bound: string]: unknown;
}

export type MeshGoal = 'convergeMs' | 'crossCellP99Ms' | 'failureDetectMs' | 'falsePositives' | 'idleCellCpuPercent' | 'idleVsBaseline' | 'formMs';

function ratioOf(value: number | null, base: number | null): number | null {
  return value === null || base === null || base <= 0 ? null : value / base;
}

export function judgeGoals(figures: {
  convergeMs: number | null;
  crossCellP99Ms: number | null;
  inCellP99Ms: number | null;
  failureDetectMs: number | null;
  falsePositives: number | null;
  idleCellCpuMaxPercent: number | null;
  idleCellCpuP50Percent: number | null;
  idleBaselinePercent: number | null;
  formMs: number | null;
}): Record<MeshGoal, GoalVerdict> {
  const ratio = ratioOf(figures.crossCellP99Ms, figures.inCellP99Ms);
  const idleRatio = ratioOf(figures.idleCellCpuP50Percent, figures.idleBaselinePercent);
  return {
    convergeMs: { max: MESH_GOALS.convergeMsMax, met: figures.convergeMs === null ? null : figures.convergeMs < MESH_GOALS.convergeMsMax },
    crossCellP99Ms: {
      maxTimesInCell: MESH_GOALS.crossCellVsInCellMax,
      ratio: round(ratio, 2),
      met: ratio === null ? null : ratio <= MESH_GOALS.crossCellVsInCellMax,
    },
    failureDetectMs: {
      max: MESH_GOALS.failureDetectMsMax,
      met: figures.failureDetectMs === null ? null : figures.failureDetectMs < MESH_GOALS.failureDetectMsMax,
    },
    falsePositives: {
      max: MESH_GOALS.falsePositivesMax,
      met: figures.falsePositives === null ? null : figures.falsePositives <= MESH_GOALS.falsePositivesMax,
    },
    idleCellCpuPercent: {
      max: MESH_GOALS.idleCellCpuPercentMax,
      met: figures.idleCellCpuMaxPercent === null ? null : figures.idleCellCpuMaxPercent <= MESH_GOALS.idleCellCpuPercentMax,
    },
    idleVsBaseline: {
      maxTimesBaseline: MESH_GOALS.idleVsBaselineMax,
      baselinePercent: figures.idleBaselinePercent,
      ratio: round(idleRatio, 2),
      met: idleRatio === null ? null : idleRatio <= MESH_GOALS.idleVsBaselineMax,
    },
    formMs: { max: MESH_GOALS.formMsMax, met: figures.formMs === null ? null : figures.formMs < MESH_GOALS.formMsMax },
  };
}

/** Garbage collections as prom-client's default `nodejs_gc_duration_seconds` histogram counts them (all kinds). */
export interface GcCounts {
  count: number;
  totalSeconds: number;
  /** Collections longer than 10 ms (the histogram's `le="0.01"` bucket is the boundary). */
  over10ms: number;
  /** Collections longer than 100 ms. */
  over100ms: number;
}

export function gcCounts(text: string): GcCounts {
  const counts: GcCounts = { count: 0, totalSeconds: 0, over10ms: 0, over100ms: 0 };
  let upTo10ms = 0;
  let upTo100ms = 0;
  for (const line of text.split('\n')) {
    const match = /^nodejs_gc_duration_seconds(_bucket|_sum|_count)\{([^}]*)\}\s+(\S+)/.exec(line);
    if (match === null) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    if (match[1] === '_sum') counts.totalSeconds += value;
    else if (match[1] === '_count') counts.count += value;
    else if (/(^|,)le="0\.01"/.test(match[2]!)) upTo10ms += value;
    else if (/(^|,)le="0\.1"/.test(match[2]!)) upTo100ms += value;
  }
  counts.over10ms = counts.count - upTo10ms;
  counts.over100ms = counts.count - upTo100ms;
  return counts;
}
