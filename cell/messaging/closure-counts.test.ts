import { describe, expect, it } from 'vitest';
import { ClosureCounts } from './closure-counts.js';

describe('ClosureCounts', () => {
  it('has no ratio before the first message', () => {
    const snapshot = new ClosureCounts().snapshot();
    expect(snapshot.messages).toEqual({ inCell: 0, relayed: 0, copied: 0, total: 0, inCellRatio: null });
    expect(snapshot.conversations).toEqual({ total: 0, crossed: 0, inCell: 0, inCellRatio: null });
  });

  it('counts each message on its path and a conversation as crossed once any of its messages crossed', () => {
    const counts = new ClosureCounts();
    for (let index = 0; index < 6; index++) counts.count('t', 'm1:c1', 'in_cell');
    counts.count('t', 'm1:c2', 'in_cell');
    counts.count('t', 'm1:c2', 'relayed');
    counts.count('t', 'm1:c2', 'copied');
    counts.count('t', 'm2:c3', 'copied');
    const { messages, conversations } = counts.snapshot();
    expect(messages).toEqual({ inCell: 7, relayed: 1, copied: 2, total: 10, inCellRatio: 0.7 });
    expect(conversations.total).toBe(3);
    expect(conversations.crossed).toBe(2);
    expect(conversations.inCell).toBe(1);
    expect(conversations.inCellRatio).toBeCloseTo(1 / 3);
  });

  it('keeps tenants apart and forgets the least recently active conversation beyond its bound', () => {
    const counts = new ClosureCounts(2);
    counts.count('a', 'm:c', 'relayed');
    counts.count('b', 'm:c', 'in_cell');
    counts.count('b', 'm:d', 'in_cell');
    // a/m:c was forgotten: it counts as a conversation again.
    counts.count('a', 'm:c', 'relayed');
    expect(counts.snapshot().conversations).toMatchObject({ total: 4, crossed: 2 });
    expect(counts.snapshot().messages.total).toBe(4);
  });
});
