import { describe, expect, it } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { MemoryNetwork } from './memory-network.js';
import { describeMeshTransportCompliance } from '../testing/transport-compliance.js';

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

  it('duplication delivers copies twice and runs a request handler twice; reordering lets later deliveries overtake', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(3), latencyMs: () => 1 });
    const [a, b] = [network.createTransport('a'), network.createTransport('b')];
    await a.start();
    await b.start();
    await a.dial(b.addresses()[0]!);
    const heard: number[] = [];
    b.subscribe('t', (message) => heard.push(message.data[0]!));
    let served = 0;
    b.handle('/echo', async (_from, data) => {
      served++;
      return data;
    });

    network.setFaults({ lossRate: 0, duplicateRate: 1 });
    await a.publish('t', Uint8Array.of(1));
    const answer = a.request('b', '/echo', Uint8Array.of(9), { timeoutMs: 1_000 });
    let answered = false;
    const settled = (): void => {
      answered = true;
    };
    void answer.then(settled, settled);
    // One turn per step lets the handler's promise send the answer back before time moves on.
    for (let step = 0; !answered; step++) {
      if (step === 5) throw new Error('the duplicated request was not answered within 5 ms');
      clock.advance(1);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(heard).toEqual([1, 1]);
    expect(served).toBe(2);
    expect([...(await answer)]).toEqual([9]);

    heard.length = 0;
    network.setFaults({ lossRate: 0, reorderRate: 0.5, reorderDelayMs: 50 });
    for (let value = 0; value < 40; value++) await a.publish('t', Uint8Array.of(value));
    clock.advance(100);
    expect([...heard].sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, value) => value));
    expect(heard).not.toEqual([...heard].sort((x, y) => x - y));
  });
});

describe('memory network deliveries', () => {
  it.each([false, true])('gives each subscriber its own copy of a message unless bytes are shared (shareDeliveredBytes %s)', async (shareDeliveredBytes) => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(7), shareDeliveredBytes });
    const [a, b, c] = [network.createTransport('a'), network.createTransport('b'), network.createTransport('c')];
    for (const transport of [a, b, c]) await transport.start();
    await a.dial(b.addresses()[0]!);
    await b.dial(c.addresses()[0]!);
    const received: Uint8Array[] = [];
    b.subscribe('t', (message) => received.push(message.data));
    c.subscribe('t', (message) => received.push(message.data));
    const published = new TextEncoder().encode('hello');
    await a.publish('t', published);
    clock.advance(5);
    expect(received.map((data) => new TextDecoder().decode(data))).toEqual(['hello', 'hello']);
    expect(received[0]).not.toBe(published);
    expect(received[0] === received[1]).toBe(shareDeliveredBytes);
  });
});
