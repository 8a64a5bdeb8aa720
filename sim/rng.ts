import { SeededRandom, type Random } from '../platform/random.js';

/**
 * Random streams of a run. Every consumer (the network, the workload, the fault planner, each
 * cell incarnation, each client) draws from its own stream, derived from the run's seed and a
 * label, so adding a draw in one place does not shift the numbers every other place sees.
 */
export function streamSeed(seed: number, label: string): number {
  // FNV-1a over the seed and the label, then a splitmix finaliser for a well-mixed 32 bits.
  let hash = stringHash(`${seed >>> 0}/${label}`);
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35) >>> 0;
  return (hash ^ (hash >>> 16)) >>> 0;
}

/** FNV-1a of a string, 32 bits. */
export function stringHash(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

export function stream(seed: number, label: string): SeededRandom {
  return new SeededRandom(streamSeed(seed, label));
}

/** An integer in [0, maxExclusive). */
export function pickIndex(random: Random, maxExclusive: number): number {
  return Math.min(maxExclusive - 1, Math.floor(random.next() * maxExclusive));
}

/** An exponentially distributed delay with the given mean (a Poisson process's gaps). */
export function exponential(random: Random, mean: number): number {
  return -Math.log(1 - random.next()) * mean;
}

/** A standard normal draw (Box-Muller). */
export function standardNormal(random: Random): number {
  const u = 1 - random.next();
  const v = random.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Draws `count` distinct indexes of [0, size), in ascending order. */
export function sampleIndexes(random: Random, size: number, count: number): number[] {
  const wanted = Math.max(0, Math.min(size, count));
  const pool = Array.from({ length: size }, (_, index) => index);
  for (let index = 0; index < wanted; index++) {
    const swap = index + pickIndex(random, size - index);
    const kept = pool[index]!;
    pool[index] = pool[swap]!;
    pool[swap] = kept;
  }
  return pool.slice(0, wanted).sort((a, b) => a - b);
}

/**
 * Zipf popularity over `size` ranks: rank k (0-based) has weight 1 / (k + 1)^exponent.
 * Exponent 0 is uniform. Sampling is a binary search over the cumulative weights.
 */
export class ZipfSampler {
  private readonly cumulative: Float64Array;

  constructor(
    readonly size: number,
    readonly exponent: number,
  ) {
    if (!(size >= 1)) throw new RangeError('a Zipf sampler needs at least one rank');
    this.cumulative = new Float64Array(size);
    let total = 0;
    for (let rank = 0; rank < size; rank++) {
      total += 1 / (rank + 1) ** exponent;
      this.cumulative[rank] = total;
    }
    for (let rank = 0; rank < size; rank++) this.cumulative[rank]! /= total;
  }

  sample(random: Random): number {
    const target = random.next();
    let low = 0;
    let high = this.size - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.cumulative[middle]! < target) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}
