import { describe, expect, it } from 'vitest';
import type { MeshMessage, PeerId } from './transport.js';
import { heartbeatIntervalMs } from './detector-timing.js';
import { LAN_MEMBERSHIP_OPTIONS, LOCAL_MEMBERSHIP_OPTIONS, membershipOptions, WAN_MEMBERSHIP_OPTIONS } from './membership-config.js';
import { MembershipTopic } from './membership-wire.js';
import { MeshHarness } from '../testing/mesh-harness.js';

describe('heartbeat interval under the receive budget', () => {
  it('keeps every preset at its own interval up to 51 cells, then stretches it to (n - 1) / budget', () => {
    for (const options of [LAN_MEMBERSHIP_OPTIONS, WAN_MEMBERSHIP_OPTIONS, LOCAL_MEMBERSHIP_OPTIONS]) {
      for (const cells of [1, 2, 5, 30, 51]) expect(heartbeatIntervalMs(cells, options)).toBe(options.heartbeatIntervalMs);
      expect(heartbeatIntervalMs(52, options)).toBeGreaterThan(options.heartbeatIntervalMs);
    }
    expect(heartbeatIntervalMs(200, LAN_MEMBERSHIP_OPTIONS)).toBe(1_990);
    expect(heartbeatIntervalMs(1_000, LAN_MEMBERSHIP_OPTIONS)).toBe(9_990);
    // Each cell then receives (n - 1) / interval heartbeats a second: at most the budget.
    for (const cells of [52, 200, 1_000, 4_096]) {
      expect(((cells - 1) * 1_000) / heartbeatIntervalMs(cells, LAN_MEMBERSHIP_OPTIONS)).toBeLessThanOrEqual(LAN_MEMBERSHIP_OPTIONS.heartbeatReceiveBudgetPerSecond);
    }
    const fixed = membershipOptions({ heartbeatReceiveBudgetPerSecond: 0 });
    expect(heartbeatIntervalMs(1_000, fixed)).toBe(500);
  });
});

/** A converged 200-cell cluster, each cell joined through one of the first few. */
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
  // Let every cell's heartbeat interval catch up with the full cluster.
  await harness.run(5_000);
  return harness;
}

/** Counts the heartbeats each running cell receives from now on. */
function countHeartbeats(harness: MeshHarness): Map<string, number> {
  const counts = new Map<string, number>();
  for (const cell of harness.running()) {
    counts.set(cell.cellId, 0);
    const transport = cell.transport;
    const receive = transport.receive.bind(transport);
    transport.receive = (message: MeshMessage, seen: Set<PeerId>): void => {
      if (message.topic === MembershipTopic.heartbeat) counts.set(cell.cellId, (counts.get(cell.cellId) ?? 0) + 1);
      receive(message, seen);
    };
  }
  return counts;
}

describe('membership load in a 200-cell cluster (LAN preset, memory network, virtual clock)', () => {
  it('keeps heartbeats received per cell within the budget, without false suspicions, and still detects failures', { timeout: 300_000 }, async () => {
    const size = 200;
    const harness = await largeCluster(11, size);
    const budget = LAN_MEMBERSHIP_OPTIONS.heartbeatReceiveBudgetPerSecond;
    for (const cell of harness.running()) expect(cell.mesh.heartbeatIntervalMs()).toBe(heartbeatIntervalMs(size, LAN_MEMBERSHIP_OPTIONS));

    // Steady state: the budget holds on every cell (a fixed 500 ms would be 398 a second), and
    // the stretched silence allowance raises no suspicion.
    const counts = countHeartbeats(harness);
    const windowMs = 20_000;
    await harness.run(windowMs);
    const perSecond = [...counts.values()].map((count) => count / (windowMs / 1_000));
    expect(Math.max(...perSecond)).toBeLessThanOrEqual(budget);
    expect(Math.min(...perSecond)).toBeGreaterThan(budget * 0.8);
    for (const cell of harness.running()) {
      for (const entry of cell.mesh.directory.values()) expect(entry.liveness).toBe('alive');
    }

    // A crash (connections reset) is declared dead everywhere as fast as in a small cluster.
    await harness.crash('c57');
    const crashDeadMs = await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c57')?.liveness === 'dead'), 10_000);
    expect(crashDeadMs).toBeLessThan(5_000);

    // A cell that goes silent without a disconnect (a cut cable) is declared dead within the
    // stretched bound: f x suspectAfterMs + a probe round + direct and indirect pings + the
    // longest suspicion, with f = interval / heartbeatIntervalMs (4 at 200 cells).
    const silent = 'c123';
    const rest = harness.running().filter((cell) => cell.cellId !== silent);
    harness.network.partition([MeshHarness.peerOf(silent)], rest.map((cell) => cell.peerId));
    const options = LAN_MEMBERSHIP_OPTIONS;
    const stretch = heartbeatIntervalMs(size, options) / options.heartbeatIntervalMs;
    const boundMs = stretch * options.suspectAfterMs + options.probeIntervalMs + 3 * options.probeTimeoutMs + options.suspicionMaxMs;
    const silentDeadMs = await harness.runUntil(() => rest.every((cell) => cell.mesh.directory.get(silent)?.liveness === 'dead'), boundMs);
    expect(silentDeadMs).toBeGreaterThan(options.suspectAfterMs);
    expect(silentDeadMs).toBeLessThan(boundMs);
  });
});
