/**
 * Runtime tenants and merchants in a cluster of two real cells (uWS, LevelDB, libp2p): a merchant
 * created on one cell is claimed there and refused on the other; moved to a cell that lacks its
 * tenant, it brings the tenant's record, so the target verifies its tokens and serves its
 * history, also after a restart; removed there, its claim is withdrawn everywhere.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { mintToken } from '../cell/access/tokens.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, Cleanup, RawClient, SECRET, TENANT, errorCodeOf, eventually, freePort, httpRequest } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface ClusterCell {
  cell: RunningCell;
  http: string;
  url: string;
}

async function startMeshCell(root: string, cellId: string, bootstrap: readonly string[]): Promise<ClusterCell> {
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: await freePort() },
    store: { kind: 'level', directory: join(root, cellId), sync: true },
    tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: `home-of-${cellId}` }] }],
    mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [...bootstrap] },
    admin: { token: ADMIN_TOKEN },
  });
  const cell = await startCell({ config, logger: silentLogger });
  cleanup.add(() => cell.stop());
  return { cell, http: `http://127.0.0.1:${cell.port}`, url: `ws://127.0.0.1:${cell.port}` };
}

const admin = (method: string, cell: ClusterCell, path: string, json?: unknown): ReturnType<typeof httpRequest> =>
  httpRequest(method, `${cell.http}/v1/admin${path}`, { token: ADMIN_TOKEN, ...(json === undefined ? {} : { json }) });

const routeOf = async (cell: ClusterCell, merchant: string): Promise<string | undefined> =>
  ((await httpRequest('GET', `${cell.http}/v1/route?tenant=bazaar&merchant=${merchant}`)).body as { cellId?: string }).cellId;

function customerToken(secret: string): Promise<string> {
  return mintToken({ secret, tenant: 'bazaar', user: 'cleo', role: 'customer', device: 'd1', ttlSeconds: 600, nowMs: Date.now() });
}

describe('runtime tenants and merchants in a cluster', () => {
  test('a merchant is claimed where it is created, moves with its tenant to a cell without it, and is withdrawn when removed', async () => {
    const root = await cleanup.tempDir();
    const c1 = await startMeshCell(root, 'c1', []);
    const p2p = c1.cell.mesh!.transport.addresses();
    const c2 = await startMeshCell(root, 'c2', p2p);
    await eventually(() => c1.cell.mesh!.mesh.directory.homeCellOf(TENANT, 'home-of-c2') === 'c2' && c2.cell.mesh!.mesh.directory.homeCellOf(TENANT, 'home-of-c1') === 'c1', 'the cells to know each other', 20_000);

    const created = await admin('POST', c1, '/tenants', { id: 'bazaar' });
    expect(created.status).toBe(201);
    const { secret } = created.body as { secret: { secret: string } };
    expect((await admin('POST', c1, '/tenants/bazaar/merchants', { id: 'stall' })).status).toBe(201);
    await eventually(async () => (await routeOf(c2, 'stall')) === 'c1', 'c2 to route stall to c1', 20_000);

    // Another cell cannot create it too: the conflict names its home.
    expect((await admin('POST', c2, '/tenants', { id: 'bazaar', secret: 'another-secret-of-bazaar-0123456789abcdef' })).status).toBe(201);
    const duplicate = await admin('POST', c2, '/tenants/bazaar/merchants', { id: 'stall' });
    expect([duplicate.status, errorCodeOf(duplicate)]).toEqual([409, 'MERCHANT_EXISTS']);
    expect(duplicate.text).toContain('hosted by cell c1');
    // c2's own bazaar goes again, so that the move has to bring the tenant.
    expect((await admin('DELETE', c2, '/tenants/bazaar')).status).toBe(200);

    const customer = await RawClient.connect(c1.url, await customerToken(secret.secret));
    expect(await customer.request({ id: 's1', op: 'send', conv: 'stall:cleo', cmid: 'c1', body: 'before the move' })).toMatchObject({ t: 'sent', seq: 1 });
    await customer.close();

    const moved = await httpRequest('POST', `${c1.http}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: 'bazaar', merchant: 'stall', to: 'c2' } });
    expect(moved.status).toBe(200);
    expect((await admin('GET', c2, '/tenants/bazaar')).body).toMatchObject({ id: 'bazaar', source: 'runtime', kids: ['k1'], merchants: [{ id: 'stall', source: 'runtime' }] });
    // c2's record lists the tenant it serves now.
    await eventually(async () => {
      const view = (await admin('GET', c1, '/cluster')).body as { cells: Array<{ cellId: string; tenants: string[] }> };
      return view.cells.find((seen) => seen.cellId === 'c2')?.tenants.includes('bazaar') === true;
    }, 'c1 to see bazaar among the tenants of c2', 20_000);

    const atTarget = await RawClient.connect(c2.url, await customerToken(secret.secret));
    expect(await atTarget.request({ id: 'h1', op: 'history', conv: 'stall:cleo' })).toMatchObject({ messages: [expect.objectContaining({ body: 'before the move' })] });
    expect(await atTarget.request({ id: 's2', op: 'send', conv: 'stall:cleo', cmid: 'c2', body: 'after the move' })).toMatchObject({ t: 'sent', seq: 2 });

    await atTarget.close();

    // The tenant that came with the move is the target's own from now on, also after a restart.
    await c2.cell.stop();
    const restarted = await startMeshCell(root, 'c2', p2p);
    expect((await admin('GET', restarted, '/tenants/bazaar')).body).toMatchObject({ source: 'runtime', merchants: [{ id: 'stall', source: 'runtime' }] });
    await eventually(async () => (await routeOf(c1, 'stall')) === 'c2', 'c1 to route stall to the restarted c2', 20_000);
    const again = await RawClient.connect(restarted.url, await customerToken(secret.secret));
    cleanup.add(() => again.close());
    expect(await again.request({ id: 'h2', op: 'history', conv: 'stall:cleo' })).toMatchObject({ messages: [expect.objectContaining({ seq: 1 }), expect.objectContaining({ seq: 2 })] });

    // Removed at its new home: no cell routes to it any more, and it may be created again.
    expect((await admin('DELETE', restarted, '/tenants/bazaar/merchants/stall')).status).toBe(200);
    await eventually(async () => (await routeOf(c1, 'stall')) === undefined, 'c1 to forget the home of stall', 20_000);
    expect((await admin('POST', c1, '/tenants/bazaar/merchants', { id: 'stall' })).status).toBe(201);
  }, 90_000);
});
