import { describe, expect, it } from 'vitest';
import { InvariantError } from '../platform/invariant.js';
import { DestinationQueue } from './outbox-destination.js';

const entries = (...seqs: number[]) => seqs.map((seq) => ({ seq }));

describe('an outbox destination keeps its seqs going forward', () => {
  it('reserves, sends and acknowledges in order', () => {
    const queue = new DestinationQueue('b');
    const first = queue.reserve(2);
    const second = queue.reserve(1);
    expect([first.firstSeq, second.firstSeq, queue.nextSeq]).toEqual([1, 3, 4]);
    // Nothing is sendable while the first reservation is unsettled.
    expect(queue.sendableBelow()).toBe(1);
    queue.settle(first, true, 0);
    expect(queue.sendableBelow()).toBe(3);
    queue.sending(entries(1, 2));
    queue.acknowledged(2, 2);
    expect([queue.ackedSeq, queue.waiting]).toEqual([2, 0]);
  });

  it('fails loudly on an acknowledgement beyond what was sent', () => {
    const queue = new DestinationQueue('b');
    queue.settle(queue.reserve(3), true, 0);
    queue.sending(entries(1, 2));
    expect(() => queue.acknowledged(3, 3)).toThrow(InvariantError);
    queue.acknowledged(2, 2);
    expect(() => queue.acknowledged(2, 0)).toThrow(InvariantError);
  });

  it('fails loudly on a batch out of order or past an unsettled reservation', () => {
    const queue = new DestinationQueue('b');
    queue.settle(queue.reserve(3), true, 0);
    queue.reserve(1);
    expect(() => queue.sending(entries(2, 1))).toThrow(InvariantError);
    expect(() => queue.sending(entries(1, 4))).toThrow(InvariantError);
  });

  it('fails loudly on a reservation at or below an acknowledged seq', () => {
    const queue = new DestinationQueue('b');
    // As if numbering had been resumed wrongly after a restart.
    queue.ackedSeq = 5;
    expect(() => queue.reserve(1)).toThrow(InvariantError);
  });
});
