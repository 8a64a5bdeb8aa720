import { describe, expect, it } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { MemoryNetwork } from './memory-network.js';
import { describeMeshTransportCompliance } from './transport-compliance.js';

// The simulator's network keeps the same contract as libp2p: the one suite runs on both.
describeMeshTransportCompliance('memory network on a virtual clock', async (count) => {
  const clock = new ManualClock();
  const random = new SeededRandom(count);
  const network = new MemoryNetwork({ clock, random, latencyMs: (_from, _to, draw) => 1 + Math.floor(draw.next() * 5) });
  const transports = Array.from({ length: count }, (_, index) => network.createTransport(`peer-${index}`));
  for (const transport of transports) await transport.start();
  return {
    transports,
    pause: async (ms) => {
      clock.advance(ms);
      // Let the promise callbacks of the deliveries that just ran settle.
      await new Promise((resolve) => setImmediate(resolve));
    },
    teardown: async () => {
      for (const transport of transports) await transport.stop();
    },
  };
});

describe('memory network faults', () => {
  it('a one-way block drops traffic in one direction only, and heal lifts it', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(7) });
    const [a, b] = [network.createTransport('a'), network.createTransport('b')];
    await a.start();
    await b.start();
    await a.dial(b.addresses()[0]!);
    const heard = { a: [] as string[], b: [] as string[] };
    a.subscribe('t', (message) => heard.a.push(new TextDecoder().decode(message.data)));
    b.subscribe('t', (message) => heard.b.push(new TextDecoder().decode(message.data)));
    network.blockOneWay(['a'], ['b']);
    await a.publish('t', new TextEncoder().encode('from a'));
    await b.publish('t', new TextEncoder().encode('from b'));
    clock.advance(10);
    expect(heard).toEqual({ a: ['from b'], b: [] });
    network.heal();
    await a.publish('t', new TextEncoder().encode('from a again'));
    clock.advance(10);
    expect(heard.b).toEqual(['from a again']);
  });
});
