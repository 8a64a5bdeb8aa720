/**
 * The probes of a real cell (uWS, the system clock; docs/operations.md, "Health and metrics"):
 * a cell whose mesh peers cannot be reached is ready at once (readiness never waits on peer
 * discovery) and live; a store that hangs does not fail liveness; a loop blocked longer than
 * `health.maxEventLoopStallMs` does, until the loop has run freely for as long again. The loop is
 * blocked by this test itself, which shares the cell's process: the cell has no hook for it.
 */
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import { metricValue } from '../platform/prometheus-text.js';
import { CLUSTER_SECRET, Cleanup, GatedStore, RawClient, SECRET, TENANT, eventually, fetchMetrics, freePort, httpRequest, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MAX_STALL_MS = 300;

async function start(root: string, cellId: string, bootstrap: readonly string[], store?: GatedStore): Promise<{ cell: RunningCell; http: string }> {
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: await freePort() },
    store: { kind: 'level', directory: join(root, cellId), sync: true },
    tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: `m-${cellId}` }] }],
    mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [...bootstrap], keyFile: join(root, `${cellId}.key`) },
    health: { maxEventLoopStallMs: MAX_STALL_MS },
  });
  const cell = await startCell({ config, logger: silentLogger, ...(store === undefined ? {} : { store }) });
  cleanup.add(() => cell.stop());
  return { cell, http: `http://127.0.0.1:${cell.port}` };
}

/** Keeps this process's event loop (and so the cell's) from running anything for `ms`. */
function blockTheLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy: nothing else runs
  }
}

test('a cell whose peers cannot be reached is ready and live; a hung store leaves it live; a blocked loop fails liveness for a while', async () => {
  const root = await cleanup.tempDir();
  // A bootstrap address of a cell that is gone: the peer discovery of the next cell gets nowhere.
  const gone = await start(root, 'gone', []);
  const goneAddress = gone.cell.mesh!.transport.addresses();
  await gone.cell.stop();
  const store = new GatedStore();
  const { cell, http } = await start(root, 'c1', goneAddress, store);

  expect(await httpRequest('GET', `${http}/v1/readyz`)).toMatchObject({ status: 200, body: { status: 'ready' } });
  expect(await httpRequest('GET', `${http}/v1/healthz`)).toMatchObject({ status: 200, body: { status: 'ok' } });
  expect(metricValue(await fetchMetrics(http), 'cellmesh_ready')).toBe(1);

  // A store that does not answer: the send waits, the loop turns, the cell stays live.
  const alice = await RawClient.connect(`ws://127.0.0.1:${cell.port}`, await tokenFor({ user: 'alice', device: 'phone' }));
  cleanup.add(() => alice.close());
  store.hold();
  alice.send({ op: 'send', id: 's1', conv: 'm-c1:alice', cmid: 'c1', body: 'held' });
  await eventually(() => store.waiting === 1, 'the write to wait at the store');
  await new Promise((resolve) => setTimeout(resolve, MAX_STALL_MS * 2));
  expect(await httpRequest('GET', `${http}/v1/healthz`)).toMatchObject({ status: 200, body: { status: 'ok' } });
  store.release();
  await alice.next('sent', { fromStart: true });

  // The loop blocked four times the bound: the next probe fails, then liveness comes back.
  blockTheLoop(MAX_STALL_MS * 4);
  const stalled = await httpRequest('GET', `${http}/v1/healthz`);
  expect(stalled.status).toBe(503);
  expect(stalled.body).toMatchObject({ status: 'stalled' });
  expect((stalled.body as { stalledMs: number }).stalledMs).toBeGreaterThan(MAX_STALL_MS);
  // Liveness is not readiness: the cell still serves.
  expect((await httpRequest('GET', `${http}/v1/readyz`)).status).toBe(200);
  await eventually(async () => (await httpRequest('GET', `${http}/v1/healthz`)).status === 200, 'liveness to come back', 5_000);
  expect(metricValue(await fetchMetrics(http), 'cellmesh_event_loop_stalls_total')).toBeGreaterThanOrEqual(1);
}, 60_000);
