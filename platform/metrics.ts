/**
 * The metrics port: the core counts through it and never sees the library that exposes the
 * figures. An adapter decides where they go: prom-metrics.ts (Prometheus, /v1/metrics),
 * memory-metrics.ts (readable values, for tests) or `noopMetrics` (nowhere: the simulator).
 *
 * Hot paths obtain their handles once: an unlabelled metric is its own handle, and a labelled
 * counter gives one child per label set, to be kept by the caller (`labels` may cost a lookup).
 * Names, help texts and labels follow Prometheus' rules (docs/operations.md lists them); the
 * Prometheus and memory adapters refuse a second metric of a name until the first is unregistered.
 */

export type Labels<L extends string> = Readonly<Record<L, string>>;

export interface MetricSpec {
  readonly name: string;
  readonly help: string;
}

export interface LabelledSpec<L extends string> extends MetricSpec {
  readonly labelNames: readonly L[];
}

export interface HistogramSpec extends MetricSpec {
  /** Upper bounds of the buckets, ascending. */
  readonly buckets: readonly number[];
}

/** A metric's registration: `unregister` removes it, so a successor may register the name again. */
export interface Registered {
  unregister(): void;
}

export interface CounterChild {
  /** Adds `amount` (default 1, never negative). */
  inc(amount?: number): void;
}

export interface Counter extends CounterChild, Registered {}

export interface LabelledCounter<L extends string> extends Registered {
  /** The counter of one label set; obtain it once and keep it. Its series appears with its first increment. */
  labels(values: Labels<L>): CounterChild;
}

export interface Gauge extends Registered {
  set(value: number): void;
}

export interface Histogram extends Registered {
  observe(value: number): void;
}

/** Hands one sample of a collected metric to the adapter. */
export type EmitSample<L extends string> = (labels: Labels<L>, value: number) => void;

export interface Metrics {
  counter(spec: MetricSpec): Counter;
  labelledCounter<L extends string>(spec: LabelledSpec<L>): LabelledCounter<L>;
  gauge(spec: MetricSpec): Gauge;
  histogram(spec: HistogramSpec): Histogram;
  /**
   * A counter whose samples the owner reads from its own state when the metrics are read (a
   * scrape), so nothing has to keep it up to date in between. `collect` must be cheap and must
   * not throw; it gives the totals since start, each label set once.
   */
  collectedCounter<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered;
  /** A gauge read at scrape time, as `collectedCounter`. */
  collectedGauge<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered;
}

/** The text form of the metrics, as an adapter that exposes them renders it (`GET /v1/metrics`). */
export interface MetricsExposition {
  readonly contentType: string;
  render(): Promise<string>;
}

const nothing = (): void => {};
const noopHandle = { inc: nothing, set: nothing, observe: nothing, unregister: nothing };
const noopLabelled = { labels: () => noopHandle, unregister: nothing };

/** Metrics that go nowhere and cost a call: for the simulator, whose cells nobody scrapes. */
export const noopMetrics: Metrics = {
  counter: () => noopHandle,
  labelledCounter: () => noopLabelled,
  gauge: () => noopHandle,
  histogram: () => noopHandle,
  collectedCounter: () => noopHandle,
  collectedGauge: () => noopHandle,
};
