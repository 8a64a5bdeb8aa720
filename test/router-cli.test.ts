import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import { BIN, cleanEnv, runCli } from './cli-process.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, REPO_ROOT, SECRET, TENANT, eventually, freePort, httpRequest } from './harness.js';

/** `cellmesh router` as a process: starts, joins a cell, answers, and leaves on SIGTERM; refuses bad configs in words. */

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function tempDir(): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'cellmesh-router-cli-'));
  cleanups.push(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

async function configFile(directory: string, config: unknown): Promise<string> {
  const path = join(directory, `router-${Math.floor(Math.random() * 1e9)}.json`);
  await writeFile(path, JSON.stringify(config));
  return path;
}

describe('cellmesh router', () => {
  it('joins a cluster, routes, and leaves it on SIGTERM with exit code 0', async () => {
    const directory = await tempDir();
    const cell: RunningCell = await startCell({
      config: parseCellConfig({
        cell: { id: 'c1' },
        listen: { host: '127.0.0.1', port: await freePort() },
        store: { kind: 'level', directory: join(directory, 'c1'), sync: false },
        tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: 'm1' }] }],
        mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET },
        admin: { token: ADMIN_TOKEN },
        log: { level: 'silent' },
      }),
      logger: silentLogger,
    });
    cleanups.push(() => cell.stop());
    const path = await configFile(directory, {
      router: { id: 'edge-cli' },
      listen: { port: await freePort() },
      mesh: { listen: { port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: cell.mesh!.transport.addresses() },
      log: { level: 'warn' },
    });
    const child = spawn(process.execPath, [BIN, 'router', '--config', path], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    const listening = await new Promise<{ port: number; router: string }>((resolve, reject) => {
      let buffered = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        buffered += chunk;
        const line = buffered.split('\n').find((candidate) => candidate.includes('"listening"'));
        if (line !== undefined) resolve(JSON.parse(line) as { port: number; router: string });
      });
      void exited.then(({ code }) => reject(new Error(`the router exited with ${code} before listening: ${stderr}`)));
    });
    expect(listening.router).toBe('edge-cli');
    const base = `http://127.0.0.1:${listening.port}`;
    await eventually(async () => (await httpRequest('GET', `${base}/v1/ready`)).status === 200, 'the router to be ready', 20_000);
    expect((await httpRequest('GET', `${base}/v1/health`)).body).toEqual({ status: 'ok' });
    expect((await httpRequest('GET', `${base}/v1/readyz`)).status).toBe(200);
    expect((await httpRequest('GET', `${base}/v1/route?tenant=${TENANT}&merchant=m1`)).body).toMatchObject({ cellId: 'c1', epoch: 0 });
    const seenByCell = async (): Promise<string | undefined> => {
      const view = await httpRequest('GET', `http://127.0.0.1:${cell.port}/v1/admin/cluster`, { token: ADMIN_TOKEN });
      return (view.body as { cells: Array<{ cellId: string; liveness: string }> }).cells.find((member) => member.cellId === 'edge-cli')?.liveness;
    };
    await eventually(async () => (await seenByCell()) === 'alive', 'the cell to see the router', 20_000);
    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(await seenByCell()).toBe('left');
  }, 90_000);

  it('refuses a config with a typo, a missing bootstrap or no file, in one line without a stack trace', async () => {
    const directory = await tempDir();
    const mesh = { clusterSecret: CLUSTER_SECRET, bootstrap: ['/ip4/127.0.0.1/tcp/7500/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'] };
    const typo = await runCli(['router', '--config', await configFile(directory, { router: { idd: 'edge' }, mesh })]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toBe('cellmesh router: invalid router config: router.idd is not a setting; did you mean router.id?\n');
    const alone = await runCli(['router', '--config', await configFile(directory, { mesh: { clusterSecret: CLUSTER_SECRET } })]);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/^cellmesh router: invalid router config: mesh\.bootstrap: a router joins a running cluster/);
    const limits = await runCli(['router', '--config', await configFile(directory, { mesh, routing: { trustedProxies: ['lb.example'], burstPerAddres: 3 } })]);
    expect(limits.stderr).toContain('routing.burstPerAddres is not a setting; did you mean routing.burstPerAddress?');
    expect(limits.stderr).toContain('routing.trustedProxies[0]: must be an IP address or a CIDR block');
    const none = await runCli(['router']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('a router needs its mesh settings (cluster secret, bootstrap addresses): pass --config <file>, or set them');
    for (const run of [typo, alone, limits, none]) expect(run.stderr).not.toMatch(/\n\s+at /);
  }, 60_000);
});
