/**
 * `GET /v1/admin/desks` over real uWS: the queues and agents of each merchant the cell hosts, as
 * the cell console shows them (docs/protocol.md, "HTTP API").
 */
import { afterEach, describe, expect, test } from 'vitest';
import { ADMIN_TOKEN, Cleanup, errorCodeOf, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('GET /v1/admin/desks', () => {
  test("per merchant: its agents' status and load, its queue by group with the oldest wait, its consultations", async () => {
    const cell = await cleanup.cell({ admin: ADMIN_TOKEN, agents: [{ id: 'ann', name: 'Ann', capacity: 1 }, { id: 'bob', name: 'Bob', capacity: 2, groups: ['sales'] }] });
    const ann = await cleanup.client(cell.url, await tokenFor({ user: 'ann', merchant: 'm1', device: 'desk' }));
    const alice = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const carol = await cleanup.client(cell.url, await tokenFor({ user: 'carol', device: 'phone' }));
    await sendMessage(alice, 'm1:alice', 'a1', 'hello');
    await ann.until(() => ann.messages('m1:alice').length > 0);
    // Ann has room for one: Carol waits.
    await sendMessage(carol, 'm1:carol', 'c1', 'anyone?');

    const answer = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks`, { token: ADMIN_TOKEN });
    expect(answer.status).toBe(200);
    const body = answer.body as { cellId: string; desks: Array<{ queues: Array<{ oldestWaitMs: number }> }> };
    expect(body).toEqual({
      cellId: 'test-cell',
      desks: [
        {
          tenant: 'mall',
          merchant: 'm1',
          agents: [
            { id: 'ann', name: 'Ann', status: 'online', capacity: 1, open: 1, groups: ['default'] },
            { id: 'bob', name: 'Bob', status: 'offline', capacity: 2, open: 0, groups: ['sales'] },
          ],
          queues: [
            { group: 'default', length: 1, oldestWaitMs: expect.any(Number) as unknown },
            { group: 'sales', length: 0, oldestWaitMs: 0 },
          ],
          consultations: { waiting: 1, assigned: 1 },
        },
      ],
    });
    expect(body.desks[0]!.queues[0]!.oldestWaitMs).toBeGreaterThanOrEqual(0);

    const filtered = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks?tenant=mall&merchant=m2`, { token: ADMIN_TOKEN });
    expect(filtered.body).toEqual({ cellId: 'test-cell', desks: [] });
  });

  test('refusals: no admin token, an unknown tenant, a merchant without its tenant, an unknown parameter', async () => {
    const cell = await cleanup.cell({ admin: ADMIN_TOKEN });
    const anonymous = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks`);
    expect([anonymous.status, errorCodeOf(anonymous)]).toEqual([403, 'ADMIN_FORBIDDEN']);
    const unknown = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks?tenant=nowhere`, { token: ADMIN_TOKEN });
    expect([unknown.status, errorCodeOf(unknown)]).toEqual([404, 'TENANT_UNKNOWN']);
    const merchantAlone = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks?merchant=m1`, { token: ADMIN_TOKEN });
    expect([merchantAlone.status, errorCodeOf(merchantAlone)]).toEqual([400, 'BAD_FRAME']);
    const extra = await httpRequest('GET', `${cell.httpUrl}/v1/admin/desks?limit=3`, { token: ADMIN_TOKEN });
    expect([extra.status, errorCodeOf(extra)]).toEqual([400, 'BAD_FRAME']);
  });
});
