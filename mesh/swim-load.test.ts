import { describe, expect, it } from 'vitest';
import type { PeerId, RequestOptions } from './transport.js';
import { retransmitLimit } from './dissemination.js';
import { LAN_MEMBERSHIP_OPTIONS } from './membership-config.js';
import { MembershipProtocol } from './membership-wire.js';
import { MeshHarness } from '../testing/mesh-harness.js';

describe('dissemination bound', () => {
  it('sends each update λ·⌈log10(n + 1)⌉ times', () => {
    expect(retransmitLimit(1)).toBe(4);
    expect(retransmitLimit(9)).toBe(4);
    expect(retransmitLimit(10)).toBe(8);
    expect(retransmitLimit(999)).toBe(12);
    expect(retransmitLimit(1_000)).toBe(16);
  });
});

/** A converged cluster of `size` cells, each joined through one of the first few. */
async function largeCluster(seed: number, size: number): Promise<MeshHarness> {
  const harness = new MeshHarness({ seed, latencyMs: [1, 3] });
  await harness.addCell('c0');
  for (let index = 1; index < size; index++) await harness.addCell(`c${index}`, { bootstrap: [`c${index % 4 === 0 ? 0 : Math.min(index - 1, 3)}`] });
  const settled = (): boolean =>
    harness.running().every((cell) => {
      if (cell.mesh.directory.size !== size) return false;
      for (const entry of cell.mesh.directory.values()) if (entry.liveness !== 'alive') return false;
      return true;
    });
  for (let waitedMs = 0; !settled(); waitedMs += 1_000) {
    if (waitedMs > 60_000) throw new Error('the cluster did not converge within 60 s of virtual time');
    await harness.run(1_000);
  }
  await harness.run(5_000);
  return harness;
}

/** Counts the membership requests (pings, ping-reqs) each running cell sends from now on. */
function countPings(harness: MeshHarness): Map<string, number> {
  const counts = new Map<string, number>();
  for (const cell of harness.running()) {
    counts.set(cell.cellId, 0);
    const transport = cell.transport;
    const request = transport.request.bind(transport);
    transport.request = (peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions): Promise<Uint8Array> => {
      if (protocol === MembershipProtocol.ping || protocol === MembershipProtocol.pingReq) counts.set(cell.cellId, (counts.get(cell.cellId) ?? 0) + 1);
      return request(peer, protocol, data, options);
    };
  }
  return counts;
}

describe('membership load does not grow with the cluster (LAN preset, memory network, virtual clock)', () => {
  it('a quiet cell sends one ping per probe interval at 20 and at 200 cells, without false suspicions, and failures are still detected', { timeout: 300_000 }, async () => {
    const options = LAN_MEMBERSHIP_OPTIONS;
    const windowMs = 20_000;
    const perSecond = async (harness: MeshHarness): Promise<number[]> => {
      const counts = countPings(harness);
      await harness.run(windowMs);
      return [...counts.values()].map((count) => count / (windowMs / 1_000));
    };
    const small = await largeCluster(12, 20);
    const smallRates = await perSecond(small);
    const size = 200;
    const harness = await largeCluster(11, size);
    const rates = await perSecond(harness);
    // One ping per probe interval, a few more when a round's ping waits for its answer: the same at both sizes.
    const expected = 1_000 / options.probeIntervalMs;
    for (const rate of [...smallRates, ...rates]) {
      expect(rate).toBeGreaterThanOrEqual(expected * 0.9);
      expect(rate).toBeLessThanOrEqual(expected * 1.1);
    }
    for (const cell of harness.running()) {
      for (const entry of cell.mesh.directory.values()) expect(entry.liveness).toBe('alive');
    }

    // A crash (connections reset) is declared dead everywhere as fast as in a small cluster.
    await harness.crash('c57');
    const crashDeadMs = await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c57')?.liveness === 'dead'), 10_000);
    expect(crashDeadMs).toBeLessThan(5_000);

    // A cell that goes silent without a disconnect (a cut cable) is pinged by some cell within
    // about a probe round, whatever the size, suspected once its direct and indirect pings time
    // out, confirmed by the cells that hear the claim once theirs time out too, and declared dead
    // the suspicion's minimum after it began (about 5.5 s here; with heartbeats stretched to 2 s
    // at this size, it was 14 s).
    const silent = 'c123';
    const rest = harness.running().filter((cell) => cell.cellId !== silent);
    harness.network.partition([MeshHarness.peerOf(silent)], rest.map((cell) => cell.peerId));
    const boundMs = 4 * options.probeIntervalMs + 3 * options.probeTimeoutMs + options.suspicionMaxMs;
    const silentDeadMs = await harness.runUntil(() => rest.every((cell) => cell.mesh.directory.get(silent)?.liveness === 'dead'), boundMs);
    expect(silentDeadMs).toBeLessThan(options.suspicionMinMs + 4 * options.probeIntervalMs + 6 * options.probeTimeoutMs);
  });
});
