import { describe, expect, it } from 'vitest';
import { runAssign } from './assign.js';
import { runDurableAssign } from './assign-durable.js';

describe('bench assign', () => {
  it('runs every phase on a small desk and reports what it measured', () => {
    const report = runAssign({ agents: 200, groups: 4, churnOps: 5_000, seed: 3, json: true });
    expect(report.benchmark).toBe('assign');
    // The deep queue formed and drained, the sticky rule fired, and every call was timed.
    expect(report.maxQueueDepth).toBeGreaterThan(100);
    expect(report.stickyAssignments).toBeGreaterThan(0);
    expect(report.assignments).toBeGreaterThan(report.maxQueueDepth);
    expect(report.decisionMs.count).toBe(report.calls);
    expect(report.assignPerSec).toBeGreaterThan(0);
    // A busy desk keeps every online agent of a group with a queue full; below capacity, with
    // each group's arrivals matching its closes, the least-loaded agent fills each dip.
    expect(report.loadSpreadBusyDesk).toBeLessThanOrEqual(1);
    expect(report.loadSpreadMatchedArrivals).toBeLessThanOrEqual(1);
    expect(report.loadSpread).toBe(Math.max(report.loadSpreadBusyDesk, report.loadSpreadMatchedArrivals));
    expect(report.loadSpreadBelowCapacity).toBeGreaterThanOrEqual(0);
    expect(report.decisionP99Ms).toBeLessThanOrEqual(report.decisionMs.max ?? 0);
  });

  it('drains a real cell\'s queue through its store and measures it against the same cell\'s messages', async () => {
    const report = await runDurableAssign({ consultations: 60, agents: 6, seed: 2 });
    expect(report.durableAssignPerSec).toBeGreaterThan(0);
    expect(report.durableMessagesPerSec).toBeGreaterThan(0);
    expect(report.assignToMessageRatio).toBeCloseTo(report.durableAssignPerSec / report.durableMessagesPerSec, 1);
  }, 60_000);
});
