import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../platform/store/memory-store.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { signRecord, type CellRecord } from './cell-record.js';
import { CellMesh } from './cell-mesh.js';
import type { MerchantConflict } from './directory.js';
import { MembershipError } from './membership-errors.js';
import { encodeJson, MembershipProtocol, MembershipTopic } from './membership-wire.js';
import { MemoryNetwork } from './memory-network.js';
import { MeshHarness } from '../testing/mesh-harness.js';
import { INCARNATION_KEY } from './own-record.js';
import { ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry } from './record-signer.js';

async function cluster(seed: number, size: number, latencyMs: [number, number] = [1, 5]): Promise<MeshHarness> {
  const harness = new MeshHarness({ seed, latencyMs });
  await harness.addCell('c0');
  for (let index = 1; index < size; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
  await harness.runUntil(() => harness.converged(size), 5_000);
  return harness;
}

function publishRaw(harness: MeshHarness, peer: string, topic: string, value: unknown): void {
  void harness.network.endpoint(peer)?.publish(topic, typeof value === 'string' ? new TextEncoder().encode(value) : encodeJson(value));
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return (error as MembershipError).code;
  }
}

describe('CellMesh membership', () => {
  it.each([1, 2, 3])('five cells joining through one bootstrap converge, and a record change reaches all quickly (seed %i)', async (seed) => {
    const harness = new MeshHarness({ seed, latencyMs: [1, 10] });
    await harness.addCell('c0');
    for (let index = 1; index < 5; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
    const joinMs = await harness.runUntil(() => harness.converged(5), 2_000);
    expect(joinMs).toBeLessThan(200);
    for (const cell of harness.running()) await expect(cell.mesh.waitJoined()).resolves.toBeUndefined();
    // The connection keeper dials the rest: a full mesh of 5 within a couple of rounds.
    await harness.run(2_500);
    for (const cell of harness.running()) expect(cell.transport.connectedPeers()).toHaveLength(4);

    const changed = await harness.cell('c3').mesh.updateOwnRecord({ load: { devices: 250, messagesPerSecond: 12 } });
    const convergeMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c3')?.record.version === changed.version),
      1_000,
    );
    // One gossip hop of 1-10 ms: far under the 1 s goal.
    expect(convergeMs).toBeLessThanOrEqual(20);
    expect(harness.cell('c0').mesh.directory.get('c3')?.record.load.devices).toBe(250);
    expect(harness.cell('c1').mesh.liveCells().map((record) => record.cellId)).toEqual(['c0', 'c1', 'c2', 'c3', 'c4']);
    expect(harness.cell('c1').mesh.peerOf('c3')).toBe(MeshHarness.peerOf('c3'));
  });

  it('rejects records signed by someone else, relayed with a forged owner, or naming a live cell it does not own', async () => {
    const harness = await cluster(2, 3);
    const mallory = harness.network.createTransport('peer-mallory');
    await mallory.start();
    await mallory.dial(MeshHarness.addressOf('c0'));
    // Rejected messages are not relayed (as in gossipsub), so c1 must hear mallory directly.
    await mallory.dial(MeshHarness.addressOf('c1'));
    const victim = harness.cell('c1').mesh.ownRecord();
    const genuine = harness.cell('c0').mesh.directory.get('c1')?.signed;
    const malloryKey = harness.signerFor('peer-mallory');
    const publish = (value: unknown): void => publishRaw(harness, 'peer-mallory', MembershipTopic.directory, value);

    // 1. c1's record, changed, signed with mallory's key.
    publish(signRecord({ ...victim, version: 50, merchants: [{ tenant: 'mall', merchant: 'stolen', epoch: 9 }] }, malloryKey).signed);
    // 2. c1's genuine envelope with the record text changed.
    publish({ record: genuine?.record.replace('"version":0', '"version":51'), signature: genuine?.signature });
    // 3. c1's genuine envelope, relayed by gossip by someone else.
    publish(genuine);
    // 4. Mallory's own valid record under c1's cell id.
    publish(signRecord({ ...victim, peerId: 'peer-mallory', incarnation: 99 }, malloryKey).signed);
    // 5. Not even JSON.
    publish('{not json');
    await harness.run(50);

    for (const cell of harness.running()) {
      const held = cell.mesh.directory.get('c1');
      expect(held?.record.peerId).toBe(MeshHarness.peerOf('c1'));
      expect(held?.record.version).toBe(0);
      expect(cell.mesh.homeCellOf('mall', 'stolen')).toBeUndefined();
    }
    const metrics = harness.cell('c0').metrics;
    const rejected = (reason: string): number => metrics.value('cellmesh_mesh_records_rejected_total', { source: 'gossip', reason });
    expect(rejected('bad-signature')).toBe(2);
    expect(rejected('forged-owner')).toBe(1);
    expect(rejected('peer-mismatch')).toBe(1);
    expect(rejected('malformed')).toBe(1);
    // The cell whose id was claimed saw it too, and kept its identity.
    expect(harness.cell('c1').metrics.value('cellmesh_mesh_records_rejected_total', { reason: 'peer-mismatch' })).toBe(1);
    expect(harness.cell('c1').mesh.incarnation).toBe(0);
  });

  it('rejects forged heartbeats and claims', async () => {
    const harness = await cluster(3, 3);
    const mallory = harness.network.createTransport('peer-mallory');
    await mallory.start();
    await mallory.dial(MeshHarness.addressOf('c0'));
    publishRaw(harness, 'peer-mallory', MembershipTopic.membership, { kind: 'dead', cellId: 'c2', incarnation: 0, by: 'c1' });
    publishRaw(harness, 'peer-mallory', MembershipTopic.heartbeat, { cellId: 'c2', incarnation: 0, version: 0 });
    publishRaw(harness, 'peer-mallory', MembershipTopic.heartbeat, { cellId: 'c2', incarnation: 'x' });
    await harness.run(50);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c2')?.liveness).toBe('alive');
    const metrics = harness.cell('c0').metrics;
    expect(metrics.value('cellmesh_mesh_messages_rejected_total', { channel: MembershipTopic.membership, reason: 'forged-owner' })).toBe(1);
    expect(metrics.value('cellmesh_mesh_messages_rejected_total', { channel: MembershipTopic.heartbeat })).toBe(2);
  });

  it('two cells claiming one merchant: every cell picks the same winner and reports the conflict once', async () => {
    const harness = new MeshHarness({ seed: 4, latencyMs: [1, 5] });
    const conflicts = new Map<string, MerchantConflict[]>();
    const shop = { tenant: 'mall', merchant: 'shop-1', epoch: 0 };
    const specs: Array<[string, object]> = [
      ['c0', {}],
      ['c1', { bootstrap: ['c0'], merchants: [shop] }],
      ['c2', { bootstrap: ['c0'], merchants: [shop] }],
      ['c3', { bootstrap: ['c0'] }],
    ];
    for (const [cellId, options] of specs) {
      const cell = await harness.addCell(cellId, options);
      conflicts.set(cellId, []);
      cell.mesh.onConflict((conflict) => conflicts.get(cellId)?.push(conflict));
    }
    await harness.runUntil(() => harness.converged(4), 2_000);
    await harness.run(5_000);
    for (const cell of harness.running()) {
      expect(cell.mesh.homeCellOf('mall', 'shop-1')).toBe('c1');
      expect(conflicts.get(cell.cellId)).toEqual([{ tenant: 'mall', merchant: 'shop-1', epoch: 0, claimants: ['c1', 'c2'], winner: 'c1' }]);
      expect(cell.mesh.conflicts()).toHaveLength(1);
      expect(cell.metrics.value('cellmesh_mesh_merchant_conflicts_total')).toBe(1);
    }
    // The operator fixes the config: c2 drops the merchant; the conflict clears everywhere.
    await harness.cell('c2').mesh.updateOwnRecord({ merchants: [] });
    await harness.run(50);
    for (const cell of harness.running()) expect(cell.mesh.conflicts()).toEqual([]);
  });

  it('a move (new owner claims epoch + 1, old owner drops) switches the home everywhere without a conflict', async () => {
    const harness = new MeshHarness({ seed: 5, latencyMs: [1, 5] });
    await harness.addCell('c0');
    await harness.addCell('c1', { bootstrap: ['c0'], merchants: [{ tenant: 'mall', merchant: 'shop-7', epoch: 3 }] });
    await harness.addCell('c2', { bootstrap: ['c0'] });
    await harness.addCell('c3', { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(4), 2_000);
    const conflicts: MerchantConflict[] = [];
    for (const cell of harness.running()) cell.mesh.onConflict((conflict) => conflicts.push(conflict));
    for (const cell of harness.running()) expect(cell.mesh.homeCellOf('mall', 'shop-7')).toBe('c1');

    // The old home signs the handover; the new home's claim carries it.
    const proof = harness.cell('c1').mesh.handoverProof('mall', 'shop-7', 'c2', 4);
    expect(proof).toBeDefined();
    await harness.cell('c2').mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shop-7', epoch: 4, proof }] });
    const switchMs = await harness.runUntil(() => harness.running().every((cell) => cell.mesh.homeCellOf('mall', 'shop-7') === 'c2'), 1_000);
    expect(switchMs).toBeLessThan(20);
    await harness.cell('c1').mesh.updateOwnRecord({ merchants: [] });
    await harness.run(1_000);
    for (const cell of harness.running()) expect(cell.mesh.homeCellOf('mall', 'shop-7')).toBe('c2');
    expect(conflicts).toEqual([]);
  });

  it('a claim above the home without a handover, or with one the home did not sign, is a conflict that routing ignores', async () => {
    const harness = new MeshHarness({ seed: 7, latencyMs: [1, 5] });
    await harness.addCell('c0');
    await harness.addCell('c1', { bootstrap: ['c0'], merchants: [{ tenant: 'mall', merchant: 'shop-7', epoch: 0 }] });
    await harness.addCell('c2', { bootstrap: ['c0'] });
    await harness.addCell('c3', { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(4), 2_000);
    const conflicts: MerchantConflict[] = [];
    for (const cell of harness.running()) cell.mesh.onConflict((conflict) => conflicts.push(conflict));

    await harness.cell('c2').mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shop-7', epoch: 99 }] });
    await harness.run(1_000);
    for (const cell of harness.running()) {
      expect(cell.mesh.homeCellOf('mall', 'shop-7')).toBe('c1');
      expect(cell.mesh.conflicts()).toEqual([{ tenant: 'mall', merchant: 'shop-7', epoch: 0, claimants: ['c1'], winner: 'c1', unproven: [{ cellId: 'c2', epoch: 99 }] }]);
      expect(cell.metrics.value('cellmesh_mesh_unproven_claims_total')).toBe(1);
    }
    // A handover in the home's name that the home did not sign proves nothing either.
    const homePeer = harness.cell('c1').mesh.ownRecord().peerId;
    const forged = { kind: 'handover' as const, fromCell: 'c1', fromPeer: homePeer, fromEpoch: 0, signature: Buffer.alloc(64, 7).toString('base64') };
    await harness.cell('c2').mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shop-7', epoch: 100, proof: forged }] });
    await harness.run(1_000);
    for (const cell of harness.running()) expect(cell.mesh.homeCellOf('mall', 'shop-7')).toBe('c1');
    expect(conflicts.every((conflict) => conflict.winner === 'c1')).toBe(true);
  });

  it('persists the incarnation: a restarted cell comes back with a higher one and wins over its old record', async () => {
    const harness = await cluster(6, 4);
    const first = harness.cell('c2');
    expect(first.mesh.incarnation).toBe(0);
    expect(await first.store.get(INCARNATION_KEY)).toBe('0');
    await first.mesh.updateOwnRecord({ load: { devices: 3, messagesPerSecond: 0 } });
    await first.mesh.updateOwnRecord({ load: { devices: 4, messagesPerSecond: 0 } });
    await harness.run(100);
    await harness.crash('c2');
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c2')?.liveness === 'dead'), 5_000);

    const second = await harness.addCell('c2', { bootstrap: ['c0'], store: first.store });
    expect(second.mesh.incarnation).toBe(1);
    expect(await second.store.get(INCARNATION_KEY)).toBe('1');
    const backMs = await harness.runUntil(
      () => harness.running().every((cell) => cell.mesh.directory.get('c2')?.liveness === 'alive' && cell.mesh.directory.get('c2')?.record.incarnation === 1),
      1_000,
    );
    expect(backMs).toBeLessThan(100);
    // Version 0 of incarnation 1 beats version 2 of incarnation 0.
    expect(harness.cell('c0').mesh.directory.get('c2')?.record.version).toBe(0);
  });

  it('a cell restarted quickly (before being declared dead) replaces its old record at once', async () => {
    const harness = await cluster(7, 3);
    const first = harness.cell('c1');
    await harness.crash('c1');
    await harness.run(10);
    const second = await harness.addCell('c1', { bootstrap: ['c0'], store: first.store });
    await harness.runUntil(() => harness.converged(3), 500);
    await harness.run(10_000);
    expect(second.mesh.incarnation).toBe(1);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c1')).toMatchObject({ liveness: 'alive', record: { incarnation: 1 } });
  });

  it('a restarted cell that lost its store moves above the incarnation the others remember', async () => {
    const harness = await cluster(8, 3);
    await harness.cell('c1').mesh.updateOwnRecord({ tenants: ['mall', 'x'] });
    await harness.run(100);
    await harness.crash('c1');
    await harness.run(10);
    const fresh = await harness.addCell('c1', { bootstrap: ['c0'] });
    expect(fresh.mesh.incarnation).toBe(0);
    await harness.runUntil(() => fresh.mesh.incarnation > 0 && harness.converged(3), 5_000);
    await harness.run(10_000);
    for (const cell of harness.running()) expect(cell.mesh.directory.get('c1')?.liveness).toBe('alive');
    expect(harness.converged(3)).toBe(true);
  });

  it("a joining cell's record spreads by its own gossip past the bootstrap cell that took it by anti-entropy", async () => {
    // A heartbeat budget this small puts 6 cells past it: heartbeats of unknown cells wait for
    // the record's gossip before pulling, so only the gossip can bring the record within 50 ms.
    const harness = new MeshHarness({ seed: 13, latencyMs: [1, 5], options: { heartbeatReceiveBudgetPerSecond: 1 } });
    await harness.addCell('c0');
    for (let index = 1; index < 6; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(6), 5_000);
    await harness.run(3_000);

    const joiner = await harness.addCell('c6', { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.cell('c0').mesh.directory.get('c6') !== undefined, 1_000);
    // c0 took the record by the joiner's push: the joiner's publish, one connection wide, must go on past it.
    expect(joiner.transport.connectedPeers()).toEqual([MeshHarness.peerOf('c0')]);
    // A few gossip hops; pulls would wait up to 2 x probeTimeoutMs (1 s) first.
    await harness.runUntil(() => harness.converged(7), 50);
  });

  it('retries the bootstrap with backoff until it answers', async () => {
    const harness = new MeshHarness({ seed: 9 });
    const early = await harness.addCell('c1', { bootstrap: ['c0'] });
    let joined = false;
    void early.mesh.waitJoined().then(() => {
      joined = true;
    });
    await harness.run(3_000);
    expect(joined).toBe(false);
    await harness.addCell('c0');
    const waitedMs = await harness.runUntil(() => joined && harness.converged(2), 10_000);
    expect(waitedMs).toBeLessThan(6_000);
  });

  it('gives up waiting after bootstrapMaxAttempts (BOOTSTRAP_FAILED), and keeps trying in the background', async () => {
    const harness = new MeshHarness({ seed: 10, options: { bootstrapMaxAttempts: 2 } });
    const lonely = await harness.addCell('c1', { bootstrap: ['c0'] });
    let code: string | undefined;
    void codeOf(lonely.mesh.waitJoined()).then((value) => {
      code = value ?? 'joined';
    });
    await harness.runUntil(() => code !== undefined, 5_000);
    expect(code).toBe('BOOTSTRAP_FAILED');
    await harness.addCell('c0');
    await harness.runUntil(() => harness.converged(2), 20_000);
  });

  it('dials at most maxConnections cells itself, and gossip still reaches everyone', async () => {
    const harness = new MeshHarness({ seed: 12, options: { maxConnections: 2 } });
    await harness.addCell('c0');
    for (let index = 1; index < 8; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(8), 2_000);
    await harness.run(5_000);
    const edges = harness.running().reduce((sum, cell) => sum + cell.transport.connectedPeers().length, 0) / 2;
    expect(edges).toBeLessThan((8 * 7) / 2);
    const changed = await harness.cell('c5').mesh.updateOwnRecord({ load: { devices: 1, messagesPerSecond: 0 } });
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('c5')?.record.version === changed.version), 100);
  });

  it('answers misuse with typed errors', async () => {
    const harness = await cluster(13, 2);
    const cell = harness.cell('c1');
    expect(await codeOf(cell.mesh.start())).toBe('ALREADY_STARTED');
    expect(await codeOf(cell.mesh.updateOwnRecord({ tenants: [''] }))).toBe('INVALID_RECORD');
    expect(await codeOf(cell.mesh.updateOwnRecord({ endpoints: {} as never }))).toBe('INVALID_RECORD');
    expect(cell.mesh.ownRecord().version).toBe(0);
    await cell.mesh.stop();
    expect(await codeOf(cell.mesh.updateOwnRecord({ tenants: ['a'] }))).toBe('NOT_STARTED');
    expect(await codeOf(cell.mesh.leave())).toBe('NOT_STARTED');

    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(1) });
    const transport = network.createTransport('peer-x');
    await transport.start();
    const store = new MemoryStore();
    await store.open();
    const keys = new PublicKeyRegistry();
    const random = new SeededRandom(2);
    const content = harness.cell('c0').mesh.ownRecord() satisfies CellRecord;
    const make = (signer: Ed25519RecordSigner): CellMesh =>
      new CellMesh({ cellId: 'cx', transport, clock, random, store, signer, record: content });
    // A key the registry does not list for peer-x.
    expect(await codeOf(make(new Ed25519RecordSigner({ privateKey: ed25519SeedFrom(random), publicKeyOf: keys.publicKeyOf })).start())).toBe('SIGNER_MISMATCH');
    await store.write([{ type: 'put', key: INCARNATION_KEY, value: 'garbage' }]);
    expect(await codeOf(make(harness.signerFor('peer-x')).start())).toBe('STORE_CORRUPT');
    expect(() => new CellMesh({ cellId: 'cy', transport, clock, random, store, signer: harness.signerFor('peer-x'), record: content, options: { suspicionMinMs: 9_000, suspicionMaxMs: 1_000 } })).toThrow(RangeError);
  });

  it('serves ping and answers a stopped cell with an error (counted as a failed probe, not a hang)', async () => {
    const harness = await cluster(14, 2);
    const caller = harness.network.endpoint(MeshHarness.peerOf('c0'));
    const answers: string[] = [];
    void caller?.request(MeshHarness.peerOf('c1'), MembershipProtocol.ping, encodeJson({}), { timeoutMs: 100 }).then((bytes) => answers.push(new TextDecoder().decode(bytes)));
    await harness.run(20);
    expect(JSON.parse(answers[0] ?? '{}')).toEqual({ cellId: 'c1', incarnation: 0, version: 0 });
    await harness.cell('c1').mesh.stop();
    let failure: string | undefined;
    void caller?.request(MeshHarness.peerOf('c1'), MembershipProtocol.ping, encodeJson({}), { timeoutMs: 100 }).catch((error: { code: string }) => {
      failure = error.code;
    });
    await harness.run(20);
    expect(failure).toBe('REMOTE_HANDLER_FAILED');
  });
});

describe('a router in the mesh (an observer)', () => {
  it('joins, keeps the directory with every claim, hosts nothing, is left out of live cells and refused as a move target, and is declared dead like any member', async () => {
    const harness = new MeshHarness({ seed: 11, latencyMs: [1, 5] });
    await harness.addCell('c0', { merchants: [{ tenant: 'mall', merchant: 'shoes', epoch: 0 }] });
    await harness.addCell('c1', { bootstrap: ['c0'], merchants: [{ tenant: 'mall', merchant: 'tea', epoch: 0 }] });
    const router = await harness.addCell('edge', { bootstrap: ['c0'], role: 'router' });
    await harness.runUntil(() => harness.converged(3), 5_000);
    expect(router.mesh.ownRecord()).toMatchObject({ role: 'router', tenants: [], merchants: [] });
    expect(router.mesh.directory.homeOf('mall', 'shoes')).toEqual({ cellId: 'c0', epoch: 0 });
    expect(router.mesh.directory.homeOf('mall', 'tea')).toEqual({ cellId: 'c1', epoch: 0 });
    for (const cell of harness.running()) expect(cell.mesh.liveCells().map((record) => record.cellId)).toEqual(['c0', 'c1']);
    expect(harness.cell('c0').mesh.directory.get('edge')?.record.role).toBe('router');
    expect(() => harness.cell('c0').mesh.handoverProof('mall', 'shoes', 'edge', 1)).toThrow('edge is a router: it hosts no merchants');
    // A router cannot start hosting: its record would be invalid.
    expect(await codeOf(router.mesh.updateOwnRecord({ merchants: [{ tenant: 'mall', merchant: 'shoes', epoch: 5 }] }))).toBe('INVALID_RECORD');
    await harness.crash('edge');
    await harness.runUntil(() => harness.running().every((cell) => cell.mesh.directory.get('edge')?.liveness === 'dead'), 10_000);
    expect(harness.cell('c1').mesh.directory.homeOf('mall', 'shoes')).toEqual({ cellId: 'c0', epoch: 0 });
  });
});
