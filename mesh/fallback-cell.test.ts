import { describe, expect, it } from 'vitest';
import type { CellRecord } from './cell-record.js';
import type { DirectoryEntry, Liveness } from './directory.js';
import { fallbackCellOf } from './fallback-cell.js';

function entry(cellId: string, liveness: Liveness, maxDevices = 100, role?: 'router'): DirectoryEntry {
  const record = {
    cellId,
    peerId: `peer-${cellId}`,
    incarnation: 0,
    version: 0,
    status: 'alive',
    ...(role === undefined ? {} : { role }),
    endpoints: { ws: `ws://${cellId}.test/v1/ws`, http: `http://${cellId}.test`, p2p: [] },
    tenants: [],
    merchants: [],
    load: { devices: 0, messagesPerSecond: 0 },
    capacity: { maxDevices },
  } as CellRecord;
  return { record, signed: { record: '', signature: '' }, liveness, claim: undefined, lastHeardMs: 0, livenessSinceMs: 0 };
}

const view = (entries: DirectoryEntry[]) => ({ values: () => entries.values() });
const merchants = Array.from({ length: 3_000 }, (_, index) => `m${index}`);
const choices = (entries: DirectoryEntry[]) => merchants.map((merchant) => fallbackCellOf(view(entries), 'mall', merchant)?.record.cellId);

describe('fallbackCellOf', () => {
  it('picks only live cells, never a router, a dead or left cell, or a cell taking no devices', () => {
    const entries = [entry('a', 'dead'), entry('b', 'left'), entry('edge', 'alive', 0, 'router'), entry('c', 'alive', 0), entry('d', 'suspect')];
    expect(new Set(choices(entries))).toEqual(new Set(['d']));
    expect(fallbackCellOf(view(entries.slice(0, 4)), 'mall', 'm1')).toBeUndefined();
  });

  it('spreads merchants by capacity and moves only those of a cell that joins or goes', () => {
    const three = [entry('a', 'alive', 100), entry('b', 'alive', 100), entry('c', 'alive', 200)];
    const before = choices(three);
    const share = (cell: string) => before.filter((chosen) => chosen === cell).length / merchants.length;
    expect(share('a')).toBeCloseTo(0.25, 1);
    expect(share('c')).toBeCloseTo(0.5, 1);
    // The order of the directory's entries does not matter.
    expect(choices([...three].reverse())).toEqual(before);
    // b goes: only b's merchants move.
    const withoutB = choices(three.filter((cell) => cell.record.cellId !== 'b'));
    before.forEach((chosen, index) => {
      if (chosen !== 'b') expect(withoutB[index]).toBe(chosen);
    });
    // d joins: merchants move only to d.
    const withD = choices([...three, entry('d', 'alive', 100)]);
    withD.forEach((chosen, index) => {
      if (chosen !== before[index]) expect(chosen).toBe('d');
    });
  });
});
