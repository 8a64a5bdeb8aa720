import { TokenBucket } from '../../platform/token-bucket.js';

export interface KeyedRateLimit {
  /** Requests per second a key may make on average... */
  ratePerSecond: number;
  /** ...and at once. */
  burst: number;
  /** Keys tracked at most; beyond, the least recently seen key is forgotten. */
  maxKeys: number;
}

interface Entry {
  readonly bucket: TokenBucket;
  seenAtMs: number;
}

/**
 * A token bucket per key (a client address, an agent), for HTTP endpoints that anyone may call.
 * Memory is bounded: a key idle long enough for its bucket to be full again is forgotten (a new
 * bucket would be the same), and past `maxKeys` the least recently seen key goes too. That last
 * eviction can only help a caller who already controls more than `maxKeys` keys; the per-address
 * limit makes that expensive.
 */
export class KeyedRateLimiter {
  /** In the order keys were last seen, oldest first (a Map keeps insertion order). */
  private readonly entries = new Map<string, Entry>();
  /** How long an untouched bucket takes to fill from empty. */
  private readonly refillMs: number;

  constructor(private readonly limit: KeyedRateLimit) {
    if (!(limit.ratePerSecond > 0) || !(limit.burst >= 1) || !(limit.maxKeys >= 1)) {
      throw new RangeError('a rate limit needs ratePerSecond > 0, burst >= 1 and maxKeys >= 1');
    }
    this.refillMs = Math.ceil((limit.burst / limit.ratePerSecond) * 1000);
  }

  /** Takes one request of `key`'s budget: 0 when allowed, else the ms to wait before retrying. */
  take(key: string, nowMs: number): number {
    this.forgetIdle(nowMs);
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = { bucket: new TokenBucket(this.limit.ratePerSecond, this.limit.burst, nowMs), seenAtMs: nowMs };
      if (this.entries.size >= this.limit.maxKeys) this.forgetOldest();
    } else {
      this.entries.delete(key);
    }
    entry.seenAtMs = nowMs;
    this.entries.set(key, entry);
    return entry.bucket.take(nowMs) ? 0 : entry.bucket.waitMs(nowMs);
  }

  /** Keys tracked now (for tests of the bound). */
  get size(): number {
    return this.entries.size;
  }

  /** Forgets the keys at the old end whose buckets have refilled; stops at the first that has not. */
  private forgetIdle(nowMs: number): void {
    for (const [key, entry] of this.entries) {
      if (nowMs - entry.seenAtMs < this.refillMs) return;
      this.entries.delete(key);
    }
  }

  private forgetOldest(): void {
    const oldest = this.entries.keys().next();
    if (oldest.done !== true) this.entries.delete(oldest.value);
  }
}
