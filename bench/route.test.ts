import { describe, expect, it } from 'vitest';
import { runRoute } from './route.js';
import { routeWorkload, ZipfSampler } from './route-workload.js';
import { SeededRandom } from '../platform/random.js';

describe('route workload', () => {
  it('draws merchants by Zipf popularity and gives a share of customers a merchant on another cell', () => {
    const zipf = new ZipfSampler(100, 1, new SeededRandom(1));
    const counts = new Array<number>(100).fill(0);
    for (let index = 0; index < 50_000; index++) counts[zipf.next()]!++;
    // With s = 1 the first is twice as popular as the second, ten times the tenth.
    expect(counts[0]! / counts[1]!).toBeGreaterThan(1.7);
    expect(counts[0]! / counts[9]!).toBeGreaterThan(7);
    const workload = routeWorkload({ cells: 3, merchants: 30, customers: 2000, twoCellShare: 0.05, zipfExponent: 1, seed: 2 });
    const two = workload.customers.filter((customer) => customer.merchants.length === 2);
    expect(two.length).toBeGreaterThan(50);
    expect(two.length).toBeLessThan(150);
    for (const customer of two) expect(workload.homeIndexOf.get(customer.merchants[0]!)).not.toBe(workload.homeIndexOf.get(customer.merchants[1]!));
    expect(workload.merchantsOfCell.map((merchants) => merchants.length)).toEqual([10, 10, 10]);
  });
});

describe('route benchmark', () => {
  it('runs every phase on three real cells with a tiny workload and reports each figure', async () => {
    const report = await runRoute(
      {
        cells: 3,
        customers: 40,
        merchants: 6,
        twoCellShare: 0.25,
        messagesPerConversation: 1,
        concurrency: 10,
        lingerMs: 1000,
        routeDecisions: 2_000,
        routeHttpRequests: 30,
        followCustomers: 3,
        outageCustomers: 2,
        outageMessages: 4,
        seed: 3,
        maxSeconds: 170,
      },
      () => undefined,
    );
    expect(report.errors).toEqual([]);
    expect(report.decide?.unrouted).toBe(0);
    expect(report.routeP99Us).toBeGreaterThan(0);
    expect(report.routeHttpP99Ms).toBeGreaterThan(0);
    // Every message was counted by its home; routed customers land on their merchants' homes.
    const closure = report.closure!;
    expect(closure.sendFailures).toBe(0);
    expect(closure.messages.total).toBe(closure.messagesSent);
    expect(closure.connectionsOnHome).toBe(closure.connections);
    expect(closure.messages.relayed).toBe(0);
    // The customers of two cells have a client on each, each routed for its own merchant.
    expect(closure.twoCellCustomers).toBeGreaterThan(0);
    // Each client is routed for one merchant, so no home copies a message to the customer's other cell.
    expect(closure.messages.copied).toBe(0);
    expect(report.inCellClosure).toBe(1);
    expect(report.followMoveMs).not.toBeNull();
    expect(report.move?.notFollowed).toBe(0);
    // What the customers sent while the home was dead arrives once and in order after it returned.
    expect(report.outage?.sent).toBe(4);
    expect(report.outageDelivered).toBe(1);
    expect(report.outage?.queuedAtFallback).toBeLessThanOrEqual(4);
  }, 180_000);
});
