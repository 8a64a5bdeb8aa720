import { describe, expect, it } from 'vitest';
import type { DeskNotice } from '../cell/protocol/frames.js';
import { checkDesks, type AgentPresence, type DeskCheckInput, type DeskRunning } from './desk-checks.js';
import { History, type NoticeSeen } from './history.js';

const SHOP = 'shop';
/** Ann takes two at once, Bob one; both in sales only. */
const AGENTS = [
  { id: 'ann', capacity: 2, groups: ['sales'] },
  { id: 'bob', capacity: 1, groups: ['sales'] },
];

/** A run's record: system messages (conversation, seq, time, event), presence and desk runs. */
class Run {
  readonly notices = new Map<string, NoticeSeen[]>();
  readonly presence: AgentPresence[] = [];
  readonly running: DeskRunning[] = [{ merchant: SHOP, atMs: 0, running: true }];
  private cmids = 0;

  constructor() {
    this.online('ann', 0);
    this.online('bob', 0);
  }

  notice(customer: string, atMs: number, event: DeskNotice): this {
    const conv = `${SHOP}:${customer}`;
    const list = this.notices.get(conv) ?? [];
    // Seq 1 is the customer's opening message; the desk's messages follow.
    list.push({ conv, seq: list.length + 2, cmid: `desk-${this.cmids++}`, ts: atMs, event });
    this.notices.set(conv, list);
    return this;
  }

  queued(customer: string, atMs: number, consultation = customer): this {
    return this.notice(customer, atMs, { type: 'queued', consultation, group: 'sales' });
  }

  assigned(customer: string, agent: string, atMs: number, options: { consultation?: string; sticky?: boolean } = {}): this {
    return this.notice(customer, atMs, { type: 'assigned', consultation: options.consultation ?? customer, agent, name: agent, sticky: options.sticky ?? false });
  }

  closed(customer: string, agent: string | undefined, atMs: number, consultation = customer): this {
    return this.notice(customer, atMs, agent === undefined ? { type: 'closed', consultation, by: 'customer' } : { type: 'closed', consultation, by: 'agent', agent });
  }

  released(customer: string, agent: string, atMs: number): this {
    return this.notice(customer, atMs, { type: 'released', consultation: customer, agent });
  }

  online(agent: string, atMs: number): this {
    this.presence.push({ merchant: SHOP, agent, atMs, present: true, online: true });
    return this;
  }

  busy(agent: string, atMs: number): this {
    this.presence.push({ merchant: SHOP, agent, atMs, present: true, online: false });
    return this;
  }

  gone(agent: string, atMs: number): this {
    this.presence.push({ merchant: SHOP, agent, atMs, present: false, online: false });
    return this;
  }

  down(fromMs: number, toMs: number): this {
    this.running.push({ merchant: SHOP, atMs: fromMs, running: false }, { merchant: SHOP, atMs: toMs, running: true });
    return this;
  }

  check(overrides: Partial<DeskCheckInput> = {}): string[] {
    return checkDesks({
      desks: new Map([[SHOP, AGENTS]]),
      notices: this.notices,
      namedGroup: () => undefined,
      presence: [...this.presence].sort((a, b) => a.atMs - b.atMs),
      running: this.running,
      excluded: new Set(),
      graceMs: 5_000,
      graceSlackMs: 1_000,
      assignWithinMs: 2_000,
      orderToleranceMs: 500,
      endMs: 100_000,
      ...overrides,
    }).map((violation) => violation.kind);
  }
}

/** A good day: queueing, pulls in order, a release inside the rules, a sticky return, closes. */
function goodDay(): Run {
  return (
    new Run()
      .assigned('c1', 'ann', 1_000)
      .assigned('c2', 'ann', 1_100)
      .assigned('c3', 'bob', 1_200)
      // Everyone is full: c4 and c5 wait, in that order.
      .queued('c4', 2_000)
      .queued('c5', 2_500)
      // Ann closes c1: the head of the queue, c4, is pulled in the same decision (its message
      // became durable a little earlier than the close's: within the tolerance).
      .assigned('c4', 'ann', 3_000)
      .closed('c1', 'ann', 3_010)
      // Bob leaves; after the grace period c3 goes back to the head of the queue (ahead of c5) and
      // waits: nobody can take it.
      .gone('bob', 4_000)
      .released('c3', 'bob', 9_200)
      // Ann closes c2: the released c3 first.
      .closed('c2', 'ann', 10_000)
      .assigned('c3', 'ann', 10_000)
      // Bob is back: c5 at last.
      .online('bob', 11_000)
      .assigned('c5', 'bob', 11_050)
      // c1 comes back to Ann by the sticky rule... once she has room.
      .closed('c4', 'ann', 12_000)
      .assigned('c1', 'ann', 12_500, { consultation: 'c1-again', sticky: true })
      .closed('c3', undefined, 20_000)
      .closed('c5', 'bob', 20_000)
      .closed('c1', 'ann', 21_000, 'c1-again')
  );
}

describe('the desk checks', () => {
  it('stay quiet on a desk that keeps its rules', () => {
    expect(goodDay().check()).toEqual([]);
  });

  it('desk-over-capacity: an agent holding more than its capacity', () => {
    const run = new Run().assigned('c1', 'bob', 1_000).assigned('c2', 'bob', 2_000);
    expect(run.check()).toEqual(['desk-over-capacity']);
  });

  it('desk-over-capacity: not for the notices of one decision landing out of order', () => {
    const run = new Run().assigned('c1', 'bob', 1_000).assigned('c2', 'bob', 2_000).closed('c1', 'bob', 2_300);
    expect(run.check()).toEqual([]);
  });

  it('desk-grace: a consultation kept past the grace period after the agent left', () => {
    // Ann is busy: the released consultation waits, as it may.
    const run = new Run().busy('ann', 0).assigned('c1', 'bob', 1_000).gone('bob', 2_000).released('c1', 'bob', 9_000);
    expect(run.check()).toEqual(['desk-grace']);
  });

  it('desk-grace: the grace period starts over when the desk comes back (a restart, a move)', () => {
    const run = new Run().busy('ann', 0).assigned('c1', 'bob', 1_000).gone('bob', 2_000).down(4_000, 6_000).released('c1', 'bob', 11_500);
    expect(run.check()).toEqual([]);
    expect(run.check({ endMs: 13_000 })).toEqual([]);
    const never = new Run().busy('ann', 0).assigned('c1', 'bob', 1_000).gone('bob', 2_000).down(4_000, 6_000);
    expect(never.check()).toEqual(['desk-grace']);
  });

  it('desk-fifo: a later customer taken while an earlier one of the group waits', () => {
    const run = new Run().assigned('c1', 'bob', 500).assigned('c2', 'ann', 600).assigned('c3', 'ann', 700).queued('c4', 1_000).queued('c5', 2_000).closed('c1', 'bob', 3_000).assigned('c5', 'bob', 3_000);
    expect(run.check()).toContain('desk-fifo');
  });

  it('desk-fifo: customers queued by one decision may have their messages durable in either order', () => {
    // Desk seed 56 with SWIM: after a disk fault, four customers' messages became durable in one ms
    // and the desk queued them in that order; the later ones' `queued` messages became durable 2 ms
    // before the first one's. Serving the desk's head first passes nobody.
    const tied = new Run().assigned('c1', 'bob', 500).assigned('c2', 'ann', 600).assigned('c3', 'ann', 700).queued('c5', 1_000).queued('c4', 1_002).closed('c1', 'bob', 3_000).assigned('c4', 'bob', 3_000);
    expect(tied.check()).toEqual([]);
    // Beyond the tolerance the order is the messages' own.
    const apart = new Run().assigned('c1', 'bob', 500).assigned('c2', 'ann', 600).assigned('c3', 'ann', 700).queued('c5', 1_000).queued('c4', 1_600).closed('c1', 'bob', 3_000).assigned('c4', 'bob', 3_000);
    expect(apart.check()).toEqual(['desk-fifo']);
  });

  it('desk-fifo: a sticky assignment may pass, and so may a released one', () => {
    const sticky = new Run()
      .assigned('c1', 'bob', 500)
      .assigned('c2', 'ann', 600)
      .assigned('c3', 'ann', 700)
      .queued('c4', 1_000)
      .closed('c1', 'bob', 3_000)
      .assigned('c5', 'bob', 3_000, { sticky: true })
      .closed('c5', 'bob', 3_500)
      .assigned('c4', 'bob', 3_500);
    expect(sticky.check()).toEqual([]);
  });

  it('desk-idle-capacity: a customer left waiting while an agent of its group has room', () => {
    const run = new Run().busy('bob', 0).assigned('c1', 'ann', 500).assigned('c2', 'ann', 600).queued('c3', 1_000).online('bob', 2_000).assigned('c3', 'bob', 6_000);
    expect(run.check()).toEqual(['desk-idle-capacity']);
    const prompt = new Run().busy('bob', 0).assigned('c1', 'ann', 500).assigned('c2', 'ann', 600).queued('c3', 1_000).online('bob', 2_000).assigned('c3', 'bob', 2_100);
    expect(prompt.check()).toEqual([]);
  });

  it('desk-idle-capacity: a consultation transferred to another group waits in that group once released', () => {
    // Ann serves sales, Cy support. The transfer to support, which Cy takes at once, names its
    // new group; released from Cy, c1 waits in support, where nobody is free: Ann's room in sales
    // does not count. Once Cy is back and free, c1 must be taken within the bound.
    const desks = new Map([[SHOP, [{ id: 'ann', capacity: 1, groups: ['sales'] }, { id: 'cy', capacity: 1, groups: ['support'] }]]]);
    const released = () =>
      new Run()
        .online('cy', 0)
        .assigned('c1', 'ann', 1_000)
        .notice('c1', 2_000, { type: 'transferred', consultation: 'c1', from: 'ann', agent: 'cy', name: 'cy', group: 'support', note: 'over to you' })
        .gone('cy', 3_000)
        .released('c1', 'cy', 8_000);
    expect(released().assigned('c1', 'cy', 20_000).online('cy', 19_900).check({ desks })).toEqual([]);
    expect(released().online('cy', 10_000).assigned('c1', 'cy', 14_000).check({ desks })).toEqual(['desk-idle-capacity']);
  });

  it('desk-open-span: a second consultation while one is open, and a change after the close', () => {
    const twice = new Run().assigned('c1', 'ann', 1_000).assigned('c1', 'bob', 2_000, { consultation: 'c1-second' });
    expect(twice.check()).toEqual(['desk-open-span']);
    const afterClose = new Run().assigned('c1', 'ann', 1_000).closed('c1', 'ann', 2_000).released('c1', 'ann', 3_000);
    expect(afterClose.check()).toEqual(['desk-open-span']);
  });
});

describe('system messages in the history', () => {
  it('are checked for order, kept as the desk record, and must reach the customer', () => {
    const history = new History(0, (merchant) => merchant === SHOP);
    history.registerDevice('c1/d0', { user: 'c1', role: 'customer' });
    history.registerDevice('ann/d0', { user: 'ann', role: 'agent', merchant: SHOP });
    const assigned: DeskNotice = { type: 'assigned', consultation: 'k1', agent: 'ann', name: 'Ann', sticky: false };
    history.acked(history.sendCalled({ device: 'c1/d0', conv: `${SHOP}:c1`, from: 'c1', cmid: 'm1', body: 'hello', atMs: 0, inCell: true, duringPartition: false, senderOpen: true, cellId: 'cell-0000', group: 'sales' }), 1, 5);
    history.delivered('ann/d0', { conv: `${SHOP}:c1`, seq: 1, from: 'c1', cmid: 'm1', body: 'hello' }, 6);
    history.delivered('ann/d0', { conv: `${SHOP}:c1`, seq: 2, from: 'desk', cmid: 'desk-1', body: 'Ann is here to help.', role: 'system', event: assigned, ts: 7 }, 8);
    expect(history.violationTotal).toBe(0);
    expect(history.noticesByConversation().get(`${SHOP}:c1`)).toEqual([{ conv: `${SHOP}:c1`, seq: 2, cmid: 'desk-1', ts: 7, event: assigned }]);
    expect(history.sendsOf(`${SHOP}:c1`, 'c1')).toEqual([{ seq: 1, group: 'sales', inCell: true }]);
    // The customer's device needs both; an agent at a desk is judged by the desk checks.
    expect(history.checkLost()).toBe(2);
    expect(history.violationExamples().map((violation) => violation.message)).toEqual([
      expect.stringContaining('shop:c1 seq 1'),
      expect.stringContaining('shop:c1 seq 2 (system message assigned) never reached c1/d0'),
    ]);
  });
});
