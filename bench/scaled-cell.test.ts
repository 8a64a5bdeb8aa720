import { describe, expect, it } from 'vitest';
import { redisServerMissing } from '../testing/redis-server.js';
import { runScaledCell } from './scaled-cell.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`bench/scaled-cell.test.ts: skipped: ${skipReason}`);

describe.skipIf(skipReason !== undefined)(`scaled-cell benchmark${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  it('runs the three phases and two failovers with a tiny load and reports each figure', async () => {
    const lines: string[] = [];
    const report = await runScaledCell(
      {
        customers: 8,
        merchants: 4,
        agentsPerMerchant: 1,
        outstandingPerCustomer: 1,
        warmupSeconds: 1,
        durationSeconds: 1,
        bodyBytes: 16,
        workers: 1,
        failoverTrials: 2,
        leaseTtlMs: 1500,
        renewIntervalMs: 300,
        waitQuietSeconds: 0,
        maxSeconds: 170,
        seed: 5,
      },
      (line) => lines.push(line),
    );
    expect(report.errors, lines.join('\n')).toEqual([]);
    for (const figure of [report.levelMsgsPerSec, report.redisOneProcessMsgsPerSec, report.redisTwoProcessesMsgsPerSec]) {
      expect(figure).toBeGreaterThan(0);
    }
    for (const phase of [report.phases.level!, report.phases.redisOneProcess!, report.phases.redisTwoProcesses!]) {
      expect(phase.ackedInWindow).toBeGreaterThan(0);
      expect(phase.p99Ms).not.toBeNull();
      expect(phase.devices).toBe(12);
    }
    // Half the devices of the two-process cell reach the process that does not own their merchant.
    expect(report.phases.redisTwoProcesses!.relayedDevices).toBe(6);
    expect(report.phases.level!.redis).toBeNull();
    expect(report.phases.redisOneProcess!.redis!.commandsPerAckedMessage).toBeGreaterThan(0);
    expect(Object.keys(report.phases.redisTwoProcesses!.cpuByProcess).sort()).toEqual(['proc-a', 'proc-b', 'redis-server']);
    expect(report.failoverTrials.map((trial) => trial.killed)).toEqual(['proc-a', 'proc-b']);
    for (const trial of report.failoverTrials) expect(trial.devicesOnKilled).toBe(4);
    expect(Number.isFinite(report.failoverMs)).toBe(true);
    expect(report.failoverMaxMs).toBeGreaterThanOrEqual(report.failoverMs!);
    expect(report.cores).toBeGreaterThan(0);
  }, 180_000);
});
