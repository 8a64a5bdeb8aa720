import { describe, expect, test } from 'vitest';
import { chooseDrainTarget, type DrainTarget } from './drain-targets.js';

describe('chooseDrainTarget', () => {
  const targets: DrainTarget[] = [
    { cellId: 'c2', devices: 50, maxDevices: 100 },
    { cellId: 'c3', devices: 10, maxDevices: 100 },
    { cellId: 'c4', devices: 100, maxDevices: 1000 },
  ];

  test('takes the target with the lowest share of its capacity in use', () => {
    expect(chooseDrainTarget(targets, new Map(), new Map())).toBe('c3');
    expect(chooseDrainTarget([], new Map(), new Map())).toBeUndefined();
  });

  test('counts what the drain sent already, so one target does not take everything', () => {
    // c3 got 40 devices from the drain: 50 % of its capacity, more than c4's 10 %.
    expect(chooseDrainTarget(targets, new Map([['c3', 40]]), new Map([['c3', 3]]))).toBe('c4');
  });

  test('spreads merchants evenly over idle targets of the same capacity, then by cell id', () => {
    const idle: DrainTarget[] = ['c3', 'c2'].map((cellId) => ({ cellId, devices: 0, maxDevices: 100 }));
    const sentDevices = new Map<string, number>();
    const sentMerchants = new Map<string, number>();
    const chosen: string[] = [];
    for (let merchant = 0; merchant < 4; merchant++) {
      const target = chooseDrainTarget(idle, sentDevices, sentMerchants)!;
      chosen.push(target);
      // Each merchant counts as one device at least.
      sentDevices.set(target, (sentDevices.get(target) ?? 0) + 1);
      sentMerchants.set(target, (sentMerchants.get(target) ?? 0) + 1);
    }
    expect(chosen).toEqual(['c2', 'c3', 'c2', 'c3']);
  });
});
