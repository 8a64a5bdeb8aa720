import { describe, expect, it } from 'vitest';
import { HISTOGRAM_BUCKETS, LatencyHistogram } from './histogram.js';

describe('LatencyHistogram', () => {
  it('reports quantiles within 1% of the exact values', () => {
    const histogram = new LatencyHistogram();
    for (let micros = 1; micros <= 100_000; micros++) histogram.recordMs(micros / 1000);
    for (const [quantile, exactMs] of [
      [0.5, 50],
      [0.9, 90],
      [0.99, 99],
      [0.999, 99.9],
    ] as const) {
      const measured = histogram.quantileMs(quantile)!;
      expect(Math.abs(measured - exactMs) / exactMs).toBeLessThan(0.01);
    }
    expect(histogram.maxMs()).toBe(100);
    expect(histogram.meanMs()).toBeCloseTo(50.0005, 3);
  });

  it('is exact below 256 µs and returns null when empty', () => {
    const histogram = new LatencyHistogram();
    expect(histogram.quantileMs(0.5)).toBeNull();
    histogram.recordMs(0.1);
    histogram.recordMs(0.2);
    expect(histogram.quantileMs(0.5)).toBeCloseTo(0.1005, 4);
  });

  it('merges by adding counts, also when rebuilt from plain arrays', () => {
    const left = new LatencyHistogram();
    const right = new LatencyHistogram();
    for (let index = 0; index < 1000; index++) left.recordMs(1);
    for (let index = 0; index < 1000; index++) right.recordMs(10);
    const merged = new LatencyHistogram(Array.from(left.counts));
    merged.merge(new LatencyHistogram(Array.from(right.counts)));
    expect(merged.count).toBe(2000);
    expect(merged.quantileMs(0.25)!).toBeCloseTo(1, 1);
    expect(merged.quantileMs(0.75)!).toBeCloseTo(10, 0);
    expect(() => new LatencyHistogram([1, 2, 3])).toThrow();
    expect(merged.counts.length).toBe(HISTOGRAM_BUCKETS);
  });

  it('clamps absurd values instead of overflowing', () => {
    const histogram = new LatencyHistogram();
    histogram.recordMs(1e12);
    histogram.recordMs(-5);
    expect(histogram.count).toBe(2);
    expect(histogram.quantileMs(1)).not.toBeNull();
  });
});
