import { describe, expect, it } from 'vitest';
import { describeMeshTransportCompliance } from '../mesh/transport-compliance.js';
import { MemoryNetwork } from '../mesh/memory-network.js';
import { SeededRandom } from '../platform/random.js';
import { SimClock } from './sim-clock.js';
import { SimNetwork } from './sim-network.js';
import { ManualClock } from '../platform/manual-clock.js';

// The simulator's network and clock keep the transport contract: the suite libp2p and
// MemoryNetwork pass runs on them too.
describeMeshTransportCompliance('simulator network on the simulator clock', async (count) => {
  const clock = new SimClock();
  const network = new SimNetwork({ clock, random: new SeededRandom(count), latencyMs: (_from, _to, draw) => 1 + Math.floor(draw.next() * 5) });
  const transports = Array.from({ length: count }, (_, index) => network.createTransport(`peer-${index}`));
  for (const transport of transports) await transport.start();
  return {
    transports,
    pause: async (ms) => {
      clock.advance(ms);
      await new Promise((resolve) => setImmediate(resolve));
    },
    teardown: async () => {
      for (const transport of transports) await transport.stop();
    },
  };
});

describe('SimNetwork', () => {
  it('blocks exactly the links MemoryNetwork blocks', () => {
    const clock = new ManualClock();
    const networks = [new MemoryNetwork({ clock, random: new SeededRandom(1) }), new SimNetwork({ clock, random: new SeededRandom(1) })];
    const peers = ['a', 'b', 'c', 'd'];
    const views = networks.map((network) => {
      network.partition(['a'], ['b', 'c']);
      network.blockOneWay(['d'], ['a', 'd']);
      const blocked = peers.flatMap((from) => peers.filter((to) => network.isBlocked(from, to)).map((to) => `${from}>${to}`));
      network.heal();
      const afterHeal = peers.some((from) => peers.some((to) => network.isBlocked(from, to)));
      return { blocked, afterHeal };
    });
    expect(views[1]).toEqual(views[0]);
    expect(views[0]!.blocked).toEqual(['a>b', 'a>c', 'b>a', 'c>a', 'd>a']);
  });
});

describe('SimClock', () => {
  it('fires timers in the order ManualClock does: by due time, ties in the order they were set', () => {
    const orders = [new ManualClock(0), new SimClock(0)].map((clock) => {
      const fired: string[] = [];
      const random = new SeededRandom(3);
      const handles = [];
      for (let index = 0; index < 500; index++) {
        const delayMs = Math.floor(random.next() * 50);
        handles.push(clock.setTimer(delayMs, () => {
          fired.push(`${index}@${clock.now()}`);
          if (index % 7 === 0) clock.setTimer(index % 3, () => fired.push(`child-${index}@${clock.now()}`));
        }));
      }
      for (let index = 0; index < 500; index += 11) handles[index]!.cancel();
      clock.advance(25);
      clock.advanceTo(100);
      return fired;
    });
    expect(orders[1]).toEqual(orders[0]);
    expect(orders[0]!.length).toBeGreaterThan(450);
  });
});
