import { describe, expect, it } from 'vitest';
import type { TargetKind } from './load-protocol.js';
import {
  buildJsonReport,
  disturbedWindowsOf,
  formatHumanReport,
  goalsOf,
  headlineFigures,
  type InCellParameters,
  type PhaseSummary,
  type TargetResult,
} from './report.js';

function phase(figures: Partial<PhaseSummary>): PhaseSummary {
  return {
    mode: 'closed',
    targetRatePerSecond: null,
    msgsPerSec: 0,
    p50Ms: null,
    p90Ms: null,
    p99Ms: null,
    p999Ms: null,
    maxMs: null,
    meanMs: null,
    windowSeconds: 10,
    sentInWindow: 0,
    ackedInWindow: 0,
    totalSent: 0,
    totalAcked: 0,
    unackedAfterDrain: 0,
    skipped: 0,
    errors: {},
    delivered: 0,
    expectedDeliveries: null,
    deliveryAcksSent: 0,
    ackFramesSent: 0,
    socketsClosedUnexpectedly: 0,
    serverCpuPercent: 0,
    serverSystemCpuPercent: 0,
    cpuByProcess: {},
    generatorCpuPercent: 0,
    otherCpuPercent: 0,
    interruptCpuPercent: 0,
    kernelThreadsCpuPercent: 0,
    stealCpuPercent: 0,
    generatorEventLoopUtilization: 0.5,
    tickLagP99Ms: null,
    generatorGcPauseTotalMs: 0,
    generatorGcPauseMaxMs: 0,
    ...figures,
  };
}

function target(kind: TargetKind, phases: Partial<TargetResult>): TargetResult {
  return { target: kind, label: kind, ok: true, durability: 'test', ...phases };
}

const parameters: InCellParameters = {
  customers: 1000,
  merchants: 10,
  agentsPerMerchant: 2,
  outstandingPerCustomer: 1,
  window1Customers: 100,
  maxPacedOutstandingPerCustomer: 16,
  workers: 1,
  pacedRatePerSecond: null,
  bodyBytes: 64,
  warmupSeconds: 2,
  durationSeconds: 10,
  idleConnections: 5000,
  storeSync: true,
  pin: false,
  seed: 1,
  targets: ['cell', 'socketio', 'uws-echo'],
  idleTargets: ['cell', 'socketio', 'uws-echo'],
};

/** A run in which every goal is met. */
function goodRun(): TargetResult[] {
  return [
    target('cell', {
      idle: {
        connections: 5000,
        opened: 5000,
        failed: 0,
        warmConnections: 100,
        rssBeforeBytes: 0,
        rssAfterBytes: 0,
        bytesPerConnection: 6000,
        openSeconds: 1,
        heapUsedBytesPerConnection: null,
        externalBytesPerConnection: null,
        newSpaceBytesBefore: null,
        newSpaceBytesAfter: null,
      },
      peak: phase({ msgsPerSec: 18_000, p50Ms: 50, p99Ms: 80, serverCpuPercent: 120 }),
      halfLoad: phase({ mode: 'paced', targetRatePerSecond: 9000, msgsPerSec: 9000, p50Ms: 1, p99Ms: 12, serverCpuPercent: 60 }),
      window1: phase({ msgsPerSec: 20_000, p50Ms: 4, p99Ms: 9 }),
    }),
    target('socketio', {
      peak: phase({ msgsPerSec: 6000, p99Ms: 300 }),
      halfLoad: phase({ mode: 'paced', targetRatePerSecond: 3000, p99Ms: 40 }),
      atCellHalfLoad: phase({ mode: 'paced', targetRatePerSecond: 9000, p99Ms: 400 }),
      window1: phase({ msgsPerSec: 8000, p50Ms: 12, p99Ms: 30 }),
    }),
    target('uws-echo', {
      peak: phase({ msgsPerSec: 30_000, p99Ms: 40 }),
      halfLoad: phase({ mode: 'paced', targetRatePerSecond: 15_000, p99Ms: 4 }),
      atCellHalfLoad: phase({ mode: 'paced', targetRatePerSecond: 9000, p99Ms: 3 }),
      window1: phase({ msgsPerSec: 40_000, p50Ms: 2.5, p99Ms: 5 }),
    }),
  ];
}

describe('headlineFigures', () => {
  it('takes each figure from its target and phase, and the ratios the goals judge', () => {
    const figures = headlineFigures(goodRun());
    expect(figures).toMatchObject({
      msgsPerSec: 18_000,
      peakCpuPercent: 120,
      halfLoadRatePerSec: 9000,
      halfLoadP99Ms: 12,
      halfLoadCpuPercent: 60,
      window1MsgsPerSec: 20_000,
      window1P50Ms: 4,
      window1P99Ms: 9,
      socketioOwnHalfLoadP99Ms: 40,
      // The baselines at the cell's half-load rate, not at their own half load.
      socketioHalfLoadP99Ms: 400,
      uwsEchoOwnHalfLoadP99Ms: 4,
      uwsEchoHalfLoadP99Ms: 3,
      socketioWindow1MsgsPerSec: 8000,
      uwsEchoWindow1P50Ms: 2.5,
      vsSocketio: 3,
      vsUwsEcho: 0.6,
      halfLoadP99VsUwsEcho: 4,
      halfLoadCpuVsPeak: 0.5,
      window1VsSocketio: 2.5,
      window1P50VsUwsEcho: 1.6,
      idleConnBytes: 6000,
    });
  });

  it('gives null for what did not run', () => {
    const figures = headlineFigures([target('cell', { peak: phase({ msgsPerSec: 10_000, serverCpuPercent: 100 }) })]);
    expect(figures['msgsPerSec']).toBe(10_000);
    expect(figures['halfLoadCpuPercent']).toBeNull();
    expect(figures['halfLoadCpuVsPeak']).toBeNull();
    expect(figures['uwsEchoWindow1P50Ms']).toBeNull();
    expect(figures['window1P50VsUwsEcho']).toBeNull();
  });
});

describe('goalsOf', () => {
  it('meets every goal at its bound, except the strict ones', () => {
    const goals = goalsOf(headlineFigures(goodRun()));
    expect(goals).toEqual({
      vsSocketio: { min: 2, met: true },
      vsUwsEcho: { min: 0.6, met: true },
      halfLoadP99VsUwsEcho: { max: 5, met: true },
      halfLoadCpuVsPeak: { max: 0.6, met: true },
      window1VsSocketio: { min: 2, met: true },
      window1P50VsUwsEcho: { max: 2, met: true },
      idleConnBytes: { max: 8192, met: true },
    });
    const atBounds = goalsOf({ halfLoadP99VsUwsEcho: 5, halfLoadCpuVsPeak: 0.6, window1P50VsUwsEcho: 2, window1VsSocketio: 2 });
    expect(atBounds['halfLoadP99VsUwsEcho']!.met).toBe(true);
    expect(atBounds['halfLoadCpuVsPeak']!.met).toBe(true);
    expect(atBounds['window1VsSocketio']!.met).toBe(true);
    expect(atBounds['window1P50VsUwsEcho']!.met).toBe(false);
  });

  it('misses what is past its bound and leaves missing figures undecided', () => {
    const goals = goalsOf({ vsUwsEcho: 0.45, halfLoadP99VsUwsEcho: 30, halfLoadCpuVsPeak: 0.9, window1VsSocketio: 1.3, window1P50VsUwsEcho: null });
    expect(goals['vsUwsEcho']!.met).toBe(false);
    expect(goals['halfLoadP99VsUwsEcho']!.met).toBe(false);
    expect(goals['halfLoadCpuVsPeak']!.met).toBe(false);
    expect(goals['window1VsSocketio']!.met).toBe(false);
    expect(goals['window1P50VsUwsEcho']!.met).toBeNull();
    expect(goals['vsSocketio']!.met).toBeNull();
  });
});

describe('the JSON and the human report', () => {
  it('carry the new figures and goals, and no old name', () => {
    const json = buildJsonReport(parameters, goodRun(), new Date(0), 1);
    expect(json['halfLoadP99Ms']).toBe(12);
    expect(json['goals']).toMatchObject({ halfLoadCpuVsPeak: { max: 0.6, met: true } });
    for (const old of ['p99MsAtHalfLoad', 'p50MsAtHalfLoad', 'uwsEchoP99MsAtCellHalfLoad', 'socketioP99MsAtCellHalfLoad']) {
      expect(json).not.toHaveProperty(old);
    }
    const text = formatHumanReport(parameters, goodRun(), json);
    expect(text).toContain('window 1 (100 conversations, one send in flight each, closed loop): 20,000 msgs/s');
    expect(text).toContain("MET  p99 at half of peak <= 5x the uWS echo's at the same rate: 4.00x (12.00 ms against 3.00 ms");
    expect(text).toContain('MET  CPU at half of peak <= 60% of CPU at peak: 50% (60% against 120% of a core)');
    expect(text).toContain("MET  window 1: >= 2x the Socket.IO relay's msgs/s: 2.50x (20,000 msgs/s against 8,000 msgs/s)");
    expect(text).toContain("MET  window 1: p50 < 2x the uWS echo's: 1.60x (4.00 ms against 2.50 ms)");
    expect(text).toContain("MET  peak >= 0.6x the raw uWS echo's: 0.60x");
  });

  it('flags a disturbed window-1 phase', () => {
    const run = goodRun();
    run[0]!.window1 = phase({ otherCpuPercent: 40 });
    expect(disturbedWindowsOf(run)).toEqual(['cell window 1: other processes used 40% of a core']);
  });
});
