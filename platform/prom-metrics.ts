import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type {
  Counter as CounterHandle,
  EmitSample,
  Gauge as GaugeHandle,
  Histogram as HistogramHandle,
  HistogramSpec,
  LabelledCounter,
  LabelledSpec,
  MetricSpec,
  Metrics,
  MetricsExposition,
  Registered,
} from './metrics.js';

/**
 * The metrics port on prom-client, in a registry of its own (never the global one), so many
 * cells can share one process in tests. The only module that imports prom-client: a cell's
 * /v1/metrics renders this registry.
 */
export class PromMetrics implements Metrics, MetricsExposition {
  private readonly registry = new Registry();

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric registered. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  counter(spec: MetricSpec): CounterHandle {
    const counter = new Counter({ name: spec.name, help: spec.help, registers: [this.registry] });
    return { inc: (amount) => counter.inc(amount), unregister: this.unregisterOf(spec) };
  }

  labelledCounter<L extends string>(spec: LabelledSpec<L>): LabelledCounter<L> {
    const counter = new Counter<L>({ name: spec.name, help: spec.help, labelNames: spec.labelNames, registers: [this.registry] });
    return { labels: (values) => counter.labels(values), unregister: this.unregisterOf(spec) };
  }

  gauge(spec: MetricSpec): GaugeHandle {
    const gauge = new Gauge({ name: spec.name, help: spec.help, registers: [this.registry] });
    return { set: (value) => gauge.set(value), unregister: this.unregisterOf(spec) };
  }

  histogram(spec: HistogramSpec): HistogramHandle {
    const histogram = new Histogram({ name: spec.name, help: spec.help, buckets: [...spec.buckets], registers: [this.registry] });
    return { observe: (value) => histogram.observe(value), unregister: this.unregisterOf(spec) };
  }

  collectedCounter<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered {
    // Reset and refilled at each scrape: the owner holds the totals.
    new Counter<L>({
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        collect((labels, value) => this.inc(labels, value));
      },
    });
    return { unregister: this.unregisterOf(spec) };
  }

  collectedGauge<L extends string>(spec: LabelledSpec<L>, collect: (emit: EmitSample<L>) => void): Registered {
    new Gauge<L>({
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        collect((labels, value) => this.set(labels, value));
      },
    });
    return { unregister: this.unregisterOf(spec) };
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

  private unregisterOf(spec: MetricSpec): () => void {
    return () => this.registry.removeSingleMetric(spec.name);
  }
}
