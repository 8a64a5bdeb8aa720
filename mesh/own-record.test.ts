import { describe, expect, it } from 'vitest';
import { InvariantError } from '../platform/invariant.js';
import { silentLogger } from '../platform/logger.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { CellRecord } from './cell-record.js';
import { Directory } from './directory.js';
import { MemoryNetwork } from './memory-network.js';
import { noopMeshMetrics } from './mesh-metrics.js';
import { INCARNATION_KEY, OwnRecord } from './own-record.js';
import { ed25519PublicKeyOfSeed, ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry } from './record-signer.js';

async function ownRecord(): Promise<{ own: OwnRecord; store: MemoryStore; first: (incarnation: number) => CellRecord }> {
  const clock = new ManualClock();
  const store = new MemoryStore();
  await store.open();
  const transport = new MemoryNetwork({ clock, random: new SeededRandom(2) }).createTransport('peer-a');
  const seed = ed25519SeedFrom(new SeededRandom(1));
  const keys = new PublicKeyRegistry();
  keys.set('peer-a', ed25519PublicKeyOfSeed(seed));
  const own = new OwnRecord({
    store,
    signer: new Ed25519RecordSigner({ privateKey: seed, publicKeyOf: keys.publicKeyOf }),
    directory: new Directory({ selfCellId: 'a', maxCells: 10, maxTombstones: 10, tombstoneRetentionMs: 1_000 }),
    transport,
    clock,
    metrics: noopMeshMetrics,
    logger: silentLogger,
    republishAfterMs: 500,
    mayPublish: () => false,
  });
  const first = (incarnation: number): CellRecord => ({
    cellId: 'a',
    peerId: 'peer-a',
    incarnation,
    version: 0,
    status: 'alive',
    endpoints: { ws: 'ws://a.test/ws', http: 'http://a.test', p2p: [] },
    tenants: ['mall'],
    merchants: [],
    load: { devices: 0, messagesPerSecond: 0 },
    capacity: { maxDevices: 10 },
  });
  return { own, store, first };
}

describe('OwnRecord', () => {
  it('takes the next incarnation from the Store and keeps it there', async () => {
    const { own, store } = await ownRecord();
    expect(await own.nextIncarnation()).toBe(0);
    await store.write([{ type: 'put', key: INCARNATION_KEY, value: '41' }]);
    expect(await own.nextIncarnation()).toBe(42);
    expect(await store.get(INCARNATION_KEY)).toBe('42');
  });

  it('never installs a record older than, or as old as, the current one', async () => {
    const { own, first } = await ownRecord();
    own.install(first(3));
    own.installStatus('leaving');
    expect(own.record).toMatchObject({ incarnation: 3, version: 1, status: 'leaving' });
    expect(() => own.install(first(3))).toThrow(InvariantError);
    expect(() => own.install({ ...first(2), version: 9 })).toThrow(InvariantError);
    own.install(first(4));
    expect(own.record.incarnation).toBe(4);
  });

  it('never persists an incarnation at or below one persisted before', async () => {
    const { own } = await ownRecord();
    const incarnation = await own.nextIncarnation();
    await own.persistIncarnation(incarnation + 2);
    expect(() => own.persistIncarnation(incarnation + 2)).toThrow(InvariantError);
  });
});
