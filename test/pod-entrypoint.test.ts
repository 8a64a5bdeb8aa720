/**
 * The pod command that docs/operations.md ("Cells as pods") gives is one that receives the
 * orchestrator's SIGTERM itself: run as documented, a cell with a mesh gets SIGTERM, leaves the
 * mesh gracefully and exits 0, and the process that logged the shutdown is the one that was
 * signalled (bin/cellmesh.js loads the sources in-process; no wrapper stands in between, as
 * npx does, which exits on SIGTERM and leaves the cell running).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { connectNode, type StateChange } from '../client/index.js';
import { ADMIN_TOKEN, Cleanup, CLUSTER_SECRET, eventually, freePort, httpRequest, REPO_ROOT, SECRET, startChildCell, TENANT, tokenFor } from './harness.js';
import { BIN, cleanEnv } from './cli-process.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** The command line of the pod, from the docs' "Cells as pods" section (environment assignments left out). */
function documentedPodCommand(): string {
  const operations = readFileSync(join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
  const section = operations.slice(operations.indexOf('## Cells as pods'));
  const command = /^\s{4,}(\S.*\bcell --config \S+)\s*$/m.exec(section.slice(0, section.indexOf('\n## ', 1)))?.[1];
  if (command === undefined) throw new Error('docs/operations.md, "Cells as pods", gives no pod command');
  return command;
}

test('the documented pod command is node on bin/cellmesh.js, which SIGTERM stops gracefully with exit 0', async () => {
  // startChildCell runs exactly this: process.execPath on bin/cellmesh.js, from the checkout.
  expect(documentedPodCommand()).toMatch(/^node bin\/cellmesh\.js cell --config \S+$/);

  const directory = await cleanup.tempDir();
  const cell = await startChildCell({ directory, configDir: directory, mesh: {}, logLevel: 'info' });
  cleanup.add(async () => {
    cell.kill('SIGKILL');
    await cell.exited;
  });
  cell.kill('SIGTERM');
  expect(await cell.exited, cell.stderrTail()).toEqual({ code: 0, signal: null });
  const logs = cell.stderrTail()
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as { msg?: string; pid?: number; signal?: string }];
      } catch {
        return [];
      }
    });
  expect(logs.find((entry) => entry.msg === 'shutting down gracefully')).toMatchObject({ pid: cell.child.pid, signal: 'SIGTERM' });
  expect(logs.some((entry) => entry.msg === 'cell left the mesh')).toBe(true);
  expect(logs.some((entry) => entry.msg === 'cell stopped')).toBe(true);
});

test('SIGTERM while the cell is still starting stops it gracefully once started, with exit 0', async () => {
  const directory = await cleanup.tempDir();
  const configFile = join(directory, 'cell.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      cell: { id: 'starting-cell' },
      listen: { host: '127.0.0.1', port: await freePort() },
      store: { kind: 'level', directory: join(directory, 'store') },
      mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [] },
      tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: 'm1' }] }],
      log: { level: 'info' },
    }),
  );
  const child = spawn(process.execPath, [BIN, 'cell', '--config', configFile], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  // The cell's first log line comes from inside its start, before it listens: signal it then.
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr === '') child.kill('SIGTERM');
    stderr += chunk;
  });
  expect(await exited, stderr).toEqual({ code: 0, signal: null });
  expect(stderr).toContain('shutting down gracefully');
  expect(stderr).toContain('cell stopped');
});

/** GET over one kept-alive connection: it outlives the listen socket, so the answers of a stopping cell can be read to its end. */
function getOver(agent: Agent, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const asked = request(url, { agent }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    asked.on('error', reject);
    asked.end();
  });
}

test('SIGTERM: readiness turns to draining first, devices get 1001 and the SDK in route mode reconnects to another cell, exit 0 within the grace', async () => {
  const directory = await cleanup.tempDir();
  const start = async (cellId: string, merchants: string[], bootstrap: string[]) => {
    const cell = await startChildCell({ directory: join(directory, cellId), configDir: directory, cellId, merchants, mesh: { bootstrap }, logLevel: 'info' });
    cleanup.add(async () => {
      cell.kill('SIGKILL');
      await cell.exited;
    });
    return cell;
  };
  const c1 = await start('c1', ['m1'], []);
  const view = (await httpRequest('GET', `${c1.httpUrl}/v1/admin/cluster`, { token: ADMIN_TOKEN })).body as { cells: Array<{ cellId: string; endpoints: { p2p: string[] } }> };
  const c2 = await start('c2', ['m2'], view.cells.find((cell) => cell.cellId === 'c1')!.endpoints.p2p);
  await eventually(async () => (await httpRequest('GET', `${c2.httpUrl}/v1/route?tenant=${TENANT}&merchant=m1`)).status === 200, 'c2 to route m1 to c1', 30_000);

  // A customer of m1 on the SDK, routed through c2: she lands on m1's home, c1.
  const alice = await connectNode({ route: { url: c2.httpUrl, tenant: TENANT, merchant: 'm1' }, token: await tokenFor({ user: 'alice', device: 'phone' }) });
  cleanup.add(() => alice.close());
  expect(alice.session?.cell).toBe('c1');
  const states: StateChange[] = [];
  alice.on('state', (change) => states.push(change));

  // The readiness probe of c1, over one connection, from before the signal until the process is gone.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  cleanup.add(() => agent.destroy());
  expect(await getOver(agent, `${c1.httpUrl}/v1/readyz`)).toEqual({ status: 200, body: JSON.stringify({ status: 'ready' }) });
  const answers: Array<{ status: number; body: string }> = [];
  let exited = false;
  const probing = (async () => {
    while (!exited) {
      try {
        answers.push(await getOver(agent, `${c1.httpUrl}/v1/readyz`));
      } catch {
        return; // the process closed the connection on its way out
      }
    }
  })();
  const signalledAtMs = Date.now();
  c1.kill('SIGTERM');
  const ended = await c1.exited;
  exited = true;
  await probing;
  expect(ended, c1.stderrTail()).toEqual({ code: 0, signal: null });
  // shutdownGraceSeconds is 10 in the harness's config.
  expect(Date.now() - signalledAtMs).toBeLessThan(10_000);

  // Ready until the signal, then draining: never ready again.
  const firstDraining = answers.findIndex((answer) => answer.status === 503);
  expect(firstDraining, JSON.stringify(answers.slice(-3))).toBeGreaterThanOrEqual(0);
  expect(answers[firstDraining]!.body).toBe(JSON.stringify({ status: 'draining' }));
  expect(answers.slice(firstDraining).every((answer) => answer.status === 503 && answer.body === JSON.stringify({ status: 'draining' }))).toBe(true);
  expect(answers.slice(0, firstDraining).every((answer) => answer.status === 200)).toBe(true);

  // The device was closed with 1001 (going away: reconnect), and the SDK followed the route to c2.
  expect(states.find((change) => change.state === 'reconnecting')).toMatchObject({ closeCode: 1001 });
  await eventually(() => alice.session?.cell === 'c2', "alice's client to reconnect to c2", 30_000);
  expect(alice.homeDown).toMatchObject({ cellId: 'c1' });
}, 120_000);
