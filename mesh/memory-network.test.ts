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
