/**
 * A token bucket: `ratePerSecond` on average, `burst` at once. Time comes from the caller, so
 * the bucket works the same on the system clock and a virtual one. The cell limits each
 * connection with one; the client SDK mirrors the cell's limit with another to pace itself.
 */
export class TokenBucket {
  private tokens: number;
  private refilledAtMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.refilledAtMs = nowMs;
  }

  /** Takes a token if at least `reserve` tokens would remain; returns whether it did. */
  take(nowMs: number, reserve = 0): boolean {
    this.refill(nowMs);
    if (this.tokens < 1 + reserve) return false;
    this.tokens -= 1;
    return true;
  }

  /** Takes a token if there is one, for frames that go out regardless. */
  spend(nowMs: number): void {
    this.refill(nowMs);
    this.tokens = Math.max(0, this.tokens - 1);
  }

  /** How long until `take(…, reserve)` succeeds; 0 when it would now, else at least 1 ms. */
  waitMs(nowMs: number, reserve = 0): number {
    this.refill(nowMs);
    const missing = 1 + reserve - this.tokens;
    if (missing <= 0) return 0;
    return Math.max(1, Math.ceil((missing * 1000) / this.ratePerSecond));
  }

  /** Adds `tokens` (earned otherwise than by time), up to the burst. */
  credit(tokens: number): void {
    this.tokens = Math.min(this.burst, this.tokens + tokens);
  }

  /** Empties the bucket (the other side said it is empty, whatever this one believed). */
  drain(nowMs: number): void {
    this.refill(nowMs);
    this.tokens = 0;
  }

  private refill(nowMs: number): void {
    const elapsedMs = Math.max(0, nowMs - this.refilledAtMs);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
    this.refilledAtMs = nowMs;
  }
}
