import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { LevelStore, MemoryStore } from '../platform/store/index.js';
import { AuditLog } from './audit-log.js';

let directory: string | undefined;
afterEach(async () => {
  if (directory !== undefined) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

describe('AuditLog', () => {
  it('lists newest first, keeps the order of one millisecond, filters, and pages with after', async () => {
    const store = new MemoryStore();
    await store.open();
    const clock = new ManualClock(5_000);
    const audit = new AuditLog({ store, clock });
    await audit.load();
    await audit.record({ actor: 'admin', action: 'agent.create', tenant: 'mall', merchant: 'm1', target: 'bob', details: { capacity: 3 } });
    await audit.record({ actor: 'admin', action: 'agent.update', tenant: 'mall', merchant: 'm1', target: 'bob' });
    clock.advance(1);
    await audit.record({ actor: 'admin', action: 'agent.create', tenant: 'market', merchant: 'm9', target: 'bob', error: { code: 'AGENT_EXISTS', message: 'taken' } });
    await audit.record({ actor: 'admin', action: 'merchant.move', tenant: 'mall', merchant: 'm2', details: { to: 'c2' } });

    const all = await audit.list();
    expect(all.next).toBeUndefined();
    expect(all.entries.map((entry) => [entry.atMs, entry.action, entry.tenant, entry.outcome])).toEqual([
      [5_001, 'merchant.move', 'mall', 'ok'],
      [5_001, 'agent.create', 'market', 'failed'],
      [5_000, 'agent.update', 'mall', 'ok'],
      [5_000, 'agent.create', 'mall', 'ok'],
    ]);
    expect(all.entries[1]).toMatchObject({ actor: 'admin', target: 'bob', error: { code: 'AGENT_EXISTS', message: 'taken' } });
    expect(all.entries[3]).toEqual({ id: all.entries[3]!.id, atMs: 5_000, actor: 'admin', action: 'agent.create', tenant: 'mall', merchant: 'm1', target: 'bob', details: { capacity: 3 }, outcome: 'ok' });

    expect((await audit.list({ tenant: 'mall' })).entries.map((entry) => entry.action)).toEqual(['merchant.move', 'agent.update', 'agent.create']);
    expect((await audit.list({ action: 'agent.create' })).entries.map((entry) => entry.tenant)).toEqual(['market', 'mall']);

    const first = await audit.list({ limit: 3 });
    expect(first.entries).toEqual(all.entries.slice(0, 3));
    expect(first.next).toBe(all.entries[2]!.id);
    const second = await audit.list({ limit: 3, after: first.next });
    expect(second.entries).toEqual(all.entries.slice(3));
    expect(second.next).toBeUndefined();
    await store.close();
  });

  it('is durable, and a restart in the same millisecond neither overwrites nor reorders entries', async () => {
    directory = await mkdtemp(join(tmpdir(), 'cellmesh-audit-'));
    const clock = new ManualClock(7_000);
    const firstStore = new LevelStore({ directory });
    await firstStore.open();
    const before = new AuditLog({ store: firstStore, clock });
    await before.load();
    await before.record({ actor: 'admin', action: 'mesh.block', details: { cells: ['c2'] } });
    await before.record({ actor: 'admin', action: 'mesh.unblock', details: { cells: ['c2'] } });
    await firstStore.close();

    const store = new LevelStore({ directory });
    await store.open();
    const after = new AuditLog({ store, clock });
    await after.load();
    await after.record({ actor: 'admin', action: 'cell.capacity', details: { maxDevices: 10 } });
    expect((await after.list()).entries.map((entry) => entry.action)).toEqual(['cell.capacity', 'mesh.unblock', 'mesh.block']);
    await store.close();
  });

  it('stops a filtered scan after 10,000 entries and says where to go on', async () => {
    const store = new MemoryStore();
    await store.open();
    const audit = new AuditLog({ store, clock: new ManualClock(1) });
    await audit.load();
    await audit.record({ actor: 'admin', action: 'agent.remove', tenant: 'rare' });
    for (let index = 0; index < 10_050; index++) await audit.record({ actor: 'admin', action: 'agent.update', tenant: 'common' });
    const page = await audit.list({ tenant: 'rare' });
    expect(page.entries).toEqual([]);
    expect(page.next).toBeDefined();
    const rest = await audit.list({ tenant: 'rare', after: page.next });
    expect(rest.entries.map((entry) => entry.action)).toEqual(['agent.remove']);
    expect(rest.next).toBeUndefined();
    await store.close();
  });
});
