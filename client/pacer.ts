/**
 * The client's mirror of the cell's per-connection rate limit: a token bucket with the
 * `ratePerSecond` and `rateBurst` the welcome announced. The cell counts every frame, acks
 * included, and answers a frame over the limit with RATE_LIMITED; an ack refused that way is
 * lost (acks carry no id). So the client paces its own frames: sends may use the bucket only down
 * to a reserve, which keeps room for acks and requests.
 *
 * Time comes from the caller, so the pacer runs the same on the system clock and a virtual one.
 */
export class FramePacer {
  private tokens: number;
  private refilledAtMs: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.refilledAtMs = nowMs;
  }

  /** Tokens that sends leave for acks and requests: a quarter of the burst. */
  get sendReserve(): number {
    return Math.floor(this.burst / 4);
  }

  /** Takes a token if at least `reserve` would remain; returns whether it did. */
  take(nowMs: number, reserve = 0): boolean {
    this.refill(nowMs);
    if (this.tokens < 1 + reserve) return false;
    this.tokens -= 1;
    return true;
  }

  /** Takes a token if there is one, for frames that go out at once regardless (requests, pings). */
  spend(nowMs: number): void {
    this.refill(nowMs);
    this.tokens = Math.max(0, this.tokens - 1);
  }

  /** How long until `take(…, reserve)` succeeds; at least 1 ms so callers never spin. */
  waitMs(nowMs: number, reserve = 0): number {
    this.refill(nowMs);
    const missing = 1 + reserve - this.tokens;
    if (missing <= 0) return 0;
    return Math.max(1, Math.ceil((missing * 1000) / this.ratePerSecond));
  }

  /** The cell refused a frame: its bucket is empty, whatever this mirror believed. */
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
