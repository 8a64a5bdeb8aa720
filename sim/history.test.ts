import { describe, expect, it } from 'vitest';
import { History, type SendContext } from './history.js';

const CONV = 'shop:alice';

function send(history: History, cmid: string, from = 'alice', extra: Partial<SendContext> = {}): string {
  return history.sendCalled({
    device: `${from}/d0`,
    conv: CONV,
    from,
    cmid,
    body: `body of ${cmid}`,
    atMs: 0,
    inCell: true,
    duringPartition: false,
    senderOpen: true,
    cellId: 'cell-0000',
    ...extra,
  });
}

function message(seq: number, cmid: string, from = 'alice', body = `body of ${cmid}`) {
  return { conv: CONV, seq, from, cmid, body };
}

/** Alice (two devices) and the shop's agent bob (one device); three messages acked. */
function threeMessages(): History {
  const history = new History();
  history.registerDevice('alice/d0', { user: 'alice', role: 'customer' });
  history.registerDevice('alice/d1', { user: 'alice', role: 'customer' });
  history.registerDevice('bob/d0', { user: 'bob', role: 'agent', merchant: 'shop' });
  history.acked(send(history, 'a1'), 1, 10);
  history.acked(send(history, 'b1', 'bob'), 2, 20);
  history.acked(send(history, 'a2'), 3, 30);
  return history;
}

function deliverAll(history: History, devices: readonly string[], seqs: ReadonlyArray<readonly [number, string, string]>): void {
  for (const device of devices) for (const [seq, cmid, from] of seqs) history.delivered(device, message(seq, cmid, from), 40);
}

const ALL: ReadonlyArray<readonly [number, string, string]> = [
  [1, 'a1', 'alice'],
  [2, 'b1', 'bob'],
  [3, 'a2', 'alice'],
];

describe('the history checkers', () => {
  it('find nothing wrong in a correct history', () => {
    const history = threeMessages();
    deliverAll(history, ['alice/d0', 'alice/d1', 'bob/d0'], ALL);
    expect(history.checkLost()).toBe(0);
    expect(history.violationTotal).toBe(0);
    expect(history.undelivered()).toBe(0);
  });

  it('report an acknowledged message that never reached a device (the lost set)', () => {
    const history = threeMessages();
    deliverAll(history, ['alice/d0', 'bob/d0'], ALL);
    deliverAll(history, ['alice/d1'], ALL.slice(0, 2));
    expect(history.undelivered()).toBe(1);
    expect(history.checkLost()).toBe(1);
    expect(history.violationSummary()).toEqual({ lost: 1 });
    expect(history.violationExamples()[0]!.message).toMatch(/shop:alice seq 3 .*never reached alice\/d1/);
  });

  it('leave conversations that ended out of the lost set', () => {
    const history = threeMessages();
    expect(history.checkLost(new Set([CONV]))).toBe(0);
  });

  it('report a message delivered twice to one device', () => {
    const history = threeMessages();
    deliverAll(history, ['alice/d0'], [...ALL, [2, 'b1', 'bob']]);
    expect(history.violationSummary()).toEqual({ duplicate: 1 });
  });

  it('report a device that skipped seqs, and one that got them out of order', () => {
    const history = threeMessages();
    deliverAll(history, ['alice/d0'], [ALL[0]!, ALL[2]!]);
    deliverAll(history, ['alice/d1'], [ALL[0]!, ALL[2]!, ALL[1]!]);
    expect(history.violationSummary()).toEqual({ duplicate: 1, gap: 2 });
  });

  it('report messages nobody sent, and altered bodies', () => {
    const history = threeMessages();
    history.delivered('alice/d0', message(1, 'zz', 'mallory'), 5);
    history.delivered('alice/d1', message(1, 'a1', 'alice', 'tampered'), 5);
    expect(history.violationSummary()).toEqual({ unexpected: 2 });
  });

  it('report two devices seeing different messages under one seq', () => {
    const history = new History();
    history.registerDevice('alice/d0', { user: 'alice', role: 'customer' });
    history.registerDevice('bob/d0', { user: 'bob', role: 'agent', merchant: 'shop' });
    send(history, 'a1');
    send(history, 'b1', 'bob');
    history.delivered('alice/d0', message(1, 'a1'), 5);
    history.delivered('bob/d0', message(1, 'b1', 'bob'), 5);
    expect(history.violationSummary()).toEqual({ divergent: 1 });
  });

  it('report one send stored under two seqs (no dedup by message id)', () => {
    const history = new History();
    history.registerDevice('bob/d0', { user: 'bob', role: 'agent', merchant: 'shop' });
    send(history, 'a1');
    history.delivered('bob/d0', message(1, 'a1'), 5);
    history.delivered('bob/d0', message(2, 'a1'), 6);
    expect(history.violationSummary()).toEqual({ 'double-stored': 1 });
  });

  it('report an ack whose seq holds another message', () => {
    const history = new History();
    history.registerDevice('bob/d0', { user: 'bob', role: 'agent', merchant: 'shop' });
    const first = send(history, 'a1');
    const second = send(history, 'a2');
    history.acked(first, 1, 5);
    history.acked(second, 1, 6);
    expect(history.violationSummary()).toEqual({ 'ack-mismatch': 1 });
  });

  it('report a read cursor moving backwards, and accept repeats', () => {
    const history = threeMessages();
    history.receipt('alice/d0', { conv: CONV, user: 'bob', seq: 2 }, 1);
    history.receipt('alice/d0', { conv: CONV, user: 'bob', seq: 2 }, 2);
    history.receipt('alice/d0', { conv: CONV, user: 'bob', seq: 3 }, 3);
    expect(history.violationTotal).toBe(0);
    history.receipt('alice/d0', { conv: CONV, user: 'bob', seq: 1 }, 4);
    expect(history.violationSummary()).toEqual({ 'cursor-backwards': 1 });
  });

  it('computes the in-cell delivery ratio during partitions, leaving out cells that were down', () => {
    const history = new History();
    history.registerDevice('alice/d0', { user: 'alice', role: 'customer' });
    const fast = send(history, 'a1', 'alice', { duringPartition: true, atMs: 0 });
    send(history, 'a2', 'alice', { duringPartition: true, atMs: 100 });
    const slow = send(history, 'a3', 'alice', { duringPartition: true, atMs: 200, cellId: 'cell-0001' });
    send(history, 'a4', 'alice', { duringPartition: false, atMs: 300 });
    history.acked(fast, 1, 50);
    history.acked(slow, 2, 10_000);
    expect(history.inCellDelivery(5_000, () => false)).toEqual({ eligible: 3, ackedWithinBound: 1, ratio: 1 / 3 });
    expect(history.inCellDelivery(5_000, (cellId) => cellId === 'cell-0001')).toEqual({ eligible: 2, ackedWithinBound: 1, ratio: 0.5 });
    expect(history.pendingSends).toBe(2);
  });

  it('leaves out of the in-cell ratio the sends a device had not seen answered when it switched cells', () => {
    const history = new History();
    history.registerDevice('alice/d0', { user: 'alice', role: 'customer' });
    history.registerDevice('bob/d0', { user: 'bob', role: 'customer' });
    const answered = send(history, 'a1', 'alice', { duringPartition: true, atMs: 0 });
    history.acked(answered, 1, 50);
    const open = send(history, 'a2', 'alice', { duringPartition: true, atMs: 100 });
    const other = send(history, 'b1', 'bob', { duringPartition: true, atMs: 100 });
    history.deviceSwitchedCell('alice/d0');
    history.acked(open, 2, 10_000);
    history.acked(other, 1, 10_000);
    expect(history.inCellDelivery(5_000, () => false)).toEqual({ eligible: 2, ackedWithinBound: 1, ratio: 0.5 });
  });

  it('leaves out of the in-cell ratio the sends whose client the scenario closed before their answer', () => {
    const history = new History();
    history.registerDevice('alice/d0', { user: 'alice', role: 'customer' });
    const closed = send(history, 'a1', 'alice', { duringPartition: true, atMs: 0 });
    history.sendFailed(closed, 'CLIENT_CLOSED');
    const answered = send(history, 'a2', 'alice', { duringPartition: true, atMs: 100 });
    history.acked(answered, 1, 150);
    expect(history.inCellDelivery(5_000, () => false)).toEqual({ eligible: 1, ackedWithinBound: 1, ratio: 1 });
  });
});
