/**
 * Blocks of customers (docs/desk.md, "Blocks") over real uWS and LevelDB: an agent's `block`
 * frame and the admin API; a blocked customer's sends refused over WebSocket and HTTP with
 * CUSTOMER_BLOCKED, its open consultation closed; who may block; the audit log; a restart.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { ADMIN_TOKEN, Cleanup, RawClient, SECRET, errorCodeOf, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function startBlocksCell(directory: string): Promise<{ cell: RunningCell; url: string; base: string }> {
  const config = parseCellConfig({
    cell: { id: 'blocks-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    admin: { token: ADMIN_TOKEN },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1', agents: [{ id: 'ann', capacity: 2 }, { id: 'bob', capacity: 2 }, { id: 'sue', supervisor: true }] }] }],
  });
  const cell = await startCell({ config, logger: silentLogger });
  cleanup.add(() => cell.stop());
  const url = `http://127.0.0.1:${cell.port}`;
  return { cell, url, base: `${url}/v1/admin/tenants/mall/merchants/m1/blocks` };
}

const admin = (method: string, url: string, json?: unknown): ReturnType<typeof httpRequest> =>
  httpRequest(method, url, { token: ADMIN_TOKEN, ...(json === undefined ? {} : { json }) });

async function connect(url: string, user: string, merchant?: string): Promise<RawClient> {
  const client = await RawClient.connect(url, await tokenFor({ user, ...(merchant === undefined ? {} : { merchant }) }));
  cleanup.add(() => client.close());
  return client;
}

const isConsultation = (state: string) => (frame: ServerFrame) => frame.t === 'consultation' && frame.state === state;

describe('blocks of customers', () => {
  test('an assigned agent blocks: sends refused over WebSocket and HTTP, the consultation closed, recorded; unblock lifts it', async () => {
    const { url, base } = await startBlocksCell(await cleanup.tempDir());
    const ann = await connect(url, 'ann', 'm1');
    const cathy = await connect(url, 'cathy');
    const assigned = cathy.next(isConsultation('assigned'));
    await sendMessage(cathy, 'm1:cathy', 'c1', 'hello');
    expect(await assigned).toMatchObject({ agent: 'ann' });

    const closed = cathy.next(isConsultation('closed'));
    expect(await ann.request({ id: 'b1', op: 'block', conv: 'm1:cathy', reason: 'insults' })).toEqual({ t: 'ok', id: 'b1' });
    await closed;
    const refused = await cathy.request({ id: 's2', op: 'send', conv: 'm1:cathy', cmid: 'c2', body: 'again' });
    expect(refused).toMatchObject({ t: 'error', code: 'CUSTOMER_BLOCKED' });
    const overHttp = await httpRequest('POST', `${url}/v1/conversations/m1:cathy/messages`, { token: await tokenFor({ user: 'cathy', device: 'd2' }), json: { cmid: 'c3', body: 'http' } });
    expect([overHttp.status, errorCodeOf(overHttp)]).toEqual([403, 'CUSTOMER_BLOCKED']);

    const listed = await admin('GET', base);
    expect(listed.body).toMatchObject({ tenant: 'mall', merchant: 'm1', blocks: [{ customer: 'cathy', by: 'agent:m1:ann', reason: 'insults' }] });
    const audit = await admin('GET', `${url}/v1/admin/audit?action=customer.block`);
    expect(audit.body).toMatchObject({ entries: [{ actor: 'agent:m1:ann', action: 'customer.block', tenant: 'mall', merchant: 'm1', target: 'cathy', outcome: 'ok' }] });

    // The consultation is closed, so only a supervisor may lift the block now.
    const sue = await connect(url, 'sue', 'm1');
    expect(await sue.request({ id: 'u1', op: 'unblock', conv: 'm1:cathy' })).toEqual({ t: 'ok', id: 'u1' });
    expect((await sendMessage(cathy, 'm1:cathy', 'c4', 'sorry')).seq).toBeGreaterThan(1);
    const unblocks = await admin('GET', `${url}/v1/admin/audit?action=customer.unblock`);
    expect(unblocks.body).toMatchObject({ entries: [{ actor: 'agent:m1:sue', target: 'cathy' }] });
  });

  test('only agents of the conversation block: not another agent, not the customer', async () => {
    const { url } = await startBlocksCell(await cleanup.tempDir());
    const ann = await connect(url, 'ann', 'm1');
    const bob = await connect(url, 'bob', 'm1');
    const dave = await connect(url, 'dave');
    const assigned = dave.next(isConsultation('assigned'));
    await sendMessage(dave, 'm1:dave', 'd1', 'hi');
    const agent = ((await assigned) as { agent: string }).agent;
    const other = agent === 'ann' ? bob : ann;
    expect(await other.request({ id: 'b', op: 'block', conv: 'm1:dave' })).toMatchObject({ t: 'error', code: 'NOT_ASSIGNED' });
    expect(await dave.request({ id: 'b', op: 'block', conv: 'm1:dave' })).toMatchObject({ t: 'error', code: 'CONVERSATION_FORBIDDEN' });
    expect(await ann.request({ id: 'b2', op: 'block', conv: 'm2:dave' })).toMatchObject({ t: 'error', code: 'CONVERSATION_FORBIDDEN' });
  });

  test('the admin API blocks, reads, lists and unblocks; a block survives a restart', async () => {
    const directory = await cleanup.tempDir();
    let { cell, url, base } = await startBlocksCell(directory);
    expect((await admin('PUT', `${base}/eve`, { reason: 'spam' })).body).toMatchObject({ customer: 'eve', by: 'admin', reason: 'spam' });
    expect((await admin('PUT', `${base}/fay`)).body).toMatchObject({ customer: 'fay', by: 'admin' });
    expect((await admin('GET', `${base}/eve`)).body).toMatchObject({ customer: 'eve', reason: 'spam' });
    const firstPage = await admin('GET', `${base}?limit=1`);
    expect(firstPage.body).toMatchObject({ blocks: [{ customer: 'eve' }], next: 'eve' });
    expect((await admin('GET', `${base}?after=eve`)).body).toMatchObject({ blocks: [{ customer: 'fay' }] });

    await cell.stop();
    ({ cell, url, base } = await startBlocksCell(directory));
    const eve = await connect(url, 'eve');
    expect(await eve.request({ id: 's', op: 'send', conv: 'm1:eve', cmid: 'e1', body: 'hi' })).toMatchObject({ t: 'error', code: 'CUSTOMER_BLOCKED' });

    expect((await admin('DELETE', `${base}/eve`)).body).toMatchObject({ unblocked: { customer: 'eve' } });
    const again = await admin('DELETE', `${base}/eve`);
    expect([again.status, errorCodeOf(again)]).toEqual([404, 'NOT_FOUND']);
    expect((await sendMessage(eve, 'm1:eve', 'e2', 'hi')).seq).toBe(1);
    const audit = await admin('GET', `${url}/v1/admin/audit?tenant=mall`);
    expect((audit.body as { entries: Array<{ action: string; actor: string; target: string; outcome: string }> }).entries.map((entry) => [entry.action, entry.actor, entry.target, entry.outcome])).toEqual([
      ['customer.unblock', 'admin', 'eve', 'failed'],
      ['customer.unblock', 'admin', 'eve', 'ok'],
      ['customer.block', 'admin', 'fay', 'ok'],
      ['customer.block', 'admin', 'eve', 'ok'],
    ]);
  });
});
