import type { Counter, EmitSample, Gauge, Histogram, HistogramSpec, LabelledCounter, LabelledSpec, Labels, MetricSpec, Metrics, Registered } from './metrics.js';

interface Series {
  readonly labels: Readonly<Record<string, string>>;
  value: number;
}

/** The series of one metric name. */
class Family {
  readonly series = new Map<string, Series>();

  /** `collect` refills the series before a read (collected metrics). */
  constructor(readonly collect: (() => void) | undefined) {}

  seriesOf(labels: Readonly<Record<string, string>>): Series {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
    let series = this.series.get(key);
    if (series === undefined) this.series.set(key, (series = { labels: { ...labels }, value: 0 }));
    return series;
  }
}

/**
 * The metrics port in memory, for tests: the values are read back with `value`. A histogram
 * keeps its observation count and sum, readable as `<name>_count` and `<name>_sum`.
 */
export class MemoryMetrics implements Metrics {
  private readonly families = new Map<string, Family>();

  /** The sum of the samples of `name` whose labels include `labels`; 0 when there is none. */
  value(name: string, labels: Readonly<Record<string, string>> = {}): number {
    const family = this.families.get(name);
    if (family === undefined) return 0;
    family.collect?.();
    const wanted = Object.entries(labels);
    let sum = 0;
    for (const series of family.series.values()) if (wanted.every(([key, label]) => series.labels[key] === label)) sum += series.value;
    return sum;
  }

  counter(spec: MetricSpec): Counter {
    const series = this.register(spec.name).seriesOf({});
    return { inc: (amount = 1) => void (series.value += amount), unregister: this.unregisterOf(spec.name) };
  }

  labelledCounter<L extends string>(spec: LabelledSpec<L>): LabelledCounter<L> {
    const family = this.register(spec.name);
    return {
      labels: (values) => {
        let series: Series | undefined;
        // As with Prometheus, the series appears with its first increment.
        return { inc: (amount = 1) => void ((series ??= family.seriesOf(values)).value += amount) };
      },
      unregister: this.unregisterOf(spec.name),
    };
  }

  gauge(spec: MetricSpec): Gauge {
    const series = this.register(spec.name).seriesOf({});
    return { set: (value) => void (series.value = value), unregister: this.unregisterOf(spec.name) };
  }

  histogram(spec: HistogramSpec): Histogram {
    const count = this.register(`${spec.name}_count`).seriesOf({});
    const sum = this.register(`${spec.name}_sum`).seriesOf({});
    const unregisterCount = this.unregisterOf(`${spec.name}_count`);
    const unregisterSum = this.unregisterOf(`${spec.name}_sum`);
    return {
      observe: (value) => {
        count.value++;
        sum.value += value;
      },
      unregister: () => {
        unregisterCount();
        unregisterSum();
      },
    };
  }

  collectedCounter<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered {
    return this.collected(spec.name, collect);
  }

  collectedGauge<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered {
    return this.collected(spec.name, collect);
  }

  private collected<L extends string>(name: string, collect: (emit: EmitSample<L>) => void): Registered {
    const family: Family = this.register(name, () => {
      family.series.clear();
      collect((labels: Labels<L>, value) => void (family.seriesOf(labels).value = value));
    });
    return { unregister: this.unregisterOf(name) };
  }

  private register(name: string, collect?: () => void): Family {
    if (this.families.has(name)) throw new Error(`a metric named ${name} is registered already`);
    const family = new Family(collect);
    this.families.set(name, family);
    return family;
  }

  private unregisterOf(name: string): () => void {
    return () => void this.families.delete(name);
  }
}
