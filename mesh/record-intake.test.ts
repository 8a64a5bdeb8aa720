import { describe, expect, it } from 'vitest';
import { silentLogger } from '../platform/logger.js';
import type { Clock } from '../platform/clock.js';
import { SeededRandom } from '../platform/random.js';
import { signRecord, type CellRecord, type SignedRecord } from './cell-record.js';
import { Directory } from './directory.js';
import { encodeJson, MembershipTopic } from './membership-wire.js';
import { noopMeshMetrics, type MeshMetrics } from './mesh-metrics.js';
import { RecordIntake } from './record-intake.js';
import { ed25519PublicKeyOfSeed, ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry, type RecordSigner } from './record-signer.js';
import type { MeshMessage, PeerId } from './transport.js';

function record(overrides: Partial<CellRecord> = {}): CellRecord {
  return {
    cellId: 'cell-b',
    peerId: 'peer-b',
    incarnation: 1,
    version: 0,
    status: 'alive',
    endpoints: { ws: 'wss://b.example:443/ws', http: 'https://b.example', p2p: [] },
    tenants: ['mall'],
    merchants: [{ tenant: 'mall', merchant: 'shop-1', epoch: 0 }],
    load: { devices: 0, messagesPerSecond: 0 },
    capacity: { maxDevices: 1000 },
    ...overrides,
  };
}

/** An intake of cell-a whose signer counts signature checks: one per record actually opened. */
function setUp() {
  const random = new SeededRandom(7);
  const registry = new PublicKeyRegistry();
  const seedA = ed25519SeedFrom(random);
  const seedB = ed25519SeedFrom(random);
  registry.set('peer-a', ed25519PublicKeyOfSeed(seedA));
  registry.set('peer-b', ed25519PublicKeyOfSeed(seedB));
  const own = new Ed25519RecordSigner({ privateKey: seedA, publicKeyOf: registry.publicKeyOf });
  const signerB = new Ed25519RecordSigner({ privateKey: seedB, publicKeyOf: registry.publicKeyOf });
  const counted = { verifies: 0 };
  const signer: RecordSigner = {
    sign: (bytes) => own.sign(bytes),
    verify: (peerId, bytes, signature) => {
      counted.verifies++;
      return own.verify(peerId, bytes, signature);
    },
  };
  const outcomes: string[] = [];
  const metrics: MeshMetrics = {
    ...noopMeshMetrics,
    recordAccepted: (source) => outcomes.push(`${source}:accepted`),
    recordStale: (source) => outcomes.push(`${source}:stale`),
    recordRejected: (source, reason) => outcomes.push(`${source}:${reason}`),
  };
  const clock: Clock = { now: () => 1_000, setTimer: () => ({ cancel: () => {} }) };
  const directory = new Directory({ selfCellId: 'cell-a', maxCells: 16, maxTombstones: 16, tombstoneRetentionMs: 60_000 });
  const intake = new RecordIntake({
    directory,
    signer,
    clock,
    metrics,
    logger: silentLogger,
    selfPeer: 'peer-a' as PeerId,
    maxMessageBytes: 1024 * 1024,
    onNewerOwnRecord: () => {},
  });
  const message = (envelope: SignedRecord | Record<string, unknown>, from = 'peer-b'): MeshMessage => ({
    from: from as PeerId,
    topic: MembershipTopic.directory,
    data: encodeJson(envelope),
  });
  /** What a transport does: the validator and the handler each get their own copy of the bytes. */
  const deliver = (sent: MeshMessage): string => {
    const result = intake.validateGossip({ ...sent, data: sent.data.slice() });
    if (result === 'accept') intake.handleGossip({ ...sent, data: sent.data.slice() });
    return result;
  };
  return { intake, directory, signerB, counted, outcomes, message, deliver };
}

describe('RecordIntake', () => {
  it('opens a gossiped record once for its validator and its handler, and judges every delivery', () => {
    const { directory, signerB, counted, outcomes, message, deliver } = setUp();
    const first = message(signRecord(record(), signerB).signed);

    expect(deliver(first)).toBe('accept');
    expect(counted.verifies).toBe(1);
    expect(directory.get('cell-b')?.record.version).toBe(0);
    expect(outcomes).toEqual(['gossip:accepted']);

    // The same bytes again (the owner republished it): not opened again, passed on so the
    // publish goes on past this cell, and found stale by the handler.
    expect(deliver(first)).toBe('accept');
    expect(counted.verifies).toBe(1);
    // The same bytes from another publisher: the owner check runs for every delivery.
    expect(deliver({ ...first, from: 'peer-a' as PeerId })).toBe('reject');
    expect(counted.verifies).toBe(1);
    expect(outcomes).toEqual(['gossip:accepted', 'gossip:stale', 'gossip:forged-owner']);

    // A newer record is a different message: opened and accepted as before.
    const second = message(signRecord(record({ version: 1 }), signerB).signed);
    expect(deliver(second)).toBe('accept');
    expect(counted.verifies).toBe(2);
    expect(directory.get('cell-b')?.record.version).toBe(1);

    // An older one (a replay) goes no further.
    expect(deliver(first)).toBe('ignore');
    expect(outcomes.slice(3)).toEqual(['gossip:accepted', 'gossip:stale']);
    expect(directory.get('cell-b')?.record.version).toBe(1);
  });

  it("passes on a record it took by anti-entropy when the owner's gossip of it comes", () => {
    const { intake, directory, signerB, outcomes, message, deliver } = setUp();
    const signed = signRecord(record(), signerB).signed;
    expect(intake.ingestRelayed(signed).kind).toBe('accepted');
    expect(deliver(message(signed))).toBe('accept');
    expect(outcomes).toEqual(['anti-entropy:accepted', 'gossip:stale']);
    expect(directory.get('cell-b')?.record.version).toBe(0);
  });

  it('opens a rejected message afresh at every delivery and rejects it as before', () => {
    const { directory, signerB, counted, outcomes, message, deliver } = setUp();
    const signed = signRecord(record(), signerB).signed;
    const tampered = message({ ...signed, record: signed.record.replace('"devices":0', '"devices":1') });

    expect(deliver(tampered)).toBe('reject');
    expect(deliver(tampered)).toBe('reject');
    expect(counted.verifies).toBe(2);
    expect(deliver(message({ record: signed.record }))).toBe('reject');
    expect(outcomes).toEqual(['gossip:bad-signature', 'gossip:bad-signature', 'gossip:malformed']);
    expect(directory.get('cell-b')).toBeUndefined();

    // The genuine record right after its tampered copy is still accepted.
    expect(deliver(message(signed))).toBe('accept');
    expect(counted.verifies).toBe(3);
    expect(directory.get('cell-b')?.record.load.devices).toBe(0);
  });
});
