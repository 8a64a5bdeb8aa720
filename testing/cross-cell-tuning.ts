/**
 * Timings of the cross-cell services for tests on a virtual clock: short windows and time-outs,
 * so partitions, retries and answers play out in a few virtual seconds.
 */
export const FAST_CROSS_CELL_TUNING = {
  maxFrameBytes: 64 * 1024,
  location: { answerWindowMs: 20, batchWindowMs: 1 },
  outbox: { requestTimeoutMs: 200, backoffInitialMs: 10, backoffMaxMs: 200 },
} as const;
