import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../platform/random.js';
import { DeskError, MerchantDesk, type AgentStatus, type DeskEvent } from './merchant-desk.js';

const assigned = (events: readonly DeskEvent[]): string[] => events.flatMap((event) => (event.kind === 'assigned' ? [`${event.consultation}->${event.agent}${event.sticky ? ' (sticky)' : ''}`] : []));

function deskWith(agents: ReadonlyArray<{ id: string; capacity: number; groups?: string[] }>, settings = {}): MerchantDesk {
  const desk = new MerchantDesk(settings);
  for (const agent of agents) {
    desk.upsertAgent({ id: agent.id, capacity: agent.capacity, groups: agent.groups ?? ['sales'] }, 0);
    desk.setStatus(agent.id, 'online', 0);
  }
  return desk;
}

describe('MerchantDesk', () => {
  it('gives each consultation to the least-loaded agent of the group, the longest idle first among equals', () => {
    const desk = deskWith([
      { id: 'ann', capacity: 2 },
      { id: 'bob', capacity: 4 },
    ]);
    // Loads: ann 0/2, bob 0/4 -> both 0; ann and bob never assigned: the id decides (ann).
    expect(assigned(desk.open('c1', 'u1', 'sales', 10))).toEqual(['c1->ann']);
    // ann 1/2 = 0.5, bob 0 -> bob.
    expect(assigned(desk.open('c2', 'u2', 'sales', 20))).toEqual(['c2->bob']);
    // ann 0.5, bob 0.25 -> bob.
    expect(assigned(desk.open('c3', 'u3', 'sales', 30))).toEqual(['c3->bob']);
    // ann 0.5, bob 0.5: ann was idle since 10, bob since 30 -> ann.
    expect(assigned(desk.open('c4', 'u4', 'sales', 40))).toEqual(['c4->ann']);
    expect(desk.agent('ann')?.open).toBe(2);
    expect(desk.agent('bob')?.open).toBe(2);
  });

  it('queues first come first served, tells positions and an estimated wait, and pulls the longest waiting when capacity frees', () => {
    const desk = deskWith([{ id: 'ann', capacity: 1 }], { initialHandlingMs: 60_000 });
    desk.open('c1', 'u1', 'sales', 0);
    expect(desk.open('c2', 'u2', 'sales', 1)).toEqual([{ kind: 'queued', consultation: 'c2', group: 'sales', position: 1 }]);
    expect(desk.open('c3', 'u3', 'sales', 2)).toEqual([{ kind: 'queued', consultation: 'c3', group: 'sales', position: 2 }]);
    expect(desk.position('c3')).toBe(2);
    // Two slots ahead on one online slot, a minute each.
    expect(desk.estimatedWaitMs('c3')).toBe(120_000);
    expect(assigned(desk.close('c1', 30_000))).toEqual(['c2->ann']);
    expect(desk.position('c3')).toBe(1);
    // The handling time moved towards the 30 s c1 took.
    expect(desk.estimatedWaitMs('c3')).toBe(54_000);
    expect(desk.queueLength('sales')).toBe(1);
  });

  it('sends a returning customer to the agent who served it last, within the window and only if that agent can take it', () => {
    const desk = deskWith([{ id: 'ann', capacity: 2 }, { id: 'bob', capacity: 1 }], { stickyWindowMs: 1_000 });
    desk.open('c1', 'alice', 'sales', 0); // ann (equal loads, equal idle: the id)
    desk.open('x', 'xavier', 'sales', 150); // bob (load 0 against ann's 0.5)
    desk.close('c1', 100);
    desk.open('y', 'yves', 'sales', 160); // ann (bob is full)
    desk.close('x', 170);
    // The group's rule would pick bob (load 0 against 0.5): alice goes back to ann.
    expect(assigned(desk.open('c2', 'alice', 'sales', 500))).toEqual(['c2->ann (sticky)']);
    desk.close('c2', 600);
    // Past the window: the group's rule again.
    expect(assigned(desk.open('c3', 'alice', 'sales', 2_000))).toEqual(['c3->bob']);
    desk.close('c3', 2_100);
    // Within the window, but bob is full now: not sticky.
    expect(assigned(desk.open('fill', 'fred', 'sales', 2_150))).toEqual(['fill->bob']);
    expect(assigned(desk.open('c4', 'alice', 'sales', 2_200))).toEqual(['c4->ann']);
  });

  it('serves an agent of several groups from the queue whose head has waited longest', () => {
    const desk = deskWith([{ id: 'ann', capacity: 1, groups: ['sales', 'support'] }]);
    desk.open('busy', 'u0', 'sales', 0);
    desk.open('b1', 'u1', 'support', 10);
    desk.open('a1', 'u2', 'sales', 20);
    desk.open('b2', 'u3', 'support', 30);
    expect(assigned(desk.close('busy', 40))).toEqual(['b1->ann']);
    expect(assigned(desk.close('b1', 50))).toEqual(['a1->ann']);
    expect(assigned(desk.close('a1', 60))).toEqual(['b2->ann']);
  });

  it('gives a busy agent nothing new, and pulls from the queue when it goes online or its capacity grows', () => {
    const desk = deskWith([{ id: 'ann', capacity: 1 }]);
    desk.setStatus('ann', 'busy', 0);
    expect(desk.open('c1', 'u1', 'sales', 1)[0]?.kind).toBe('queued');
    desk.open('c2', 'u2', 'sales', 2);
    expect(assigned(desk.setStatus('ann', 'online', 3))).toEqual(['c1->ann']);
    expect(assigned(desk.upsertAgent({ id: 'ann', capacity: 2, groups: ['sales'] }, 4))).toEqual(['c2->ann']);
    expect(desk.queueLength('sales')).toBe(0);
  });

  it('puts a released agent\'s consultations back at the head of the queue, in the order they arrived, for the others to take', () => {
    const desk = deskWith([{ id: 'ann', capacity: 2 }, { id: 'bob', capacity: 1 }]);
    desk.open('c1', 'u1', 'sales', 1); // ann
    desk.open('c2', 'u2', 'sales', 2); // bob
    desk.open('c3', 'u3', 'sales', 3); // ann
    desk.open('c4', 'u4', 'sales', 4); // queued
    expect(desk.consultation('c4')?.state).toBe('waiting');
    const events = desk.releaseAgent('ann', 10);
    expect(events.filter((event) => event.kind === 'queued').map((event) => event.consultation)).toEqual(['c1', 'c3']);
    expect(desk.agent('ann')?.status).toBe('offline');
    expect([desk.position('c1'), desk.position('c3'), desk.position('c4')]).toEqual([1, 2, 3]);
    expect(assigned(desk.close('c2', 20))).toEqual(['c1->bob']);
  });

  it('removes an agent: its consultations go to whoever is free, the rest wait first in line', () => {
    const desk = deskWith([{ id: 'ann', capacity: 2 }, { id: 'bob', capacity: 1 }]);
    desk.open('c1', 'u1', 'sales', 1);
    desk.open('c2', 'u2', 'sales', 2);
    desk.open('c3', 'u3', 'sales', 3);
    expect(assigned(desk.removeAgent('ann', 5))).toEqual([]);
    expect(desk.agent('ann')).toBeUndefined();
    expect(desk.position('c1')).toBe(1);
    expect(assigned(desk.close('c2', 6))).toEqual(['c1->bob']);
  });

  it('transfers to an agent who can take it, or to a group, freeing the first agent for the queue', () => {
    const desk = deskWith([
      { id: 'ann', capacity: 1, groups: ['sales'] },
      { id: 'bob', capacity: 1, groups: ['sales'] },
      { id: 'sam', capacity: 1, groups: ['support'] },
    ]);
    desk.open('c1', 'u1', 'sales', 1); // ann
    desk.open('c2', 'u2', 'sales', 2); // bob
    desk.open('c3', 'u3', 'sales', 3); // queued
    expect(() => desk.transferToAgent('c1', 'bob', 4)).toThrow(DeskError);
    expect(assigned(desk.transferToGroup('c1', 'support', 5))).toEqual(['c1->sam', 'c3->ann']);
    desk.close('c3', 6);
    expect(assigned(desk.transferToAgent('c2', 'ann', 7))).toEqual(['c2->ann']);
    expect(desk.agent('bob')?.open).toBe(0);
  });

  it('refuses what it cannot do with a code, and changes nothing', () => {
    const desk = deskWith([{ id: 'ann', capacity: 1 }]);
    expect(() => desk.upsertAgent({ id: 'bob', capacity: 0, groups: ['sales'] }, 0)).toThrow(expect.objectContaining({ code: 'BAD_AGENT' }));
    expect(() => desk.upsertAgent({ id: 'bob', capacity: 1, groups: [] }, 0)).toThrow(expect.objectContaining({ code: 'BAD_AGENT' }));
    expect(() => desk.setStatus('nobody', 'online', 0)).toThrow(expect.objectContaining({ code: 'AGENT_UNKNOWN' }));
    expect(() => desk.close('nothing', 0)).toThrow(expect.objectContaining({ code: 'CONSULTATION_UNKNOWN' }));
    desk.open('c1', 'u1', 'sales', 0);
    expect(() => desk.open('c1', 'u1', 'sales', 0)).toThrow(expect.objectContaining({ code: 'CONSULTATION_EXISTS' }));
    expect(desk.agent('ann')?.open).toBe(1);
  });

  it('holds its rules through random churn: nobody over capacity, nobody waits while someone of the group is free, queues served in order', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = new SeededRandom(seed);
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random.next() * items.length)] as T;
      const groups = ['a', 'b', 'c'];
      const desk = new MerchantDesk({ stickyWindowMs: 50 });
      const agents = Array.from({ length: 12 }, (_, index) => ({ id: `ag${index}`, capacity: 1 + (index % 4), groups: [groups[index % 3] as string, ...(index % 5 === 0 ? [groups[(index + 1) % 3] as string] : [])] }));
      for (const agent of agents) desk.upsertAgent(agent, 0);
      const open = new Map<string, string>(); // consultation -> group
      const enqueuedOrder = new Map<string, string[]>(); // group -> ids in the order queued
      let serial = 0;
      let assignments = 0;
      let servedFromQueue = 0;
      for (let step = 1; step <= 3_000; step++) {
        const roll = random.next();
        let events: DeskEvent[] = [];
        if (roll < 0.45) {
          const id = `k${serial++}`;
          const group = pick(groups);
          open.set(id, group);
          events = desk.open(id, `cust${Math.floor(random.next() * 40)}`, group, step);
        } else if (roll < 0.8 && open.size > 0) {
          const id = pick([...open.keys()]);
          open.delete(id);
          events = desk.close(id, step);
        } else if (roll < 0.95) {
          events = desk.setStatus(pick(agents).id, pick<AgentStatus>(['online', 'online', 'busy', 'away', 'offline']), step);
        } else {
          events = desk.releaseAgent(pick(agents).id, step);
        }
        for (const event of events) {
          if (event.kind === 'assigned') {
            assignments++;
            const group = desk.consultation(event.consultation)?.group as string;
            const order = enqueuedOrder.get(group) ?? [];
            const at = order.indexOf(event.consultation);
            // Served from the queue: nobody queued earlier in the group is still waiting behind it.
            if (at >= 0) {
              servedFromQueue++;
              for (const earlier of order.slice(0, at)) expect(desk.consultation(earlier)?.state, `${earlier} before ${event.consultation}`).not.toBe('waiting');
              order.splice(at, 1);
            }
          } else if (event.kind === 'queued') {
            // The queue as it stands (closed and assigned ones gone), with this one at the position the desk told.
            const order = (enqueuedOrder.get(event.group) ?? []).filter((id) => id !== event.consultation && desk.consultation(id)?.state === 'waiting');
            order.splice(event.position - 1, 0, event.consultation);
            enqueuedOrder.set(event.group, order);
          }
        }
        for (const agent of agents) {
          const state = desk.agent(agent.id)!;
          expect(state.open).toBeLessThanOrEqual(state.capacity);
        }
        for (const group of groups) {
          if (desk.queueLength(group) === 0) continue;
          const free = agents.filter((agent) => agent.groups.includes(group)).map((agent) => desk.agent(agent.id)!).filter((agent) => agent.status === 'online' && agent.open < agent.capacity);
          expect(free.map((agent) => agent.id), `someone of ${group} is free while ${desk.queueLength(group)} wait`).toEqual([]);
        }
      }
      // The churn did exercise the rules: many assignments, many of them from a queue.
      expect(assignments).toBeGreaterThan(200);
      expect(servedFromQueue).toBeGreaterThan(50);
    }
  });
});
