/**
 * What `node bin/cellmesh.js cell` does when it cannot or must not start (issue 15, items 11,
 * 12 and 13): one line on stderr that names the setting to change, exit code 2, never a stack
 * trace, and never a second cell sharing a port with the first.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { DEMO_ADMIN_TOKEN, DEMO_TENANT_SECRET } from '../cli/demo-cluster.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, Cleanup, SECRET, freePort, httpRequest, killChildCell, startChildCell } from './harness.js';
import { runCellUntilListening, type CellRunEnded } from './cli-process.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** `cellmesh cell` with `config` until it exits; a cell that starts listening is killed (exit code null). */
function runCell(configDir: string, config: Record<string, unknown>, args: readonly string[] = []): Promise<CellRunEnded> {
  return runCellUntilListening(configDir, config, args, 'SIGKILL');
}

/** A standalone cell's config: a level store in `directory`, on `port`. */
function cellConfig(directory: string, port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cell: { id: 'second-cell' },
    listen: { host: '127.0.0.1', port },
    store: { kind: 'level', directory },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }],
    log: { level: 'warn' },
    ...extra,
  };
}

/** The refusal is exactly one line, `cellmesh cell: ...`, and the exit code 2. */
function expectOneLineRefusal(ended: CellRunEnded, line: RegExp): void {
  expect(ended.code, `stdout: ${ended.stdout}\nstderr: ${ended.stderr}`).toBe(2);
  expect(ended.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(ended.stderr.trimEnd()).toMatch(line);
}

describe('a cell that cannot start says why in one line and exits 2', () => {
  test('a second cell on a busy WebSocket port is refused, and the first keeps serving', async () => {
    const configDir = await cleanup.tempDir();
    const first = await startChildCell({ directory: await cleanup.tempDir(), configDir });
    cleanup.add(() => killChildCell(first));

    const second = await runCell(configDir, cellConfig(await cleanup.tempDir(), first.port));
    expectOneLineRefusal(second, new RegExp(`^cellmesh cell: listen\\.port: port ${first.port} is in use on 127\\.0\\.0\\.1`));

    // The first cell keeps serving on its port.
    expect((await httpRequest('GET', `${first.httpUrl}/v1/readyz`)).status).toBe(200);
  });

  test('a busy mesh port names mesh.listen.port', async () => {
    const configDir = await cleanup.tempDir();
    const meshPort = await freePort();
    const first = await startChildCell({ directory: await cleanup.tempDir(), configDir, cellId: 'first-cell', mesh: { port: meshPort } });
    cleanup.add(() => killChildCell(first));

    const second = await runCell(
      configDir,
      cellConfig(await cleanup.tempDir(), await freePort(), { mesh: { listen: { host: '127.0.0.1', port: meshPort }, clusterSecret: CLUSTER_SECRET } }),
    );
    expectOneLineRefusal(second, new RegExp(`^cellmesh cell: mesh\\.listen\\.port: port ${meshPort} is in use on 127\\.0\\.0\\.1`));
  });

  test('a store directory held by another cell names store.directory', async () => {
    const configDir = await cleanup.tempDir();
    const directory = await cleanup.tempDir();
    const first = await startChildCell({ directory, configDir });
    cleanup.add(() => killChildCell(first));

    const second = await runCell(configDir, cellConfig(directory, await freePort()));
    expectOneLineRefusal(second, /^cellmesh cell: store\.directory: .* is locked by another process/);
  });

  test('a memory store with a mesh section is a config error naming store.kind', async () => {
    const configDir = await cleanup.tempDir();
    const config = { ...cellConfig('', await freePort(), { mesh: { clusterSecret: CLUSTER_SECRET, listen: { port: await freePort() } } }), store: { kind: 'memory' } };
    const ended = await runCell(configDir, config);
    expectOneLineRefusal(ended, /^cellmesh cell: invalid cell config: store\.kind: a cell in a mesh needs a durable store, level or redis/);
  });

  test('a misspelt setting is a config error naming it and the setting meant', async () => {
    const configDir = await cleanup.tempDir();
    const config = cellConfig(await cleanup.tempDir(), await freePort());
    const ended = await runCell(configDir, { ...config, listen: { host: '127.0.0.1', prot: 7401 } });
    expectOneLineRefusal(ended, /^cellmesh cell: invalid cell config: listen\.prot is not a setting; did you mean listen\.port\?$/);
  });
});

describe('a cell refuses guessable secrets outside local experiments', () => {
  test('the demo\'s published tenant secret is refused, naming the setting', async () => {
    const configDir = await cleanup.tempDir();
    const config = cellConfig(await cleanup.tempDir(), await freePort(), { tenants: [{ id: 'mall', secret: DEMO_TENANT_SECRET }] });
    const ended = await runCell(configDir, config);
    expectOneLineRefusal(ended, /^cellmesh cell: tenants\[0\]\.secret is a published demo value: anyone can use it; set secrets of your own, or pass --insecure-allow-weak-secrets/);
  });

  test('the demo admin token and a run of one character are refused together, one line each', async () => {
    const configDir = await cleanup.tempDir();
    const config = cellConfig(await cleanup.tempDir(), await freePort(), {
      cell: { id: 'weak-cell' },
      admin: { token: DEMO_ADMIN_TOKEN },
      mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: 'a'.repeat(32) },
    });
    const ended = await runCell(configDir, config);
    expect(ended.code, ended.stderr).toBe(2);
    expect(ended.stderr.trimEnd().split('\n')).toEqual([
      'cellmesh cell: guessable secrets (set secrets of your own, or pass --insecure-allow-weak-secrets for a local experiment):',
      '  mesh.clusterSecret has fewer than 8 different characters',
      '  admin.token is a published demo value: anyone can use it',
    ]);
  });

  test('--insecure-allow-weak-secrets lets a local experiment start with them', async () => {
    const configDir = await cleanup.tempDir();
    const config = cellConfig(await cleanup.tempDir(), await freePort(), { tenants: [{ id: 'mall', secret: DEMO_TENANT_SECRET }], admin: { token: ADMIN_TOKEN } });
    const ended = await runCell(configDir, config, ['--insecure-allow-weak-secrets']);
    // runCell kills a cell that starts listening: exit code null, the listening line printed.
    expect(ended.code, ended.stderr).toBeNull();
    expect(ended.stdout).toContain('"event":"listening"');
  });
});
