import { describe, expect, it } from 'vitest';
import { otherProcessesSecondsBetween, readSystemCpu, type SystemCpuSample } from './servers.js';

function sample(ticks: Record<string, number>): SystemCpuSample {
  const otherTicksByProcess = new Map(Object.entries(ticks));
  const total = [...otherTicksByProcess.values()].reduce((sum, value) => sum + value, 0);
  return {
    otherProcessesSeconds: total / 100,
    otherTicksByProcess,
    kernelThreadsSeconds: 0,
    interruptSeconds: 0,
    stealSeconds: 0,
  };
}

describe('otherProcessesSecondsBetween', () => {
  it('counts each process its own time: a process that ended in between does not cancel the others', () => {
    const start = sample({ '10:1': 100_000, '11:5': 50 });
    // 10 ended (a long-lived process: its whole life is 1,000 s), 11 used 2 s, 12 started and used 1 s.
    const end = sample({ '11:5': 250, '12:9': 100 });
    expect(otherProcessesSecondsBetween(start, end)).toBe(3);
    // The difference of the totals would have read the busy machine as idle.
    expect(end.otherProcessesSeconds - start.otherProcessesSeconds).toBeLessThan(0);
  });

  it('tells a reused pid from the process that had it before', () => {
    expect(otherProcessesSecondsBetween(sample({ '10:1': 500 }), sample({ '10:7': 100 }))).toBe(1);
  });

  it('reads this machine, without the processes it is told to leave out', () => {
    const reading = readSystemCpu([process.pid]);
    expect(reading.otherTicksByProcess.size).toBeGreaterThan(0);
    expect([...reading.otherTicksByProcess.keys()].some((key) => key.startsWith(`${process.pid}:`))).toBe(false);
  });
});
