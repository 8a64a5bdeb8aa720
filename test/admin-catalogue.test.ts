/**
 * The admin API of tenants and merchants (docs/desk.md, "Tenants and merchants") over real uWS and
 * LevelDB, on a standalone cell: a tenant created at runtime whose generated secret mints tokens
 * that verify at once, a runtime merchant customers chat with, all of it kept across a restart;
 * config-owned tenants and merchants refused; validation; removal closing devices and refusing
 * tokens; every change in the audit log, never a secret.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { mintToken } from '../cell/access/tokens.js';
import { silentLogger } from '../platform/logger.js';
import { ManualClock } from '../platform/manual-clock.js';
import { ADMIN_TOKEN, Cleanup, RawClient, SECRET, errorCodeOf, eventually, expectUpgradeRejected, httpRequest, sendMessage } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface AdminCell {
  cell: RunningCell;
  base: string;
  url: string;
}

/** A standalone cell with the admin token and config tenant `mall` (merchant m1), on LevelDB in `directory`. */
async function startAdminCell(directory: string, clock?: ManualClock): Promise<AdminCell> {
  const config = parseCellConfig({
    cell: { id: 'catalogue-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    admin: { token: ADMIN_TOKEN },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }],
  });
  const cell = await startCell({ config, logger: silentLogger, ...(clock === undefined ? {} : { clock }) });
  cleanup.add(() => cell.stop());
  return { cell, base: `http://127.0.0.1:${cell.port}/v1/admin`, url: `ws://127.0.0.1:${cell.port}` };
}

const admin = (method: string, url: string, json?: unknown): ReturnType<typeof httpRequest> =>
  httpRequest(method, url, { token: ADMIN_TOKEN, ...(json === undefined ? {} : { json }) });

function token(secret: string, tenant: string, user: string, merchant?: string, kid?: string, ttlSeconds = 600): Promise<string> {
  return mintToken({
    secret,
    ...(kid === undefined ? {} : { kid }),
    tenant,
    user,
    role: merchant === undefined ? 'customer' : 'agent',
    ...(merchant === undefined ? {} : { merchant }),
    device: 'd1',
    ttlSeconds,
    nowMs: Date.now(),
  });
}

describe('the admin API of tenants and merchants', () => {
  test('a runtime tenant and merchant serve chats at once, and are still there after a restart', async () => {
    const directory = await cleanup.tempDir();
    let { cell, base, url } = await startAdminCell(directory);

    const created = await admin('POST', `${base}/tenants`, { id: 'bazaar', name: 'Bazaar', origins: ['https://bazaar.example'], retention: { conversationDays: 30 } });
    expect(created.status).toBe(201);
    const { secret } = created.body as { secret: { kid: string; secret: string } };
    expect(secret.kid).toBe('k1');
    expect(secret.secret.length).toBeGreaterThanOrEqual(32);
    expect(created.body).toMatchObject({ tenant: { id: 'bazaar', name: 'Bazaar', source: 'runtime', origins: ['https://bazaar.example'], kids: ['k1'], retention: { conversationDays: 30 }, merchants: [] } });

    const merchant = await admin('POST', `${base}/tenants/bazaar/merchants`, { id: 'stall', name: 'The Stall' });
    expect(merchant.status).toBe(201);
    expect(merchant.body).toEqual({ id: 'stall', name: 'The Stall', source: 'runtime' });

    // The secret answered once mints tokens that verify at once: a customer chats with the new merchant.
    const agent = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'ann', 'stall'));
    cleanup.add(() => agent.close());
    const customer = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'cleo'));
    cleanup.add(() => customer.close());
    expect(await customer.request({ id: 's1', op: 'send', conv: 'stall:cleo', cmid: 'c1', body: 'hello stall' })).toMatchObject({ t: 'sent', seq: 1 });
    expect(await agent.next((frame) => frame.t === 'msg', { fromStart: true })).toMatchObject({ conv: 'stall:cleo', body: 'hello stall' });

    // The cell mints for the new tenant too: a guest token of its merchant.
    const guest = await httpRequest('POST', `http://127.0.0.1:${cell.port}/v1/guest`, { json: { tenant: 'bazaar', merchant: 'stall' } });
    expect(guest.status).toBe(200);
    await (await RawClient.connect(url, (guest.body as { token: string }).token)).close();

    const listed = await admin('GET', `${base}/tenants`);
    expect(listed.text).not.toContain(secret.secret);
    expect(listed.text).not.toContain(SECRET);
    expect((listed.body as { tenants: unknown[] }).tenants).toEqual([
      expect.objectContaining({ id: 'mall', source: 'config', merchants: [{ id: 'm1', source: 'config', agents: 0 }] }),
      expect.objectContaining({ id: 'bazaar', source: 'runtime', merchants: [{ id: 'stall', name: 'The Stall', source: 'runtime', agents: 0 }] }),
    ]);

    // A runtime merchant of a config tenant.
    expect((await admin('POST', `${base}/tenants/mall/merchants`, { id: 'm7' })).status).toBe(201);

    await agent.close();
    await customer.close();
    await cell.stop();
    ({ cell, base, url } = await startAdminCell(directory));
    const again = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'cleo'));
    cleanup.add(() => again.close());
    const history = await again.request({ id: 'h1', op: 'history', conv: 'stall:cleo' });
    expect(history).toMatchObject({ t: 'history', messages: [expect.objectContaining({ body: 'hello stall' })] });
    expect(await admin('GET', `${base}/tenants/mall/merchants`)).toMatchObject({
      status: 200,
      body: { tenant: 'mall', merchants: [{ id: 'm1', source: 'config', agents: 0 }, { id: 'm7', source: 'runtime', agents: 0 }] },
    });
    expect((await admin('GET', `${base}/tenants/bazaar`)).body).toMatchObject({ id: 'bazaar', name: 'Bazaar', kids: ['k1'], merchants: [{ id: 'stall', name: 'The Stall' }] });
  });

  test('rotates a secret, refuses config-owned changes, conflicts and bad input, and audits without secrets', async () => {
    const { base, url } = await startAdminCell(await cleanup.tempDir());
    const given = 'bazaar-own-secret-0123456789-abcdefghijkl';
    expect((await admin('POST', `${base}/tenants`, { id: 'bazaar', secret: given })).body).not.toHaveProperty('secret');

    const rotated = await admin('PATCH', `${base}/tenants/bazaar`, { addSecret: { kid: 'k2' }, origins: ['https://new.example'] });
    expect(rotated.status).toBe(200);
    const second = (rotated.body as { secret: { kid: string; secret: string } }).secret;
    expect(second.kid).toBe('k2');
    expect(rotated.body).toMatchObject({ tenant: { kids: ['k1', 'k2'], origins: ['https://new.example'] } });
    expect((await admin('POST', `${base}/tenants/bazaar/merchants`, { id: 'stall' })).status).toBe(201);
    // Both secrets verify during the rotation; once the old one is dropped, its tokens are refused.
    await (await RawClient.connect(url, await token(second.secret, 'bazaar', 'cleo', undefined, 'k2'))).close();
    expect((await admin('PATCH', `${base}/tenants/bazaar`, { removeSecret: 'k1' })).body).toMatchObject({ tenant: { kids: ['k2'] } });
    expect((await expectUpgradeRejected(url, await token(given, 'bazaar', 'cleo'))).code).toBe('TOKEN_INVALID');

    const refusals: Array<[string, string, unknown, number, string]> = [
      ['PATCH', '/tenants/mall', { origins: [] }, 409, 'CONFIG_OWNED'],
      ['DELETE', '/tenants/mall', undefined, 409, 'CONFIG_OWNED'],
      ['DELETE', '/tenants/mall/merchants/m1', undefined, 409, 'CONFIG_OWNED'],
      ['PATCH', '/tenants/mall/merchants/m1', { name: 'M One' }, 409, 'CONFIG_OWNED'],
      ['POST', '/tenants', { id: 'mall' }, 409, 'TENANT_EXISTS'],
      ['POST', '/tenants', { id: 'bazaar' }, 409, 'TENANT_EXISTS'],
      ['POST', '/tenants/mall/merchants', { id: 'm1' }, 409, 'MERCHANT_EXISTS'],
      ['DELETE', '/tenants/bazaar', undefined, 409, 'TENANT_NOT_EMPTY'],
      ['POST', '/tenants', { id: 'weak', secret: 'a'.repeat(40) }, 400, 'BAD_FRAME'],
      ['POST', '/tenants', { id: 'short', secret: 'too-short' }, 400, 'BAD_FRAME'],
      ['POST', '/tenants', { id: 'bad/id' }, 400, 'BAD_FRAME'],
      ['POST', '/tenants', { id: 'x', origins: ['not a url'] }, 400, 'BAD_FRAME'],
      ['POST', '/tenants', { id: 'x', colour: 'red' }, 400, 'BAD_FRAME'],
      ['PATCH', '/tenants/bazaar', {}, 400, 'BAD_FRAME'],
      ['PATCH', '/tenants/bazaar', { removeSecret: 'k2' }, 400, 'BAD_FRAME'],
      ['PATCH', '/tenants/nobody', { name: 'x' }, 404, 'TENANT_UNKNOWN'],
      ['POST', '/tenants/nobody/merchants', { id: 'x' }, 404, 'TENANT_UNKNOWN'],
      ['DELETE', '/tenants/bazaar/merchants/ghost', undefined, 404, 'MERCHANT_NOT_HOSTED'],
    ];
    for (const [method, path, body, status, code] of refusals) {
      const answer = await admin(method, `${base}${path}`, body);
      expect([method, path, answer.status, errorCodeOf(answer)]).toEqual([method, path, status, code]);
    }
    expect((await admin('GET', `${base}/tenants/mall`)).body).toMatchObject({ source: 'config' });
    expect((await admin('POST', `${base}/tenants`, { id: 'x' }).then((answer) => answer.status))).toBe(201);
    expect((await httpRequest('POST', `${base}/tenants`, { token: 'wrong', json: { id: 'y' } })).status).toBe(403);

    const audit = await admin('GET', `${base}/audit?limit=100`);
    expect(audit.text).not.toContain(given);
    expect(audit.text).not.toContain(second.secret);
    const entries = (audit.body as { entries: Array<{ action: string; tenant?: string; outcome: string; error?: { code: string } }> }).entries;
    expect(entries).toContainEqual(expect.objectContaining({ action: 'tenant.create', tenant: 'bazaar', outcome: 'ok' }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'tenant.update', tenant: 'bazaar', outcome: 'ok' }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'merchant.create', tenant: 'bazaar', outcome: 'ok' }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'tenant.remove', tenant: 'mall', outcome: 'failed', error: expect.objectContaining({ code: 'CONFIG_OWNED' }) }));
  });

  test('removing a merchant closes its agents and refuses them; removing its tenant then refuses every token', async () => {
    const { base, url } = await startAdminCell(await cleanup.tempDir());
    const { secret } = (await admin('POST', `${base}/tenants`, { id: 'bazaar' })).body as { secret: { secret: string } };
    await admin('POST', `${base}/tenants/bazaar/merchants`, { id: 'stall' });
    await admin('POST', `${base}/tenants/bazaar/merchants/stall/agents`, { id: 'ann' });
    const agent = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'ann', 'stall'));
    const customer = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'cleo'));
    cleanup.add(() => customer.close());
    expect(await customer.request({ id: 's1', op: 'send', conv: 'stall:cleo', cmid: 'c1', body: 'hi' })).toMatchObject({ t: 'sent' });

    const removed = await admin('DELETE', `${base}/tenants/bazaar/merchants/stall`);
    expect(removed).toMatchObject({ status: 200, body: { removed: { id: 'stall', source: 'runtime' } } });
    await agent.whenClosed();
    expect(agent.closeCode).toBe(4403);
    expect(agent.closeReason).toContain('removed');
    expect((await expectUpgradeRejected(url, await token(secret.secret, 'bazaar', 'ann', 'stall'))).code).toBe('MERCHANT_NOT_HOSTED');
    expect(await customer.request({ id: 's2', op: 'send', conv: 'stall:cleo', cmid: 'c2', body: 'still there?' })).toMatchObject({ t: 'error', code: 'MERCHANT_NOT_HOSTED' });
    // Its desk went with it: a merchant created again with this id starts without agents.
    await admin('POST', `${base}/tenants/bazaar/merchants`, { id: 'stall' });
    expect((await admin('GET', `${base}/tenants/bazaar/merchants/stall/agents`)).body).toMatchObject({ agents: [] });
    await admin('DELETE', `${base}/tenants/bazaar/merchants/stall`);

    expect((await admin('DELETE', `${base}/tenants/bazaar`)).status).toBe(200);
    await customer.whenClosed();
    expect(customer.closeCode).toBe(4403);
    expect((await expectUpgradeRejected(url, await token(secret.secret, 'bazaar', 'cleo'))).code).toBe('TOKEN_INVALID');
    expect(((await admin('GET', `${base}/tenants`)).body as { tenants: Array<{ id: string }> }).tenants.map((tenant) => tenant.id)).toEqual(['mall']);
  });

  test('a runtime tenant\'s retention, set or changed through the API, is swept without a restart', async () => {
    const DAY_MS = 24 * 60 * 60 * 1000;
    const clock = new ManualClock(Date.now());
    const { base, url } = await startAdminCell(await cleanup.tempDir(), clock);
    const { secret } = (await admin('POST', `${base}/tenants`, { id: 'bazaar' })).body as { secret: { secret: string } };
    await admin('POST', `${base}/tenants/bazaar/merchants`, { id: 'stall' });
    const customer = await RawClient.connect(url, await token(secret.secret, 'bazaar', 'cleo', undefined, undefined, 90 * 24 * 3600));
    cleanup.add(() => customer.close());
    for (const cmid of ['old1', 'old2']) await sendMessage(customer, 'stall:cleo', cmid, cmid);
    expect((await admin('PATCH', `${base}/tenants/bazaar`, { retention: { conversationDays: 1 } })).body).toMatchObject({ tenant: { retention: { conversationDays: 1 } } });
    clock.advance(2 * DAY_MS);
    await sendMessage(customer, 'stall:cleo', 'new', 'two days later');
    await eventually(async () => {
      clock.advance(60_000);
      const history = await customer.request({ id: `h${Math.random()}`, op: 'history', conv: 'stall:cleo' });
      return history.t === 'history' && history.messages.length === 1;
    }, 'the old messages of the runtime tenant deleted');
  });
});
