import { describe, expect, it } from 'vitest';
import { History, type SendContext } from './history.js';
import { checkOutageSends } from './outage-checks.js';

const CONV = 'shop:alice';

function send(history: History, cmid: string, atMs: number, extra: Partial<SendContext> = {}): string {
  return history.sendCalled({
    device: 'alice/d0',
    conv: CONV,
    from: 'alice',
    cmid,
    body: `body of ${cmid}`,
    atMs,
    inCell: false,
    duringPartition: false,
    senderOpen: false,
    cellId: 'cell-0001',
    ...extra,
  });
}

const DOWN = { outageOf: 'cell-0000' };

describe('the outage checks', () => {
  it('pass sends queued by a live cell within the bound and acknowledged in order after the heal', () => {
    const history = new History();
    history.acked(send(history, 'a1', 100), 1, 150);
    const a2 = send(history, 'a2', 1_000, DOWN);
    history.queued(CONV, 'alice', 'a2', 1_500);
    const a3 = send(history, 'a3', 2_000, DOWN);
    history.queued(CONV, 'alice', 'a3', 2_100);
    history.acked(a2, 2, 30_000);
    history.acked(a3, 3, 30_001);
    const verdict = checkOutageSends(history.allSends(), 5_000, 0);
    expect(verdict.violations).toEqual([]);
    expect(verdict.figures).toEqual({ sends: 2, queued: 2, servedWithinBound: 2, acknowledged: 2 });
  });

  it('finds a send nobody took within the bound, one never acknowledged, and sends stored out of their order', () => {
    const history = new History();
    // Held by the device until the home came back 20 s later: acknowledged, but not taken in time.
    history.acked(send(history, 'a1', 1_000, DOWN), 2, 21_000);
    // Queued by a live cell, then never forwarded.
    send(history, 'a2', 2_000, DOWN);
    history.queued(CONV, 'alice', 'a2', 2_200);
    // Sent after a1 by the same device, stored before it.
    history.acked(send(history, 'a3', 3_000, DOWN), 1, 3_100);
    const verdict = checkOutageSends(history.allSends(), 10_000, 0);
    expect(verdict.violations.map((violation) => violation.kind)).toEqual(['outage-unserved', 'outage-lost', 'outage-order']);
    expect(verdict.violations[0]!.message).toMatch(/a1 from alice\/d0, sent at 1000 ms while cell-0000 was down: first taken after 20000 ms/);
    expect(verdict.violations[1]!.message).toMatch(/a2 .*: queued but never acknowledged/);
    expect(verdict.violations[2]!.message).toMatch(/sent shop:alice a1 before a3, stored as seq 2 and seq 1/);
    expect(verdict.figures).toEqual({ sends: 3, queued: 1, servedWithinBound: 2, acknowledged: 2 });
  });

  it('judges no bound unless the scenario sets one, and leaves devices without outage sends alone', () => {
    const history = new History();
    history.acked(send(history, 'a1', 1_000, DOWN), 1, 60_000);
    // Another device's sends in another order are not judged: no outage send of its own there.
    history.acked(send(history, 'b2', 500, { device: 'alice/d1', cmid: 'b2' }), 3, 600);
    history.acked(send(history, 'b3', 700, { device: 'alice/d1', cmid: 'b3' }), 2, 800);
    const verdict = checkOutageSends(history.allSends(), undefined, 0);
    expect(verdict.violations).toEqual([]);
    expect(verdict.figures.servedWithinBound).toBe(1);
  });
});
