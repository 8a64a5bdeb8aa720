import { describe, expect, it } from 'vitest';
import { runHotPath } from './hot-path.js';

describe('hot-path benchmark', () => {
  it('pushes every measured message to every agent of its merchant, with no error, and reports per-message costs', async () => {
    const report = await runHotPath({
      customers: 40,
      merchants: 4,
      agentsPerMerchant: 2,
      perTick: 10,
      ackEvery: 3,
      messages: 600,
      warmupMessages: 100,
      floorMessages: 200,
      bodyBytes: 16,
      storeSync: false,
      seed: 3,
      json: true,
    });
    expect(report.errorFrames).toBe(0);
    expect(report.deliveries).toBe(600 * 2);
    expect(report.cpuMicrosPerMessage).toBeGreaterThan(0);
    expect(report.gcMsPerThousandMessages).toBeGreaterThanOrEqual(0);
    expect(report.msgsPerSec).toBeGreaterThan(0);
    // The store's floor replays what the core wrote: a message and its idempotency record at least
    // (the sender's read cursor is implied by the message: read-cursors.ts), so two ops or more.
    expect(report.storeOpsPerMessage).toBeGreaterThanOrEqual(2);
    expect(report.storeBytesPerMessage).toBeGreaterThan(16);
    expect(report.storeCpuMicrosPerMessage).toBeGreaterThan(0);
  });
});
