/**
 * Draining a cell before it is removed (docs/operations.md, "Removing a cell"), on real cells in
 * this process (uWS, LevelDB, libp2p on loopback): `cellmesh drain` moves every merchant of a cell
 * to the other live cells, spread over them, with its history; the drained cell hosts nothing,
 * refuses new merchants (created, moved in, placed) until the drain is cancelled, and its
 * metrics and audit log tell what happened. A drain whose target refuses ends failed, naming the
 * merchants, which stay. A standalone cell, or one with no live peer, refuses to drain.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { connectNode } from '../client/index.js';
import { silentLogger } from '../platform/logger.js';
import { metricValue } from '../platform/prometheus-text.js';
import { runCli } from './cli-process.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, Cleanup, RawClient, SECRET, TENANT, errorCodeOf, eventually, fetchMetrics, freePort, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface ClusterCell {
  cell: RunningCell;
  http: string;
  url: string;
}

async function startMeshCell(root: string, cellId: string, merchants: readonly string[], bootstrap: readonly string[] | undefined): Promise<ClusterCell> {
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: await freePort() },
    store: { kind: 'level', directory: join(root, cellId), sync: true },
    tenants: [{ id: TENANT, secret: SECRET, merchants: merchants.map((id) => ({ id })) }],
    ...(bootstrap === undefined ? {} : { mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [...bootstrap] } }),
    admin: { token: ADMIN_TOKEN },
  });
  const cell = await startCell({ config, logger: silentLogger });
  cleanup.add(() => cell.stop());
  return { cell, http: `http://127.0.0.1:${cell.port}`, url: `ws://127.0.0.1:${cell.port}` };
}

const admin = (method: string, cell: ClusterCell, path: string, json?: unknown): ReturnType<typeof httpRequest> =>
  httpRequest(method, `${cell.http}/v1/admin${path}`, { token: ADMIN_TOKEN, ...(json === undefined ? {} : { json }) });

const homeIn = (cell: ClusterCell, merchant: string): string | undefined => cell.cell.mesh!.mesh.directory.homeCellOf(TENANT, merchant);

const hostedBy = (cell: ClusterCell): string[] => cell.cell.core.servedTenants().flatMap((tenant) => tenant.merchants);

describe('cellmesh drain', () => {
  test('moves every merchant to the other live cells, spread by load, and the drained cell takes no new merchant until cancelled', async () => {
    const root = await cleanup.tempDir();
    const drained = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'];
    const c1 = await startMeshCell(root, 'c1', drained, []);
    const p2p = c1.cell.mesh!.transport.addresses();
    const c2 = await startMeshCell(root, 'c2', ['e2'], p2p);
    const c3 = await startMeshCell(root, 'c3', ['e3'], p2p);
    await eventually(() => [c2, c3].every((cell) => drained.every((merchant) => homeIn(cell, merchant) === 'c1')) && homeIn(c1, 'e2') === 'c2' && homeIn(c1, 'e3') === 'c3', 'the cells to know each other', 30_000);

    // A conversation of d1 with history, and its customer connected to c1 during the drain.
    const conv = 'd1:alice';
    const alice = await RawClient.connect(c1.url, await tokenFor({ user: 'alice', device: 'phone' }));
    cleanup.add(() => alice.close());
    expect((await sendMessage(alice, conv, 'before', 'before the drain')).seq).toBe(1);
    // A customer of d2 on the SDK in route mode, through c2: she lands on c1, d2's home.
    const bea = await connectNode({ route: { url: c2.http, tenant: TENANT, merchant: 'd2' }, token: await tokenFor({ user: 'bea', device: 'phone' }) });
    cleanup.add(() => bea.close());
    expect(bea.session?.cell).toBe('c1');

    const run = await runCli(['drain', '--cell', c1.http, '--admin-token', ADMIN_TOKEN, '--parallelism', '2'], { timeoutMs: 90_000 });
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toContain('c1: drained; moved 6, failed 0');
    // Without a terminal, one line per merchant.
    expect(run.stderr).toContain('draining c1: 6 merchants to move');
    expect(run.stderr.match(/moved to c[23]/g)).toHaveLength(6);

    // c1 hosts nothing; every merchant lives on c2 or c3, and both took some.
    expect(hostedBy(c1)).toEqual([]);
    const homes = drained.map((merchant) => homeIn(c1, merchant));
    expect(homes.every((home) => home === 'c2' || home === 'c3')).toBe(true);
    expect(homes.filter((home) => home === 'c2').length).toBeGreaterThanOrEqual(2);
    expect(homes.filter((home) => home === 'c3').length).toBeGreaterThanOrEqual(2);
    const newHome = homes[0] === 'c2' ? c2 : c3;
    const history = await httpRequest('GET', `${newHome.http}/v1/conversations/${conv}/messages`, { token: await tokenFor({ user: 'alice', device: 'laptop' }) });
    expect((history.body as { messages: Array<{ body: string }> }).messages.map((message) => message.body)).toEqual(['before the drain']);

    // The progress, the metrics and the audit log say the same.
    const progress = (await admin('GET', c1, '/drain')).body as { state: string; counts: Record<string, number>; merchants: Array<{ merchant: string; state: string; to: string }> };
    expect(progress.state).toBe('drained');
    expect(progress.counts).toEqual({ pending: 0, moving: 0, moved: 6, failed: 0 });
    expect(progress.merchants.map((entry) => [entry.merchant, entry.to])).toEqual(drained.map((merchant, index) => [merchant, homes[index]]));
    const metrics = await fetchMetrics(c1.http);
    expect(metricValue(metrics, 'cellmesh_drain_merchants', { state: 'moved' })).toBe(6);
    expect(metricValue(metrics, 'cellmesh_drain_merchants', { state: 'failed' })).toBe(0);
    const audit = (await admin('GET', c1, '/audit?limit=20')).body as { entries: Array<{ action: string; outcome: string; merchant?: string }> };
    const actions = audit.entries.map((entry) => entry.action);
    expect(actions.filter((action) => action === 'drain.move')).toHaveLength(6);
    expect(actions).toContain('drain.start');
    expect(audit.entries.find((entry) => entry.action === 'drain.finish')).toMatchObject({ outcome: 'ok' });

    // Drained, c1 takes no new merchant: not created, not moved in, until the drain is cancelled.
    const created = await admin('POST', c1, `/tenants/${TENANT}/merchants`, { id: 'late' });
    expect([created.status, errorCodeOf(created)]).toEqual([409, 'CELL_DRAINING']);
    const movedIn = await admin('POST', c2, '/merchants/move', { tenant: TENANT, merchant: 'e2', to: 'c1' });
    expect(errorCodeOf(movedIn)).toBe('MOVE_FAILED');
    expect(movedIn.text).toContain('CELL_DRAINING');
    expect(homeIn(c2, 'e2')).toBe('c2');
    const cancel = await runCli(['drain', '--cell', c1.http, '--admin-token', ADMIN_TOKEN, '--cancel']);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toContain('c1: cancelled');
    expect((await admin('POST', c1, `/tenants/${TENANT}/merchants`, { id: 'late' })).status).toBe(201);

    // Drained, c1 is stopped: whether a device of a moved merchant was redirected at the move or
    // closed with 1001 now, it ends on its merchant's new home (not in leave-a-message mode).
    await c1.cell.stop();
    await eventually(() => bea.session?.cell === homes[1], `bea's client to reconnect to d2's new home ${homes[1]}`, 30_000);
    expect(bea.homeDown).toBeUndefined();
  }, 120_000);

  test('ends failed, naming the merchants that did not move, when the only target is draining too; they stay where they were', async () => {
    const root = await cleanup.tempDir();
    const c1 = await startMeshCell(root, 'c1', ['a1', 'a2'], []);
    const c2 = await startMeshCell(root, 'c2', ['b1'], c1.cell.mesh!.transport.addresses());
    await eventually(() => homeIn(c1, 'b1') === 'c2' && homeIn(c2, 'a1') === 'c1' && homeIn(c2, 'a2') === 'c1', 'the cells to know each other', 30_000);
    // c2 drains first (to c1), and stays draining: it refuses what c1 then sends it.
    expect((await runCli(['drain', '--cell', c2.http, '--admin-token', ADMIN_TOKEN])).code).toBe(0);
    expect(hostedBy(c2)).toEqual([]);

    const run = await runCli(['drain', '--cell', c1.http, '--admin-token', ADMIN_TOKEN, '--json'], { timeoutMs: 60_000 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('3 merchants did not move; run `cellmesh drain` again to retry them');
    const progress = JSON.parse(run.stdout) as { state: string; counts: Record<string, number>; merchants: Array<{ merchant: string; state: string; to: string; error: { code: string; message: string } }> };
    expect(progress.state).toBe('failed');
    expect(progress.counts).toEqual({ pending: 0, moving: 0, moved: 0, failed: 3 });
    for (const entry of progress.merchants) {
      expect(entry).toMatchObject({ state: 'failed', to: 'c2', error: { code: 'MOVE_FAILED' } });
      expect(entry.error.message).toContain('CELL_DRAINING');
    }
    expect(hostedBy(c1).sort()).toEqual(['a1', 'a2', 'b1']);
    expect(metricValue(await fetchMetrics(c1.http), 'cellmesh_drain_merchants', { state: 'failed' })).toBe(3);
    const finish = (await admin('GET', c1, '/audit?action=drain.finish')).body as { entries: Array<{ outcome: string; error?: { message: string } }> };
    expect(finish.entries[0]).toMatchObject({ outcome: 'failed' });
  }, 90_000);

  test('a cancel stops the drain after the moves under way: the merchants not reached stay, and the cell takes merchants again', async () => {
    const root = await cleanup.tempDir();
    const merchants = Array.from({ length: 12 }, (_, index) => `k${index + 1}`);
    const c1 = await startMeshCell(root, 'c1', merchants, []);
    const c2 = await startMeshCell(root, 'c2', ['b1'], c1.cell.mesh!.transport.addresses());
    await eventually(() => homeIn(c1, 'b1') === 'c2' && merchants.every((merchant) => homeIn(c2, merchant) === 'c1'), 'the cells to know each other', 30_000);

    expect((await admin('POST', c1, '/drain')).status).toBe(202);
    await eventually(async () => ((await admin('GET', c1, '/drain')).body as { counts: { moved: number } }).counts.moved >= 1, 'a first merchant to move', 30_000);
    expect((await admin('DELETE', c1, '/drain')).status).toBe(200);
    // Cancelled: creations are taken at once, even while the move under way finishes.
    expect((await admin('POST', c1, `/tenants/${TENANT}/merchants`, { id: 'late' })).status).toBe(201);
    await eventually(async () => ((await admin('GET', c1, '/drain')).body as { state: string }).state === 'cancelled', 'the drain to end cancelled', 30_000);
    const progress = (await admin('GET', c1, '/drain')).body as { counts: Record<string, number>; merchants: Array<{ merchant: string; state: string }> };
    expect(progress.counts.moving).toBe(0);
    expect(progress.counts.pending).toBeGreaterThan(0);
    const notReached = progress.merchants.filter((entry) => entry.state === 'pending').map((entry) => entry.merchant);
    expect(hostedBy(c1)).toEqual(expect.arrayContaining([...notReached, 'late']));
    const audit = (await admin('GET', c1, '/audit?action=drain.cancel')).body as { entries: Array<{ outcome: string }> };
    expect(audit.entries[0]).toMatchObject({ outcome: 'ok' });
  }, 90_000);

  test('is refused on a standalone cell and on a cell with no live peer, and the cell goes on taking merchants', async () => {
    const root = await cleanup.tempDir();
    const standalone = await startMeshCell(root, 'alone', ['m1'], undefined);
    const refused = await admin('POST', standalone, '/drain');
    expect([refused.status, errorCodeOf(refused)]).toEqual([404, 'MESH_DISABLED']);
    const run = await runCli(['drain', '--cell', standalone.http, '--admin-token', ADMIN_TOKEN]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('MESH_DISABLED');
    expect(run.stderr).toContain('no other cell to drain its merchants to');

    const lonely = await startMeshCell(root, 'lonely', ['m2'], []);
    const noTarget = await admin('POST', lonely, '/drain', { parallelism: 2 });
    expect([noTarget.status, errorCodeOf(noTarget)]).toEqual([409, 'NO_DRAIN_TARGET']);
    expect(((await admin('GET', lonely, '/drain')).body as { state: string }).state).toBe('idle');
    expect((await admin('POST', lonely, `/tenants/${TENANT}/merchants`, { id: 'fresh' })).status).toBe(201);
    const badBody = await admin('POST', lonely, '/drain', { parallelism: 9 });
    expect([badBody.status, errorCodeOf(badBody)]).toEqual([400, 'BAD_FRAME']);
    const audit = (await admin('GET', lonely, '/audit?action=drain.start')).body as { entries: Array<{ outcome: string; error?: { code: string } }> };
    expect(audit.entries[0]).toMatchObject({ outcome: 'failed' });
  }, 60_000);
});
