import type { Random } from '../platform/random.js';
import { standardNormal } from './rng.js';
import type { LatencySpec } from './scenario.js';

/** Latencies are whole ms (deliveries of one ms share a step of the simulator) and at most a minute. */
const LATENCY_MAX_MS = 60_000;

export type LatencySampler = (random: Random) => number;

export function latencySampler(spec: LatencySpec): LatencySampler {
  const clamp = (value: number): number => Math.min(LATENCY_MAX_MS, Math.max(0, Math.round(value)));
  switch (spec.kind) {
    case 'fixed': {
      const ms = clamp(spec.ms);
      return () => ms;
    }
    case 'uniform':
      return (random) => clamp(spec.min + random.next() * (spec.max - spec.min));
    case 'normal':
      return (random) => clamp(spec.mean + spec.stddev * standardNormal(random));
    case 'lognormal':
      return (random) => clamp(spec.median * Math.exp(spec.sigma * standardNormal(random)));
    case 'pareto':
      return (random) => clamp(spec.min / (1 - random.next()) ** (1 / spec.alpha));
  }
}

export function describeLatency(spec: LatencySpec): string {
  switch (spec.kind) {
    case 'fixed':
      return `${spec.ms} ms`;
    case 'uniform':
      return `${spec.min}-${spec.max} ms`;
    case 'normal':
      return `normal ${spec.mean}±${spec.stddev} ms`;
    case 'lognormal':
      return `lognormal median ${spec.median} ms σ ${spec.sigma}`;
    case 'pareto':
      return `pareto min ${spec.min} ms α ${spec.alpha}`;
  }
}
