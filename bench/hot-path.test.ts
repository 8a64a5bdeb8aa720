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
    // The store's floor replays what the core wrote: a message, its idempotency record and its
    // sender's read cursor at least, so three ops or more per message.
    expect(report.storeOpsPerMessage).toBeGreaterThanOrEqual(3);
    expect(report.storeBytesPerMessage).toBeGreaterThan(16);
    expect(report.storeCpuMicrosPerMessage).toBeGreaterThan(0);
  });
});
