/**
 * The admin API of the desk's people and of the audit log (docs/protocol.md, "HTTP API") over
 * real uWS and LevelDB, on a standalone cell: agents created, listed, changed, removed, given a
 * password; validation and refusals; persistence across a restart; every change in the audit log.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { verifyPassword } from '../cell/access/passwords.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, Cleanup, OTHER_SECRET, SECRET, errorCodeOf, httpRequest } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface AdminCell {
  cell: RunningCell;
  base: string;
}

/** A standalone cell with the admin token, on LevelDB in `directory`; seeds agent `ann` of m1. */
async function startAdminCell(directory: string): Promise<AdminCell> {
  const config = parseCellConfig({
    cell: { id: 'people-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    admin: { token: ADMIN_TOKEN },
    tenants: [
      { id: 'mall', secret: SECRET, origins: ['http://shop.example'], merchants: [{ id: 'm1', agents: [{ id: 'ann', name: 'Ann', capacity: 2 }] }, { id: 'm2' }] },
      { id: 'market', secret: OTHER_SECRET, merchants: [{ id: 'm9' }] },
    ],
  });
  const cell = await startCell({ config, logger: silentLogger });
  return { cell, base: `http://127.0.0.1:${cell.port}/v1/admin` };
}

const admin = (method: string, url: string, json?: unknown): ReturnType<typeof httpRequest> =>
  httpRequest(method, url, { token: ADMIN_TOKEN, ...(json === undefined ? {} : { json }) });

describe('the admin API of people', () => {
  test('creates, lists, updates, sets a password, removes; never shows a hash; keeps it all across a restart', async () => {
    const directory = await cleanup.tempDir();
    let { cell, base } = await startAdminCell(directory);
    cleanup.add(() => cell.stop());
    const agents = `${base}/tenants/mall/merchants/m1/agents`;

    const tenants = await admin('GET', `${base}/tenants`);
    expect(tenants.status).toBe(200);
    expect(tenants.body).toEqual({
      tenants: [
        { id: 'mall', source: 'config', origins: ['http://shop.example'], kids: [], merchants: [{ id: 'm1', source: 'config', agents: 1 }, { id: 'm2', source: 'config', agents: 0 }] },
        { id: 'market', source: 'config', origins: [], kids: [], merchants: [{ id: 'm9', source: 'config', agents: 0 }] },
      ],
    });
    expect(tenants.text).not.toContain(SECRET);

    const created = await admin('POST', agents, { id: 'bob', name: 'Bob Stone', capacity: 3, groups: ['pre-sales', 'after-sales'] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: 'bob', name: 'Bob Stone', capacity: 3, groups: ['pre-sales', 'after-sales'], supervisor: false, hasPassword: false });
    expect((await admin('POST', agents, { id: 'sue', supervisor: true })).status).toBe(201);

    const listed = await admin('GET', agents);
    expect(listed.status).toBe(200);
    const body = listed.body as { tenant: string; merchant: string; agents: Array<{ id: string; name: string; capacity: number }> };
    expect([body.tenant, body.merchant]).toEqual(['mall', 'm1']);
    expect(body.agents.map((agent) => [agent.id, agent.name, agent.capacity])).toEqual([
      ['ann', 'Ann', 2],
      ['bob', 'Bob Stone', 3],
      ['sue', 'sue', 5],
    ]);

    const updated = await admin('PATCH', `${agents}/bob`, { capacity: 6, supervisor: true });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ id: 'bob', name: 'Bob Stone', capacity: 6, groups: ['pre-sales', 'after-sales'], supervisor: true });

    const password = await admin('PUT', `${agents}/bob/password`, { password: 'correct horse battery' });
    expect(password.status).toBe(200);
    expect(password.body).toMatchObject({ id: 'bob', hasPassword: true });
    expect(password.text).not.toMatch(/scrypt|correct horse/);
    expect(await verifyPassword('correct horse battery', cell.people.get('mall', 'm1', 'bob')!.passwordHash!)).toBe(true);

    const removed = await admin('DELETE', `${agents}/sue`);
    expect(removed.status).toBe(200);
    expect(removed.body).toMatchObject({ removed: { id: 'sue' } });
    expect(errorCodeOf(await admin('GET', `${agents}/sue`))).toBe('AGENT_UNKNOWN');
    expect(errorCodeOf(await admin('DELETE', `${agents}/ann`))).toBeUndefined();

    // A restart on the same LevelDB directory: the store wins over the config's seed (ann stays removed).
    await cell.stop();
    ({ cell, base } = await startAdminCell(directory));
    const after = await admin('GET', `${base}/tenants/mall/merchants/m1/agents`);
    expect((after.body as { agents: Array<{ id: string }> }).agents.map((agent) => agent.id)).toEqual(['bob']);
    expect((await admin('GET', `${base}/tenants/mall/merchants/m1/agents/bob`)).body).toMatchObject({ capacity: 6, supervisor: true, hasPassword: true });

    const audit = await admin('GET', `${base}/audit`);
    expect(audit.status).toBe(200);
    const entries = (audit.body as { entries: Array<{ action: string; target?: string; outcome: string; details?: unknown }> }).entries;
    expect(entries.map((entry) => [entry.action, entry.target, entry.outcome])).toEqual([
      ['agent.remove', 'ann', 'ok'],
      ['agent.remove', 'sue', 'ok'],
      ['agent.password', 'bob', 'ok'],
      ['agent.update', 'bob', 'ok'],
      ['agent.create', 'sue', 'ok'],
      ['agent.create', 'bob', 'ok'],
    ]);
    expect(entries[2]!.details).toBeUndefined();
    expect(JSON.stringify(entries)).not.toContain('correct horse');
    expect(entries[3]!.details).toEqual({ capacity: 6, supervisor: true });
  }, 60_000);

  test('validation, unknown places and refusals get clear typed errors; failures are audited, reads are not', async () => {
    const { cell, base } = await startAdminCell(await cleanup.tempDir());
    cleanup.add(() => cell.stop());
    const agents = `${base}/tenants/mall/merchants/m1/agents`;
    await admin('POST', agents, { id: 'bob' });

    const cases: Array<{ name: string; method: string; url: string; json?: unknown; rawBody?: string; token?: string; status: number; code: string; message?: RegExp }> = [
      { name: 'no token', method: 'GET', url: agents, token: '', status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'a device token is no admin token', method: 'POST', url: agents, token: 'not-the-admin-token', json: { id: 'x' }, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'unknown tenant', method: 'GET', url: `${base}/tenants/nowhere/merchants/m1/agents`, status: 404, code: 'TENANT_UNKNOWN', message: /no tenant nowhere/ },
      { name: 'merchant not hosted', method: 'POST', url: `${base}/tenants/mall/merchants/m7/agents`, json: { id: 'x' }, status: 404, code: 'MERCHANT_NOT_HOSTED' },
      { name: 'another tenant\'s merchant', method: 'GET', url: `${base}/tenants/market/merchants/m1/agents`, status: 404, code: 'MERCHANT_NOT_HOSTED' },
      { name: 'agent id not an identifier', method: 'GET', url: `${agents}/a%20b`, status: 400, code: 'BAD_FRAME', message: /agent: 'a b' must be/ },
      { name: 'an agent twice', method: 'POST', url: agents, json: { id: 'bob' }, status: 409, code: 'AGENT_EXISTS' },
      { name: 'capacity zero', method: 'POST', url: agents, json: { id: 'zed', capacity: 0 }, status: 400, code: 'BAD_FRAME', message: /^capacity: must be at least 1$/ },
      { name: 'capacity a string', method: 'PATCH', url: `${agents}/bob`, json: { capacity: '3' }, status: 400, code: 'BAD_FRAME', message: /^capacity:/ },
      { name: 'too many groups', method: 'PATCH', url: `${agents}/bob`, json: { groups: Array.from({ length: 51 }, (_, index) => `g${index}`) }, status: 400, code: 'BAD_FRAME', message: /at most 50 groups/ },
      { name: 'an unknown field', method: 'PATCH', url: `${agents}/bob`, json: { status: 'online' }, status: 400, code: 'BAD_FRAME', message: /status/ },
      { name: 'an empty change', method: 'PATCH', url: `${agents}/bob`, json: {}, status: 400, code: 'BAD_FRAME', message: /at least one of/ },
      { name: 'not JSON', method: 'POST', url: agents, rawBody: '{"id":', status: 400, code: 'BAD_JSON' },
      { name: 'unknown agent', method: 'PATCH', url: `${agents}/nobody`, json: { capacity: 2 }, status: 404, code: 'AGENT_UNKNOWN' },
      { name: 'short password', method: 'PUT', url: `${agents}/bob/password`, json: { password: 'short' }, status: 400, code: 'BAD_FRAME', message: /^password: must be at least 10 characters$/ },
      { name: 'password missing', method: 'PUT', url: `${agents}/bob/password`, json: {}, status: 400, code: 'BAD_FRAME', message: /^password:/ },
      { name: 'audit limit over 1000', method: 'GET', url: `${base}/audit?limit=5000`, status: 400, code: 'BAD_FRAME', message: /^limit: must be at most 1000$/ },
      { name: 'audit after that is no entry id', method: 'GET', url: `${base}/audit?after=yesterday`, status: 400, code: 'BAD_FRAME', message: /^after:/ },
      { name: 'move on a standalone cell', method: 'POST', url: `${base}/merchants/move`, json: { tenant: 'mall', merchant: 'm1', to: 'c2' }, status: 404, code: 'MESH_DISABLED' },
    ];
    const problems: string[] = [];
    for (const row of cases) {
      const answer = await httpRequest(row.method, row.url, {
        ...(row.token === '' ? {} : { token: row.token ?? ADMIN_TOKEN }),
        ...(row.json === undefined ? {} : { json: row.json }),
        ...(row.rawBody === undefined ? {} : { rawBody: row.rawBody }),
      });
      const message = (answer.body as { error?: { message?: string } } | undefined)?.error?.message ?? '';
      if (answer.status !== row.status || errorCodeOf(answer) !== row.code || (row.message !== undefined && !row.message.test(message))) {
        problems.push(`${row.name}: expected ${row.status} ${row.code} ${row.message ?? ''}, got ${answer.status} ${answer.text.slice(0, 200)}`);
      }
    }
    expect(problems).toEqual([]);
    expect((await admin('GET', `${agents}/bob`)).body).toMatchObject({ capacity: 5, groups: ['default'], hasPassword: false });

    // Refused tokens and reads are not recorded; every change the admin asked for is, with its outcome.
    const audit = await admin('GET', `${base}/audit?limit=1000`);
    const entries = (audit.body as { entries: Array<{ action: string; outcome: string; tenant?: string; merchant?: string; error?: { code: string } }> }).entries;
    expect(entries.map((entry) => `${entry.action} ${entry.outcome} ${entry.error?.code ?? ''}`.trim()).reverse()).toEqual([
      'agent.create ok',
      'agent.create failed MERCHANT_NOT_HOSTED',
      'agent.create failed AGENT_EXISTS',
      'agent.create failed BAD_FRAME',
      'agent.update failed BAD_FRAME',
      'agent.update failed BAD_FRAME',
      'agent.update failed BAD_FRAME',
      'agent.update failed BAD_FRAME',
      'agent.create failed BAD_JSON',
      'agent.update failed AGENT_UNKNOWN',
      'agent.password failed BAD_FRAME',
      'agent.password failed BAD_FRAME',
      'merchant.move failed MESH_DISABLED',
    ]);
    expect(entries[0]).toMatchObject({ tenant: 'mall', merchant: 'm1', details: { tenant: 'mall', merchant: 'm1', to: 'c2' } });

    const filtered = await admin('GET', `${base}/audit?action=agent.password&limit=1`);
    const page = filtered.body as { entries: Array<{ action: string }>; next?: string };
    expect(page.entries.map((entry) => entry.action)).toEqual(['agent.password']);
    const rest = await admin('GET', `${base}/audit?action=agent.password&after=${page.next}`);
    expect(rest.body).toMatchObject({ entries: [{ action: 'agent.password' }] });
    expect((rest.body as { next?: string }).next).toBeUndefined();
  }, 60_000);
});
