import { describe, expect, it } from 'vitest';
import { runAssign } from './assign.js';

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
    expect(report.loadSpread).toBeGreaterThanOrEqual(0);
    expect(report.decisionP99Ms).toBeLessThanOrEqual(report.decisionMs.max ?? 0);
  });
});
