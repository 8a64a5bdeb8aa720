/**
 * A fixed-size log-linear latency histogram in microseconds, in the spirit of HdrHistogram with
 * two significant digits: values below 256 µs have their own bucket, larger ones fall into 128
 * sub-buckets per power of two (under 1% relative error). It never allocates after
 * construction, so recording on the hot path of the load generator costs a few instructions, and
 * histograms of several worker threads merge by adding their counts.
 */

const LINEAR_LIMIT_US = 256;
const SUB_BUCKETS = 128;
const SUB_BUCKET_BITS = 7;
/** 2^32 µs is about 71 minutes: far above any latency a bounded phase can observe. */
const MAX_EXPONENT = 31;
export const HISTOGRAM_BUCKETS = LINEAR_LIMIT_US + (MAX_EXPONENT - 8 + 1) * SUB_BUCKETS;

function bucketOf(valueUs: number): number {
  const value = Math.min(0xffffffff, Math.max(0, Math.floor(valueUs)));
  if (value < LINEAR_LIMIT_US) return value;
  const exponent = 31 - Math.clz32(value);
  const subBucket = Math.floor(value / 2 ** (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
  return LINEAR_LIMIT_US + (exponent - 8) * SUB_BUCKETS + subBucket;
}

/** The lowest value a bucket holds, in µs; the midpoint is reported to halve the error. */
function lowOf(bucket: number): number {
  if (bucket < LINEAR_LIMIT_US) return bucket;
  const exponent = Math.floor((bucket - LINEAR_LIMIT_US) / SUB_BUCKETS) + 8;
  const subBucket = (bucket - LINEAR_LIMIT_US) % SUB_BUCKETS;
  return 2 ** exponent + subBucket * 2 ** (exponent - SUB_BUCKET_BITS);
}

function widthOf(bucket: number): number {
  if (bucket < LINEAR_LIMIT_US) return 1;
  const exponent = Math.floor((bucket - LINEAR_LIMIT_US) / SUB_BUCKETS) + 8;
  return 2 ** (exponent - SUB_BUCKET_BITS);
}

export class LatencyHistogram {
  readonly counts: Float64Array;
  count = 0;
  maxUs = 0;
  sumUs = 0;

  constructor(counts?: ArrayLike<number>) {
    this.counts = new Float64Array(HISTOGRAM_BUCKETS);
    if (counts !== undefined) {
      if (counts.length !== HISTOGRAM_BUCKETS) throw new Error('histogram bucket count mismatch');
      for (let index = 0; index < HISTOGRAM_BUCKETS; index++) {
        const bucketCount = counts[index] ?? 0;
        this.counts[index] = bucketCount;
        this.count += bucketCount;
        if (bucketCount > 0) {
          this.maxUs = Math.max(this.maxUs, lowOf(index) + widthOf(index) - 1);
          this.sumUs += bucketCount * (lowOf(index) + widthOf(index) / 2);
        }
      }
    }
  }

  recordMs(valueMs: number): void {
    const valueUs = valueMs * 1000;
    const bucket = bucketOf(valueUs);
    this.counts[bucket] = (this.counts[bucket] ?? 0) + 1;
    this.count++;
    this.sumUs += valueUs;
    if (valueUs > this.maxUs) this.maxUs = valueUs;
  }

  merge(other: LatencyHistogram): void {
    for (let index = 0; index < HISTOGRAM_BUCKETS; index++) {
      this.counts[index] = (this.counts[index] ?? 0) + (other.counts[index] ?? 0);
    }
    this.count += other.count;
    this.sumUs += other.sumUs;
    this.maxUs = Math.max(this.maxUs, other.maxUs);
  }

  /** The value at `quantile` (0..1) in milliseconds, or null when nothing was recorded. */
  quantileMs(quantile: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil(quantile * this.count));
    let seen = 0;
    for (let index = 0; index < HISTOGRAM_BUCKETS; index++) {
      seen += this.counts[index] ?? 0;
      if (seen >= rank) return Math.min(this.maxUs, lowOf(index) + widthOf(index) / 2) / 1000;
    }
    return this.maxUs / 1000;
  }

  meanMs(): number | null {
    return this.count === 0 ? null : this.sumUs / this.count / 1000;
  }

  maxMs(): number | null {
    return this.count === 0 ? null : this.maxUs / 1000;
  }
}
