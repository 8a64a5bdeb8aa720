import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { startRouter, type RunningRouter } from '../assembly/process-router.js';
import { parseRouterConfig } from '../assembly/router-config.js';
import { silentLogger } from '../platform/logger.js';
import { metricValue } from '../platform/prometheus-text.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, SECRET, TENANT, eventually, fetchMetrics, freePort, httpRequest, type HttpAnswer } from './harness.js';

/**
 * The router (`cellmesh router`) with real libp2p on loopback: two cells in this process and a
 * router that joins them as an observer. The router trusts 127.0.0.1 as a proxy, so each request
 * names its client in X-Forwarded-For: the checks get addresses of their own, and the rate-limit
 * check spends the budget of one address only.
 */

let root: string;
let c1: RunningCell;
let c2: RunningCell;
let router: RunningRouter;
let routerUrl: string;
let nextClient = 0;

/** A client address no other request used. */
const freshClient = (): string => `10.1.${(++nextClient >> 8) & 255}.${nextClient & 255}`;

const httpOf = (cell: RunningCell): string => `http://127.0.0.1:${cell.port}`;

async function startTestCell(cellId: string, merchants: readonly string[], bootstrap: readonly string[]): Promise<RunningCell> {
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: await freePort() },
    store: { kind: 'level', directory: join(root, cellId), sync: false },
    tenants: [{ id: TENANT, secret: SECRET, merchants: merchants.map((id) => ({ id })) }],
    mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [...bootstrap] },
    admin: { token: ADMIN_TOKEN },
    log: { level: 'silent' },
  });
  return startCell({ config, logger: silentLogger });
}

function route(base: string, query: string, client = freshClient()): Promise<HttpAnswer> {
  return httpRequest('GET', `${base}/v1/route?${query}`, { headers: { 'x-forwarded-for': client } });
}

interface MemberView {
  cellId: string;
  role: string;
  liveness: string;
  merchants: unknown[];
}

async function membersSeenBy(cell: RunningCell): Promise<MemberView[]> {
  const answer = await httpRequest('GET', `${httpOf(cell)}/v1/admin/cluster`, { token: ADMIN_TOKEN });
  return (answer.body as { cells: MemberView[] }).cells;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'cellmesh-router-'));
  c1 = await startTestCell('c1', ['m1', 'm2'], []);
  const bootstrap = c1.mesh!.transport.addresses();
  c2 = await startTestCell('c2', ['m3'], bootstrap);
  router = await startRouter({
    config: parseRouterConfig({
      router: { id: 'edge-1' },
      listen: { host: '127.0.0.1', port: 0 },
      mesh: { listen: { host: '127.0.0.1', port: 0 }, clusterSecret: CLUSTER_SECRET, bootstrap },
      routing: { requestsPerSecondPerAddress: 1, burstPerAddress: 5, trustedProxies: ['127.0.0.1'] },
      log: { level: 'silent' },
    }),
    logger: silentLogger,
  });
  routerUrl = `http://127.0.0.1:${router.port}`;
  await eventually(async () => (await httpRequest('GET', `${routerUrl}/v1/ready`)).status === 200, 'the router to be ready', 20_000);
  for (const cell of [c1, c2]) {
    await eventually(async () => (await membersSeenBy(cell)).filter((member) => member.liveness === 'alive').length === 3, 'every member to see the others alive', 20_000);
  }
}, 90_000);

afterAll(async () => {
  await router?.stop();
  await c2?.stop();
  await c1?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe('a router joined to two cells', () => {
  it("answers routes for both cells' merchants with the home's endpoints and the claim's epoch, like the cells do", async () => {
    await eventually(async () => (await route(routerUrl, `tenant=${TENANT}&merchant=m3`)).status === 200, 'the router to route m3', 20_000);
    for (const [merchant, home] of [['m1', c1], ['m2', c1], ['m3', c2]] as const) {
      const expected = { tenant: TENANT, merchant, cellId: home.cellId, epoch: 0, ws: `ws://127.0.0.1:${home.port}/v1/ws`, http: httpOf(home), liveness: 'alive' };
      for (const base of [routerUrl, httpOf(c1), httpOf(c2)]) {
        const answer = await route(base, `tenant=${TENANT}&merchant=${merchant}&customer=cu-1&group=sales`);
        expect(answer.status, `${base} ${merchant}`).toBe(200);
        expect(answer.body).toEqual(expected);
        expect(answer.headers.get('cache-control')).toBe('no-store');
      }
    }
  });

  it('shows itself as a router in the cluster view: a member that hosts nothing', async () => {
    for (const cell of [c1, c2]) {
      const members = await membersSeenBy(cell);
      expect(members.find((member) => member.cellId === 'edge-1')).toMatchObject({ role: 'router', liveness: 'alive', merchants: [] });
      expect(members.filter((member) => member.role === 'cell').map((member) => member.cellId)).toEqual(['c1', 'c2']);
    }
    expect(c1.mesh!.mesh.liveCells().map((record) => record.cellId)).toEqual(['c1', 'c2']);
  });

  it('gives an unknown tenant, an unknown merchant and an unknown pair byte-identical answers, from the router and from cells', async () => {
    for (const base of [routerUrl, httpOf(c1)]) {
      const unknownTenant = await route(base, `tenant=nobody&merchant=m1`);
      const unknownMerchant = await route(base, `tenant=${TENANT}&merchant=nobody`);
      const both = await route(base, `tenant=nobody&merchant=nobody`);
      expect(unknownTenant.status).toBe(404);
      expect(unknownTenant.body).toEqual({ error: { code: 'MERCHANT_UNKNOWN', message: 'no serving cell for this tenant and merchant' } });
      expect(unknownMerchant.text).toBe(unknownTenant.text);
      expect(both.text).toBe(unknownTenant.text);
      expect(unknownMerchant.status).toBe(unknownTenant.status);
      const connectUnknown = await httpRequest('GET', `${base}/v1/connect?tenant=nobody&merchant=m1`, { headers: { 'x-forwarded-for': freshClient() } });
      expect({ status: connectUnknown.status, text: connectUnknown.text }).toEqual({ status: 404, text: unknownTenant.text });
    }
    const invalid = await route(routerUrl, 'tenant=&merchant=m1');
    expect(invalid.status).toBe(400);
  });

  it('redirects a browser to the home cell with /v1/connect', async () => {
    for (const base of [routerUrl, httpOf(c2)]) {
      const response = await fetch(`${base}/v1/connect?tenant=${TENANT}&merchant=m1&customer=cu-9`, { redirect: 'manual', headers: { 'x-forwarded-for': freshClient() } });
      expect(response.status).toBe(302);
      expect(response.headers.get('location')).toBe(`${httpOf(c1)}/app/?tenant=${TENANT}&merchant=m1&customer=cu-9`);
      expect(response.headers.get('cache-control')).toBe('no-store');
    }
  });

  it('rate-limits route requests per client address with 429 ROUTE_RATE_LIMITED and Retry-After, and counts them', async () => {
    const client = '198.51.100.7';
    const answers: HttpAnswer[] = [];
    for (let index = 0; index < 7; index++) answers.push(await route(routerUrl, `tenant=${TENANT}&merchant=m1`, client));
    expect(answers.slice(0, 5).map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    const limited = answers[6]!;
    expect(limited.status).toBe(429);
    expect((limited.body as { error: { code: string; retryAfterMs: number } }).error).toMatchObject({ code: 'ROUTE_RATE_LIMITED', retryAfterMs: expect.any(Number) });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // The connect redirect spends the same budget; another address still has its own.
    expect((await httpRequest('GET', `${routerUrl}/v1/connect?tenant=${TENANT}&merchant=m1`, { headers: { 'x-forwarded-for': client } })).status).toBe(429);
    expect((await route(routerUrl, `tenant=${TENANT}&merchant=m1`)).status).toBe(200);
    const metrics = await fetchMetrics(routerUrl);
    expect(metricValue(metrics, 'cellmesh_route_requests_total', { endpoint: 'route', outcome: 'rate_limited' })).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'cellmesh_route_requests_total', { endpoint: 'route', outcome: 'routed' })).toBeGreaterThanOrEqual(5);
    expect(metricValue(metrics, 'cellmesh_router_directory_members', { role: 'cell', liveness: 'alive' })).toBe(2);
  });

  it('is never a move target, and follows a move between the cells with the new epoch', async () => {
    const toRouter = await httpRequest('POST', `${httpOf(c1)}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: TENANT, merchant: 'm2', to: 'edge-1' } });
    expect(toRouter.status).toBe(502);
    expect(toRouter.body).toEqual({ error: { code: 'MOVE_FAILED', message: 'edge-1 is a router: it hosts no merchants' } });
    const moved = await httpRequest('POST', `${httpOf(c1)}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: TENANT, merchant: 'm1', to: 'c2' } });
    expect(moved.status).toBe(200);
    await eventually(async () => ((await route(routerUrl, `tenant=${TENANT}&merchant=m1`)).body as { cellId?: string }).cellId === 'c2', 'the router to route m1 to c2', 20_000);
    expect((await route(routerUrl, `tenant=${TENANT}&merchant=m1`)).body).toMatchObject({ cellId: 'c2', epoch: 1, http: httpOf(c2) });
  }, 60_000);
});

describe('a router that stops', () => {
  it('leaves the cluster: the cells see it left at once', async () => {
    await router.stop();
    for (const cell of [c1, c2]) {
      await eventually(async () => (await membersSeenBy(cell)).find((member) => member.cellId === 'edge-1')?.liveness === 'left', 'the cells to see the router left', 10_000);
    }
  });
});
