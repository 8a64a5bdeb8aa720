import { TokenBucket } from '../../platform/token-bucket.js';

export interface UploadRate {
  /** Uploads per second one identity may make on average... */
  ratePerSecond: number;
  /** ...and at once. */
  burst: number;
  /** Identities tracked at once; the least recently seen is forgotten beyond this (it starts again with a full burst). */
  maxTracked: number;
}

export const DEFAULT_UPLOAD_RATE: UploadRate = { ratePerSecond: 1, burst: 20, maxTracked: 100_000 };

/** A token bucket per uploader (tenant and party), bounded in how many it remembers. */
export class UploadRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly rate: UploadRate = DEFAULT_UPLOAD_RATE) {}

  /** Takes one upload from `uploader`'s budget: 0 when it may go ahead, else how long to wait (ms). */
  take(uploader: string, nowMs: number): number {
    let bucket = this.buckets.get(uploader);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.rate.ratePerSecond, this.rate.burst, nowMs);
      if (this.buckets.size >= this.rate.maxTracked) this.buckets.delete(this.buckets.keys().next().value!);
    } else {
      // Re-inserted, so the map's order is least recently seen first.
      this.buckets.delete(uploader);
    }
    this.buckets.set(uploader, bucket);
    return bucket.take(nowMs) ? 0 : bucket.waitMs(nowMs);
  }
}
