/**
 * `cellmesh cell` and `cellmesh router` read every setting from a flag, a CELLMESH_* variable
 * or the file, in that order (docs/operations.md, "Running a cell"), run as the real command
 * (node bin/cellmesh.js): a bad value is one line naming its variable, exit 2; a misspelt
 * variable is refused; the admin token and the port of a pod come from its environment.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ADMIN_TOKEN, Cleanup, CLUSTER_SECRET, freePort, httpRequest, REPO_ROOT, SECRET, TENANT } from './harness.js';
import { BIN, cleanEnv, runCli, type CliRun } from './cli-process.js';

const cleanup = new Cleanup();
afterAll(() => cleanup.run());

/** A config file of a standalone cell with a memory store, listening on `port`. */
async function configFile(port: number): Promise<string> {
  const path = join(await cleanup.tempDir(), 'cell.json');
  writeFileSync(path, JSON.stringify({ listen: { host: '127.0.0.1', port }, store: { kind: 'memory' }, tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: 'm1' }] }] }));
  return path;
}

function cli(args: readonly string[], env: Record<string, string>): Promise<CliRun> {
  return runCli(args, { spawn: { env: cleanEnv(env) } });
}

/** The one line of a refusal with exit code 2, no stack trace. */
function refusalLines(run: CliRun): string[] {
  expect(run.code, run.stderr).toBe(2);
  expect(run.stderr).not.toMatch(/^\s+at /m);
  return run.stderr.trim().split('\n');
}

/** Starts `cellmesh cell ...args` and answers the port its `listening` line names (the cell is stopped at the end). */
async function listeningPort(args: readonly string[], env: Record<string, string>): Promise<number> {
  const child = spawn(process.execPath, [BIN, 'cell', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(env) });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const line = stdout.split('\n').find((candidate) => candidate.includes('"listening"'));
      if (line !== undefined) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`the cell exited (${code}) before listening: ${stderr}`)));
  });
}

describe('values from the environment and flags', () => {
  test('a flag wins over its variable, which wins over the file; an empty variable is unset', async () => {
    const [filePort, envPort, flagPort] = [await freePort(), await freePort(), await freePort()];
    const config = await configFile(filePort);
    expect(await listeningPort(['--config', config, '--port', String(flagPort)], { CELLMESH_PORT: String(envPort) })).toBe(flagPort);
    expect(await listeningPort([], { CELLMESH_CONFIG: config, CELLMESH_PORT: String(envPort) })).toBe(envPort);
    expect(await listeningPort(['--config', config], { CELLMESH_PORT: '' })).toBe(filePort);
  }, 60_000);

  test('the admin token comes from CELLMESH_ADMIN_TOKEN, as a Kubernetes Secret gives it', async () => {
    const port = await listeningPort(['--config', await configFile(0)], { CELLMESH_ADMIN_TOKEN: ADMIN_TOKEN, CELLMESH_PORT: '0' });
    const answer = await httpRequest('GET', `http://127.0.0.1:${port}/v1/admin/tenants`, { token: ADMIN_TOKEN });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect((await httpRequest('GET', `http://127.0.0.1:${port}/v1/admin/tenants`, { token: `${ADMIN_TOKEN}-other` })).status).toBe(403);
  }, 30_000);
});

describe('refusals name the variable or flag', () => {
  test('a bad value: one line with the variable, the setting and what it must be', async () => {
    const config = await configFile(0);
    expect(refusalLines(await cli(['cell', '--config', config], { CELLMESH_PORT: 'abc' }))).toEqual(['cellmesh cell: invalid cell config: CELLMESH_PORT=abc: listen.port: must be an integer from 0 to 65535']);
    expect(refusalLines(await cli(['cell', '--config', config, '--limits-rate-burst', 'many'], {}))).toEqual(['cellmesh cell: invalid cell config: --limits-rate-burst many: limits.rateBurst: must be a number']);
  });

  test('a secret is never echoed', async () => {
    const run = await cli(['cell', '--config', await configFile(0)], { CELLMESH_ADMIN_TOKEN: 'too-short-admin-token' });
    expect(refusalLines(run)).toEqual(['cellmesh cell: invalid cell config: CELLMESH_ADMIN_TOKEN (value hidden): admin.token: must be at least 32 characters']);
    expect(run.stderr).not.toContain('too-short-admin-token');
  });

  test('a misspelt variable is refused, not ignored', async () => {
    expect(refusalLines(await cli(['cell', '--config', await configFile(0)], { CELLMESH_PROT: '7401' }))).toEqual([
      'cellmesh cell: CELLMESH_PROT is not a variable of cellmesh cell (did you mean CELLMESH_PORT?): unset it or correct its name; docs/operations.md lists every variable',
    ]);
  });

  test('a cell in a mesh on every interface without advertised URLs', async () => {
    const run = await cli(['cell', '--config', await configFile(0), '--store', 'level', '--data-dir', await cleanup.tempDir(), '--host', '0.0.0.0'], { CELLMESH_CLUSTER_SECRET: CLUSTER_SECRET }); // real-net-ok: the refusal of a wildcard in a mesh
    expect(refusalLines(run)[0]).toBe('cellmesh cell: invalid cell config:');
    expect(run.stderr).toContain('mesh.advertise.ws: listen.host 0.0.0.0 is every interface');
  });

  test('a router from the environment alone: its values are checked the same way', async () => {
    expect(refusalLines(await cli(['router'], {}))).toEqual([
      'cellmesh router: a router needs its mesh settings (cluster secret, bootstrap addresses): pass --config <file>, or set them by flags or variables (see docs/operations.md, "Running a router")',
    ]);
    expect(refusalLines(await cli(['router'], { CELLMESH_CLUSTER_SECRET: CLUSTER_SECRET, CELLMESH_BOOTSTRAP: 'cell-a:7500', CELLMESH_ROUTER_ID: 'Edge_1' }))).toEqual([
      'cellmesh router: invalid router config:',
      '  CELLMESH_ROUTER_ID=Edge_1: router.id: must be lowercase letters, digits and dashes (at most 64, not starting with a dash)',
      '  CELLMESH_BOOTSTRAP=cell-a:7500: mesh.bootstrap[0]: must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>',
    ]);
  });
});
