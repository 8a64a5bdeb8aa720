import { describe, expect, it } from 'vitest';
import type { Liveness } from './directory.js';
import { suspicionTimeoutMs } from './detector-timing.js';
import { LAN_MEMBERSHIP_OPTIONS } from './membership-config.js';
import { MembershipProtocol, MembershipTopic } from './membership-wire.js';
import { MeshHarness, type HarnessInit } from '../testing/mesh-harness.js';

/** A converged cluster of `size` cells (c0 ... c{size-1}) joined through c0, settled for 3 s. */
async function cluster(seed: number, size: number, stallable = false): Promise<MeshHarness> {
  const harness = new MeshHarness({ seed, latencyMs: [1, 5] });
  await harness.addCell('c0', { stallable });
  for (let index = 1; index < size; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'], stallable });
  await harness.runUntil(() => harness.converged(size), 5_000);
  await harness.run(3_000);
  return harness;
}

/**
 * A converged cluster of 16 cells (c0 ... c15) joined through c0, started 31 ms apart as real
 * ones are (so their probe rounds are not in step), settled for `settleMs`.
 */
async function staggeredCluster(init: HarnessInit, settleMs: number): Promise<MeshHarness> {
  const harness = new MeshHarness(init);
  await harness.addCell('c0');
  for (let index = 1; index < 16; index++) {
    await harness.run(31);
    await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
  }
  await harness.runUntil(() => harness.converged(16), 10_000);
  await harness.run(settleMs);
  return harness;
}

/** Every suspect or dead claim the running cells publish from now on. */
function recordClaims(harness: MeshHarness): Array<{ kind: string; cellId: string; by: string }> {
  const claims: Array<{ kind: string; cellId: string; by: string }> = [];
  for (const cell of harness.running()) {
    const publish = cell.transport.publish.bind(cell.transport);
    cell.transport.publish = (topic, data) => {
      if (topic === MembershipTopic.membership) claims.push(JSON.parse(new TextDecoder().decode(data)) as { kind: string; cellId: string; by: string });
      return publish(topic, data);
    };
  }
  return claims;
}

/** Records every liveness a cell takes in any view, from now on. */
function watchLiveness(harness: MeshHarness, cellId: string): Array<{ observer: string; liveness: Liveness; atMs: number }> {
  const seen: Array<{ observer: string; liveness: Liveness; atMs: number }> = [];
  for (const cell of harness.running()) {
    cell.mesh.onChange((changed, before, after) => {
      if (changed === cellId && after !== undefined && after.liveness !== before?.liveness) {
        seen.push({ observer: cell.cellId, liveness: after.liveness, atMs: harness.clock.now() });
      }
    });
  }
  return seen;
}

describe('suspicion timeout (Lifeguard)', () => {
  it('starts at the max, reaches the min at K confirmations, and scales with local health', () => {
    const options = LAN_MEMBERSHIP_OPTIONS;
    expect(suspicionTimeoutMs(0, options, 0)).toBe(6_000);
    expect(suspicionTimeoutMs(1, options, 0)).toBe(4_000);
    expect(suspicionTimeoutMs(2, options, 0)).toBeGreaterThan(2_000);
    expect(suspicionTimeoutMs(3, options, 0)).toBe(2_000);
    expect(suspicionTimeoutMs(10, options, 0)).toBe(2_000);
    expect(suspicionTimeoutMs(3, options, 2)).toBe(6_000);
  });
});

describe('failure detection', () => {
  it.each([1, 2, 3])('declares a crashed cell dead on every other cell within 5 s (seed %i)', async (seed) => {
    const harness = await cluster(seed, 5);
    await harness.crash('c2');
    const elapsedMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c2')?.liveness === 'dead'),
      5_000,
    );
    expect(elapsedMs).toBeLessThan(5_000);
    // Suspected first, then dead, never refuted: nothing resurrects it while it is down.
    await harness.run(10_000);
    for (const cell of harness.running()) {
      expect(cell.mesh.directory.get('c2')?.liveness).toBe('dead');
      expect(cell.mesh.liveCells().map((record) => record.cellId)).not.toContain('c2');
    }
    const declared = harness.running().map((cell) => cell.metrics.value('cellmesh_mesh_dead_declarations_total'));
    expect(declared.reduce((sum, value) => sum + value, 0)).toBeGreaterThan(0);
  });

  it('declares a crashed cell dead within 5 s in a cluster of three (fewer confirmations)', async () => {
    const harness = await cluster(7, 3);
    await harness.crash('c1');
    const elapsedMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c1')?.liveness === 'dead'),
      5_000,
    );
    expect(elapsedMs).toBeLessThan(5_000);
  });

  it('detects a cell that goes silent without a disconnect (frozen host) in about 5 s', async () => {
    const harness = await cluster(4, 5);
    const rest = ['c0', 'c1', 'c3', 'c4'];
    harness.network.partition([MeshHarness.peerOf('c2')], rest.map(MeshHarness.peerOf));
    const elapsedMs = await harness.runUntil(() => rest.every((cellId) => harness.cell(cellId).mesh.directory.get('c2')?.liveness === 'dead'), 7_000);
    expect(elapsedMs).toBeGreaterThan(2_000);
  });

  it('a partition costs about K + 1 suspect and dead claims per cut-off cell, not one from every cell of the other side', async () => {
    const harness = await staggeredCluster({ seed: 8, latencyMs: [1, 5] }, 3_000);
    const claims = recordClaims(harness);
    const minority = ['c12', 'c13', 'c14', 'c15'];
    const majority = harness.running().map((cell) => cell.cellId).filter((cellId) => !minority.includes(cellId));
    harness.network.partition(minority.map(MeshHarness.peerOf), majority.map(MeshHarness.peerOf));
    await harness.runUntil(() => majority.every((observer) => minority.every((cellId) => harness.cell(observer).mesh.directory.get(cellId)?.liveness === 'dead')), 20_000);
    await harness.run(2_000);
    const k = LAN_MEMBERSHIP_OPTIONS.suspicionConfirmations;
    for (const cellId of minority) {
      const about = (kind: string): string[] => claims.filter((claim) => claim.kind === kind && claim.cellId === cellId && majority.includes(claim.by)).map((claim) => claim.by);
      // K + 1 make the timeout shortest; a few more race them (their probes ended within a hop of the first claims).
      expect(about('suspect').length).toBeGreaterThanOrEqual(k + 1);
      expect(about('suspect').length).toBeLessThan(majority.length / 2);
      expect(about('dead').every((by) => about('suspect').includes(by))).toBe(true);
      expect(about('dead').length).toBeGreaterThan(0);
    }
    // Both sides come back after the heal.
    harness.network.heal();
    await harness.runUntil(() => harness.converged(16) && harness.running().every((cell) => cell.mesh.liveCells().length === 16), 20_000);
  });

  it('past the heartbeat budget, a heal costs a few pulls and reannounced claims per cell, not one from every cell of the other side', async () => {
    // A budget of 5 heartbeats a second puts 16 cells past it (a heartbeat every 3 s). Periodic
    // anti-entropy is held off: what repairs the views here is what heartbeats set off.
    const harness = await staggeredCluster({ seed: 9, latencyMs: [1, 5], options: { heartbeatReceiveBudgetPerSecond: 5, antiEntropyIntervalMs: 600_000 } }, 5_000);
    const minority = ['c12', 'c13', 'c14', 'c15'];
    const majority = harness.running().map((cell) => cell.cellId).filter((cellId) => !minority.includes(cellId));
    harness.network.partition(minority.map(MeshHarness.peerOf), majority.map(MeshHarness.peerOf));
    await harness.runUntil(
      () => harness.running().every((observer) => harness.running().every((cell) => minority.includes(observer.cellId) === minority.includes(cell.cellId) || observer.mesh.directory.get(cell.cellId)?.liveness === 'dead')),
      60_000,
    );
    const claims = recordClaims(harness);
    const exchanges = async (): Promise<number> => {
      let total = 0;
      for (const cell of harness.running()) total += cell.metrics.value('cellmesh_mesh_anti_entropy_rounds_total', { role: 'answerer' });
      return total;
    };
    const exchangesBefore = await exchanges();

    const reannounced = async (): Promise<number> => {
      let total = 0;
      for (const cell of harness.running()) total += cell.metrics.value('cellmesh_mesh_claims_reannounced_total');
      return total;
    };
    const seenOfMinority = minority.map((cellId) => watchLiveness(harness, cellId));

    harness.network.heal();
    await harness.runUntil(() => harness.converged(16) && harness.running().every((cell) => cell.mesh.liveCells().length === 16), 30_000);
    // Every cell was held dead by the other side and heard by all of it: 12 x 4 x 2 = 96 pairs.
    // Repairing at once cost 90 pulls; waiting for the pulls alone, 129 reannounced claims.
    const pulls = (await exchanges()) - exchangesBefore;
    expect(pulls).toBeLessThan(32);
    expect(await reannounced()).toBeLessThan(32);
    // Reannounced claims go to the cell they are about, not to every cell: no claim is gossiped
    // at the heal, and the cut-off cells never see each other dead (a gossiped one did that).
    expect(claims).toEqual([]);
    const ownSide = seenOfMinority.flat().filter((event) => minority.includes(event.observer));
    expect(ownSide.filter((event) => event.liveness !== 'alive')).toEqual([]);
  });

  it.each([1, 2, 3, 4, 5])('never declares a cell dead while its event loop stalls for 1 s (seed %i)', async (seed) => {
    const harness = await cluster(seed, 5, true);
    const stalled = harness.cell('c3');
    const seen = watchLiveness(harness, 'c3');
    const healthBefore = stalled.mesh.localHealth();
    stalled.gate?.stall(1_000);
    await harness.run(1_001);
    // Its heartbeat timer fired a whole interval late: it now trusts its own judgement less.
    expect(stalled.mesh.localHealth()).toBeGreaterThan(healthBefore);
    await harness.run(15_000);
    expect(seen.filter((event) => event.liveness === 'dead')).toEqual([]);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c3')?.liveness).toBe('alive');
    expect(harness.converged(5)).toBe(true);
    // The multiplier decays again with successful probes.
    expect(stalled.mesh.localHealth()).toBe(0);
  });

  it('survives a 3 s stall too: the stalled cell is suspected, then refutes before it could be declared dead', async () => {
    const harness = await cluster(11, 5, true);
    const seen = watchLiveness(harness, 'c3');
    harness.cell('c3').gate?.stall(3_000);
    await harness.run(15_000);
    expect(seen.some((event) => event.liveness === 'suspect')).toBe(true);
    expect(seen.filter((event) => event.liveness === 'dead')).toEqual([]);
    expect(harness.cell('c3').mesh.incarnation).toBeGreaterThan(0);
    expect(harness.cell('c3').metrics.value('cellmesh_mesh_refutations_total')).toBeGreaterThan(0);
    expect(harness.converged(5)).toBe(true);
  });

  it('refutes a claim sent to it directly by the cell holding it, and refuses one sent in another cell\'s name', async () => {
    const harness = await cluster(4, 4);
    const accused = harness.cell('c2');
    const before = accused.mesh.incarnation;
    const send = (from: string, claim: object) =>
      harness.cell(from).transport.request(MeshHarness.peerOf('c2'), MembershipProtocol.claim, new TextEncoder().encode(JSON.stringify(claim)), { timeoutMs: 500 });
    const forged = send('c1', { kind: 'dead', cellId: 'c2', incarnation: before, by: 'c3' }).catch((error: unknown) => error);
    const elsewhere = send('c1', { kind: 'dead', cellId: 'c3', incarnation: before, by: 'c1' }).catch((error: unknown) => error);
    await harness.run(10);
    expect(await forged).toMatchObject({ code: 'REMOTE_HANDLER_FAILED' });
    expect(await elsewhere).toMatchObject({ code: 'REMOTE_HANDLER_FAILED' });
    expect(accused.mesh.incarnation).toBe(before);
    const genuine = send('c1', { kind: 'dead', cellId: 'c2', incarnation: before, by: 'c1' });
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c2')?.record.incarnation === before + 1), 100);
    await genuine;
    expect(accused.metrics.value('cellmesh_mesh_messages_rejected_total', { channel: MembershipProtocol.claim, reason: 'forged-owner' })).toBe(1);
  });

  it('refutes a suspicion: a suspected live cell bumps its incarnation and stays alive everywhere', async () => {
    const harness = await cluster(3, 4);
    const accused = harness.cell('c2');
    const before = accused.mesh.incarnation;
    // c1 tells everyone it suspects c2 (as a confused peer might).
    const claim = { kind: 'suspect', cellId: 'c2', incarnation: before, by: 'c1' };
    await harness.cell('c1').transport.publish('cellmesh/membership/v1', new TextEncoder().encode(JSON.stringify(claim)));
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c2')?.record.incarnation === before + 1), 100);
    await harness.run(10_000);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c2')?.liveness).toBe('alive');
    expect(accused.mesh.incarnation).toBe(before + 1);
    expect(await accused.store.get('mesh/incarnation')).toBe(String(before + 1));
  });

  it('a graceful leave is known by every other cell at once, and the cell is never suspected', async () => {
    const harness = await cluster(5, 5);
    const leaver = harness.cell('c4');
    await leaver.mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shop-9', epoch: 0 }] });
    await harness.run(100);
    expect(harness.cell('c0').mesh.homeCellOf('mall', 'shop-9')).toBe('c4');
    const seen = watchLiveness(harness, 'c4');
    const others = harness.running().filter((cell) => cell !== leaver);
    const startMs = harness.clock.now();
    let left = false;
    const leaving = leaver.mesh.leave().then(() => {
      left = true;
    });
    const elapsedMs = await harness.runUntil(() => others.every((cell) => cell.mesh.directory.get('c4')?.liveness === 'left'), 1_000);
    // leave() resolves once the peers acknowledged the pushed 'left' record.
    await harness.runUntil(() => left, 1_000);
    await leaving;
    await leaver.transport.stop();
    // Well under one heartbeat interval: the latency of the network (1-5 ms a hop) only.
    expect(elapsedMs).toBeLessThan(50);
    expect(harness.clock.now() - startMs).toBeLessThan(100);
    expect(leaver.mesh.state).toBe('stopped');
    await harness.run(15_000);
    for (const cell of others) {
      expect(cell.mesh.directory.get('c4')?.liveness).toBe('left');
      expect(cell.mesh.homeCellOf('mall', 'shop-9')).toBeUndefined();
    }
    expect(seen.map((event) => event.liveness).filter((liveness) => liveness === 'suspect' || liveness === 'dead')).toEqual([]);
  });
});
