import { describe, expect, it } from 'vitest';
import { signRecord } from './cell-record.js';
import { MeshHarness } from '../testing/mesh-harness.js';
import { encodeJson, MembershipProtocol } from './membership-wire.js';

async function cluster(seed: number, size: number, options: ConstructorParameters<typeof MeshHarness>[0]['options'] = {}): Promise<MeshHarness> {
  const harness = new MeshHarness({ seed, latencyMs: [1, 5], options });
  await harness.addCell('c0');
  for (let index = 1; index < size; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
  await harness.runUntil(() => harness.converged(size), 5_000);
  await harness.run(2_000);
  return harness;
}

function allAlive(harness: MeshHarness): boolean {
  return harness.running().every((cell) => [...cell.mesh.directory.values()].every((entry) => entry.liveness === 'alive'));
}

describe('anti-entropy', () => {
  it.each([1, 2, 3])('repairs the views after a partition heals, with changes made on both sides (seed %i)', async (seed) => {
    const harness = await cluster(seed, 5);
    const sideA = ['c0', 'c1'];
    const sideB = ['c2', 'c3', 'c4'];
    harness.network.partition(sideA.map(MeshHarness.peerOf), sideB.map(MeshHarness.peerOf));
    await harness.run(1_000);
    const a = await harness.cell('c1').mesh.updateOwnRecord({ load: { devices: 42, messagesPerSecond: 7 } });
    const b = await harness.cell('c3').mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shop-3', epoch: 0 }] });
    await harness.cell('c3').mesh.updateOwnRecord({ load: { devices: 9, messagesPerSecond: 1 } });
    // Long enough for each side to declare the other dead.
    await harness.run(10_000);
    expect(harness.cell('c0').mesh.directory.get('c3')?.liveness).toBe('dead');
    expect(harness.cell('c2').mesh.directory.get('c1')?.liveness).toBe('dead');
    expect(harness.cell('c0').mesh.directory.get('c1')?.record.version).toBe(a.version);
    expect(harness.cell('c0').mesh.directory.get('c3')?.record.version).toBeLessThan(b.version);

    harness.network.heal();
    // Cells declared dead learn it (re-announced claims, anti-entropy tombstones), refute with a
    // higher incarnation, and anti-entropy carries the records gossip missed.
    const healMs = await harness.runUntil(() => harness.converged(5) && allAlive(harness), 3 * 2_000);
    expect(healMs).toBeLessThan(6_000);
    for (const cell of harness.running()) {
      expect(cell.mesh.directory.get('c1')?.record.load.devices).toBe(42);
      expect(cell.mesh.directory.get('c3')?.record.load.devices).toBe(9);
      expect(cell.mesh.homeCellOf('mall', 'shop-3')).toBe('c3');
    }
    await harness.run(10_000);
    expect(harness.converged(5) && allAlive(harness)).toBe(true);
  });

  it('repairs a record change whose gossip was lost', async () => {
    const harness = await cluster(8, 4, { heartbeatIntervalMs: 60_000, suspectAfterMs: 180_000 });
    // Every publish now is lost (requests were not in flight): the change reaches nobody by gossip.
    harness.network.setFaults({ lossRate: 1 });
    const changed = await harness.cell('c2').mesh.updateOwnRecord({ tenants: ['mall', 'market'] });
    harness.network.setFaults({ lossRate: 0 });
    await harness.run(5);
    expect(harness.cell('c0').mesh.directory.get('c2')?.record.version).toBeLessThan(changed.version);
    // With heartbeats too rare to trigger a pull, only periodic anti-entropy can carry it.
    const elapsedMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c2')?.record.version === changed.version),
      5 * 2_000,
    );
    expect(elapsedMs).toBeLessThan(10_000);
    let repaired = 0;
    for (const cell of harness.running()) repaired += cell.metrics.value('cellmesh_mesh_anti_entropy_records_repaired_total');
    expect(repaired).toBeGreaterThanOrEqual(3);
  });

  it('pulls a newer record at once when a heartbeat shows a version it does not hold', async () => {
    const harness = await cluster(9, 4);
    harness.network.setFaults({ lossRate: 1 });
    const changed = await harness.cell('c1').mesh.updateOwnRecord({ capacity: { maxDevices: 5 } });
    harness.network.setFaults({ lossRate: 0 });
    const elapsedMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c1')?.record.version === changed.version),
      2_000,
    );
    // The next heartbeat (every 500 ms) carries the version; the pull takes two round trips.
    expect(elapsedMs).toBeLessThanOrEqual(520);
  });

  it('in a cluster past the heartbeat budget, the first pulls make the owner republish and spare the rest', async () => {
    // Heartbeats every 7 s at 8 cells (a budget of 1 a second): the cluster waits before pulling.
    // Periodic anti-entropy is held off so that only heartbeat pulls can carry the change.
    const harness = await cluster(10, 8, { heartbeatReceiveBudgetPerSecond: 1, antiEntropyIntervalMs: 600_000 });
    const owner = harness.cell('c1');
    const answeredBefore = owner.metrics.value('cellmesh_mesh_anti_entropy_rounds_total', { role: 'answerer' });
    harness.network.setFaults({ lossRate: 1 });
    const changed = await owner.mesh.updateOwnRecord({ capacity: { maxDevices: 5 } });
    harness.network.setFaults({ lossRate: 0 });
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c1')?.record.version === changed.version), 10_000);
    // Seven cells heard the heartbeat; without the republish each would have pulled.
    const answered = owner.metrics.value('cellmesh_mesh_anti_entropy_rounds_total', { role: 'answerer' }) - answeredBefore;
    expect(answered).toBeGreaterThanOrEqual(1);
    expect(answered).toBeLessThanOrEqual(3);
    expect(owner.metrics.value('cellmesh_mesh_own_record_republished_total')).toBe(1);
  });

  it('does not resurrect a dead cell from a stale peer (records nor digests)', async () => {
    const harness = await cluster(4, 4);
    const victim = harness.cell('c3');
    const stale = victim.mesh.directory.get('c3')?.signed;
    // A change that reaches nobody, then the crash: only a stale peer keeps that record.
    harness.network.setFaults({ lossRate: 1 });
    await victim.mesh.updateOwnRecord({ load: { devices: 1, messagesPerSecond: 1 } });
    harness.network.setFaults({ lossRate: 0 });
    const newerUnseen = victim.mesh.directory.get('c3')?.signed;
    await harness.crash('c3');
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c3')?.liveness === 'dead'), 5_000);

    // The stale peer: a transport that holds c3's old records and pushes them around.
    const strayPeer = 'peer-stray';
    const stray = harness.network.createTransport(strayPeer);
    await stray.start();
    await stray.dial(MeshHarness.addressOf('c0'));
    const push = stray.request(MeshHarness.peerOf('c0'), MembershipProtocol.antiEntropyPush, encodeJson({ records: [stale, newerUnseen] }), { timeoutMs: 1_000 });
    // And asks as if it had never heard of c3: the answer carries c3's tombstone.
    const ask = stray.request(MeshHarness.peerOf('c1'), MembershipProtocol.antiEntropy, encodeJson({ digest: { c0: [0, 0] }, claims: [] }), { timeoutMs: 1_000 });
    await harness.run(20);
    const pushed = JSON.parse(new TextDecoder().decode(await push)) as { accepted: number };
    const answer = JSON.parse(new TextDecoder().decode(await ask)) as { claims: Array<{ cellId: string }>; records: unknown[] };
    // The unseen newer version is accepted as a record, yet c3 stays dead: the claim is about its incarnation.
    expect(pushed.accepted).toBe(1);
    expect(harness.cell('c0').mesh.directory.get('c3')?.liveness).toBe('dead');
    expect(answer.claims.map((claim) => claim.cellId)).toContain('c3');
    await harness.run(10_000);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c3')?.liveness).toBe('dead');

    // A cell joining later learns c3 as dead, not alive.
    const late = await harness.addCell('c9', { bootstrap: ['c0'] });
    await harness.runUntil(() => late.mesh.directory.get('c3') !== undefined, 1_000);
    expect(late.mesh.directory.get('c3')?.liveness).toBe('dead');
  });

  it('chunks a large exchange into bounded messages', async () => {
    const harness = await cluster(6, 7, { antiEntropyMaxRecordsPerMessage: 2 });
    const loner = await harness.addCell('c9');
    let result: Awaited<ReturnType<typeof loner.mesh.syncWith>> | undefined;
    void loner.mesh.syncWith(MeshHarness.peerOf('c0')).then((value) => {
      result = value;
    });
    await harness.runUntil(() => result !== undefined, 1_000);
    // 7 records at 2 a message: 4 rounds of digest and delta.
    expect(result).toMatchObject({ rounds: 4, received: 7, pushed: 1, skipped: false });
    expect(loner.mesh.directory.size).toBe(8);
    expect(harness.cell('c0').mesh.directory.get('c9')).toBeDefined();
  });

  it('rejects oversized and malformed anti-entropy requests, and forged records inside them', async () => {
    const harness = await cluster(2, 3, { maxMessageBytes: 16 * 1024 });
    const stray = harness.network.createTransport('peer-stray');
    await stray.start();
    const target = MeshHarness.peerOf('c0');
    const outcomes: string[] = [];
    const send = (protocol: string, body: Uint8Array): void => {
      stray.request(target, protocol, body, { timeoutMs: 1_000 }).then(
        () => outcomes.push('ok'),
        (error: { code?: string }) => outcomes.push(error.code ?? 'error'),
      );
    };
    send(MembershipProtocol.antiEntropy, new Uint8Array(20 * 1024));
    send(MembershipProtocol.antiEntropy, new TextEncoder().encode('{"digest":'));
    send(MembershipProtocol.antiEntropy, encodeJson({ digest: { 'NOT A CELL': [0, 0] }, claims: [] }));
    // A record of c1 signed by the stray's key.
    const forged = signRecord({ ...harness.cell('c1').mesh.ownRecord(), version: 99 }, harness.signerFor('peer-stray'));
    send(MembershipProtocol.antiEntropyPush, encodeJson({ records: [forged.signed] }));
    await harness.run(20);
    expect(outcomes.sort()).toEqual(['REMOTE_HANDLER_FAILED', 'REMOTE_HANDLER_FAILED', 'REMOTE_HANDLER_FAILED', 'ok']);
    const metrics = harness.cell('c0').metrics;
    expect(metrics.value('cellmesh_mesh_messages_rejected_total', { channel: MembershipProtocol.antiEntropy, reason: 'too-large' })).toBe(1);
    expect(metrics.value('cellmesh_mesh_messages_rejected_total', { channel: MembershipProtocol.antiEntropy, reason: 'malformed' })).toBe(2);
    expect(metrics.value('cellmesh_mesh_records_rejected_total', { source: 'anti-entropy', reason: 'bad-signature' })).toBe(1);
    expect(harness.cell('c0').mesh.directory.get('c1')?.record.version).toBe(0);
  });
});
