import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import { LevelStore, MemoryStore, type Store } from '../../platform/store/index.js';
import { verifyPassword } from '../access/passwords.js';
import { keys } from '../messaging/keys.js';
import { CellError } from '../protocol/errors.js';
import { PeopleDirectory, agentView, type AgentChange, type MerchantPeople } from './people.js';

/** A store that can be closed and opened again on the same data: a restart of the cell. */
interface Restartable {
  store: Store;
  restart(): Promise<Store>;
  cleanup(): Promise<void>;
}

const worlds: Array<{ name: string; make: () => Promise<Restartable> }> = [
  {
    name: 'MemoryStore',
    make: async () => {
      const store = new MemoryStore();
      await store.open();
      // The memory store lives as long as its object: a restart keeps the object.
      return { store, restart: async () => store, cleanup: () => store.close() };
    },
  },
  {
    name: 'LevelStore',
    make: async () => {
      const directory = await mkdtemp(join(tmpdir(), 'cellmesh-people-'));
      const restartable: Restartable = {
        store: new LevelStore({ directory }),
        restart: async () => {
          await restartable.store.close();
          restartable.store = new LevelStore({ directory });
          await restartable.store.open();
          return restartable.store;
        },
        cleanup: async () => {
          await restartable.store.close();
          await rm(directory, { recursive: true, force: true });
        },
      };
      await restartable.store.open();
      return restartable;
    },
  },
];

const M1: MerchantPeople = { tenant: 'mall', merchant: 'm1' };
const M2: MerchantPeople = { tenant: 'mall', merchant: 'm2' };

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof CellError) return `${error.code}: ${error.message}`;
    throw error;
  }
  throw new Error('expected a CellError');
}

describe.each(worlds)('PeopleDirectory on $name', ({ make }) => {
  let world: Restartable;
  let clock: ManualClock;
  beforeEach(() => {
    clock = new ManualClock(1_000);
  });
  afterEach(() => world?.cleanup());

  async function directory(merchants: readonly MerchantPeople[] = [M1, M2]): Promise<PeopleDirectory> {
    const people = new PeopleDirectory({ store: world.store, clock });
    await people.load(merchants);
    return people;
  }

  it('creates with defaults, lists by id, updates in part, removes; each change durable before listeners hear it', async () => {
    world = await make();
    const people = await directory();
    const heard: Array<{ change: AgentChange; stored: string | undefined }> = [];
    people.onChange((change) => {
      // Read synchronously, as the listener runs: the write it announces is there already.
      const [stored] = world.store.getManySync!([keys.merchantDeskTable(change.tenant, change.merchant, 'agent').gte + change.agentId]);
      heard.push({ change, stored });
    });
    const bob = await people.create('mall', 'm1', { id: 'bob', capacity: 3, groups: ['sales', 'support'] });
    expect(bob).toEqual({ id: 'bob', name: 'bob', capacity: 3, groups: ['sales', 'support'], supervisor: false, createdAtMs: 1_000, updatedAtMs: 1_000 });
    await people.create('mall', 'm1', { id: 'alice', name: 'Alice Martin', supervisor: true });
    expect(people.list('mall', 'm1').map((agent) => [agent.id, agent.capacity, agent.groups, agent.supervisor])).toEqual([
      ['alice', 5, ['default'], true],
      ['bob', 3, ['sales', 'support'], false],
    ]);
    expect(people.list('mall', 'm2')).toEqual([]);

    clock.advance(500);
    const raised = await people.update('mall', 'm1', 'bob', { capacity: 8 });
    expect(raised).toMatchObject({ capacity: 8, groups: ['sales', 'support'], name: 'bob', createdAtMs: 1_000, updatedAtMs: 1_500 });
    expect(people.get('mall', 'm1', 'bob')).toEqual(raised);
    expect(await people.remove('mall', 'm1', 'alice')).toMatchObject({ id: 'alice' });
    expect(people.get('mall', 'm1', 'alice')).toBeUndefined();

    expect(heard.map(({ change }) => [change.agentId, change.before?.capacity, change.after?.capacity])).toEqual([
      ['bob', undefined, 3],
      ['alice', undefined, 5],
      ['bob', 3, 8],
      ['alice', 5, undefined],
    ]);
    // Every listener call came after the write it announces.
    expect(heard.map(({ stored }) => (stored === undefined ? undefined : (JSON.parse(stored) as { capacity: number }).capacity))).toEqual([3, 5, 8, undefined]);
  });

  it('refuses with typed errors and clear messages, changing nothing', async () => {
    world = await make();
    const people = await directory();
    await people.create('mall', 'm1', { id: 'bob' });
    const cases: Array<[Promise<unknown>, string]> = [
      [people.create('mall', 'm1', { id: 'bob' }), 'AGENT_EXISTS: merchant m1 has an agent bob already'],
      [people.create('mall', 'm1', { id: 'a b' }), 'BAD_FRAME: id: must be 1-64 characters of [A-Za-z0-9_.-]'],
      [people.create('mall', 'm1', { id: 'c', capacity: 0 }), 'BAD_FRAME: capacity: must be at least 1'],
      [people.create('mall', 'm1', { id: 'c', capacity: 1001 }), 'BAD_FRAME: capacity: must be at most 1000'],
      [people.create('mall', 'm1', { id: 'c', capacity: 1.5 }), 'BAD_FRAME: capacity: must be an integer'],
      [people.create('mall', 'm1', { id: 'c', groups: [] }), 'BAD_FRAME: groups: needs at least one group'],
      [people.create('mall', 'm1', { id: 'c', groups: ['a', 'a'] }), 'BAD_FRAME: groups: lists a group twice'],
      [people.create('mall', 'm1', { id: 'c', name: '  ' }), 'BAD_FRAME: name: must not be empty'],
      [people.create('mall', 'm1', { id: 'c', name: 'x'.repeat(201) }), 'BAD_FRAME: name: must be at most 200 characters'],
      [people.create('mall', 'm1', { id: 'c', role: 'boss' }), "BAD_FRAME: request: Unrecognized key: \"role\""],
      [people.create('mall', 'm7', { id: 'c' }), 'MERCHANT_NOT_HOSTED: merchant m7 of tenant mall is not hosted by this cell'],
      [people.update('mall', 'm1', 'bob', {}), 'BAD_FRAME: request: give at least one of name, capacity, groups, supervisor'],
      [people.update('mall', 'm1', 'nobody', { capacity: 2 }), 'AGENT_UNKNOWN: merchant m1 has no agent nobody'],
      [people.remove('mall', 'm1', 'nobody'), 'AGENT_UNKNOWN: merchant m1 has no agent nobody'],
      [people.setPassword('mall', 'm1', 'bob', 'short'), 'BAD_FRAME: password: must be at least 10 characters'],
      [people.setPassword('mall', 'm1', 'bob', 'p'.repeat(257)), 'BAD_FRAME: password: must be at most 256 characters'],
      [people.setPassword('mall', 'm1', 'nobody', 'long enough password'), 'AGENT_UNKNOWN: merchant m1 has no agent nobody'],
    ];
    const seen = await Promise.all(cases.map(([promise]) => codeOf(promise)));
    expect(seen).toEqual(cases.map(([, expected]) => expected));
    expect(people.list('mall', 'm1').map(agentView)).toEqual([{ id: 'bob', name: 'bob', capacity: 5, groups: ['default'], supervisor: false, hasPassword: false, createdAtMs: 1_000, updatedAtMs: 1_000 }]);
  });

  it('stores a password as a scrypt hash that verifies, and never shows it in the view', async () => {
    world = await make();
    const people = await directory();
    await people.create('mall', 'm1', { id: 'bob' });
    const record = await people.setPassword('mall', 'm1', 'bob', 'correct horse battery');
    expect(record.passwordHash).toMatch(/^scrypt\$/);
    expect(await verifyPassword('correct horse battery', record.passwordHash!)).toBe(true);
    expect(await verifyPassword('wrong horse battery', record.passwordHash!)).toBe(false);
    const view = agentView(record);
    expect(view.hasPassword).toBe(true);
    expect(JSON.stringify(view)).not.toContain('scrypt');
  });

  it('keeps its agents across a restart, and concurrent creates of one id leave one agent', async () => {
    world = await make();
    const people = await directory();
    const results = await Promise.allSettled([people.create('mall', 'm1', { id: 'bob', capacity: 2 }), people.create('mall', 'm1', { id: 'bob', capacity: 9 })]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected']);
    await people.update('mall', 'm1', 'bob', { groups: ['vip'] });
    await people.setPassword('mall', 'm1', 'bob', 'correct horse battery');
    await people.create('mall', 'm2', { id: 'carol' });

    await world.restart();
    const again = await directory();
    expect(again.list('mall', 'm1')).toEqual(people.list('mall', 'm1'));
    expect(again.get('mall', 'm1', 'bob')).toMatchObject({ capacity: 2, groups: ['vip'] });
    expect(again.list('mall', 'm2').map((agent) => agent.id)).toEqual(['carol']);
  });

  it('a failed write changes nothing and tells no listener', async () => {
    world = await make();
    const people = await directory();
    await people.create('mall', 'm1', { id: 'bob' });
    const heard: AgentChange[] = [];
    people.onChange((change) => heard.push(change));
    await world.store.close();
    await expect(people.update('mall', 'm1', 'bob', { capacity: 9 })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(people.get('mall', 'm1', 'bob')?.capacity).toBe(5);
    expect(heard).toEqual([]);
  });

  it('seeds agents a merchant never had, once: the store wins after', async () => {
    world = await make();
    const seeded: MerchantPeople = { tenant: 'mall', merchant: 'm1', seeds: [{ id: 'ann', name: 'Ann', capacity: 2 }, { id: 'ben', groups: ['sales'], supervisor: true }] };
    const people = await directory([seeded]);
    expect(people.list('mall', 'm1').map((agent) => [agent.id, agent.name, agent.capacity, agent.groups, agent.supervisor])).toEqual([
      ['ann', 'Ann', 2, ['default'], false],
      ['ben', 'ben', 5, ['sales'], true],
    ]);
    await people.update('mall', 'm1', 'ann', { capacity: 7 });
    await people.remove('mall', 'm1', 'ben');

    await world.restart();
    const withMoreSeeds: MerchantPeople = { ...seeded, seeds: [...seeded.seeds!, { id: 'cat' }] };
    const again = await directory([withMoreSeeds]);
    expect(again.list('mall', 'm1').map((agent) => [agent.id, agent.capacity])).toEqual([
      ['ann', 7],
      ['cat', 5],
    ]);
  });

  it('forgets a merchant that moved out and reads one that moved in', async () => {
    world = await make();
    const people = await directory([M1]);
    await people.create('mall', 'm1', { id: 'bob' });
    people.forgetMerchant('mall', 'm1');
    expect(people.hasMerchant('mall', 'm1')).toBe(false);
    expect(people.get('mall', 'm1', 'bob')).toBeUndefined();
    expect(await codeOf(people.create('mall', 'm1', { id: 'bob' }))).toMatch(/^MERCHANT_NOT_HOSTED/);

    // What a move copies in: the merchant's desk keys, written by another cell's directory.
    const other = new PeopleDirectory({ store: world.store, clock });
    await other.load([M2]);
    await other.create('mall', 'm2', { id: 'dora', capacity: 4 });
    await people.reloadMerchant('mall', 'm2');
    await people.reloadMerchant('mall', 'm1');
    expect(people.get('mall', 'm2', 'dora')?.capacity).toBe(4);
    expect(people.list('mall', 'm1').map((agent) => agent.id)).toEqual(['bob']);
  });
});
