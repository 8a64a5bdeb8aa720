/**
 * The pod command that docs/operations.md ("Cells as pods") gives is one that receives the
 * orchestrator's SIGTERM itself: run as documented, a cell with a mesh gets SIGTERM, leaves the
 * mesh gracefully and exits 0, and the process that logged the shutdown is the one that was
 * signalled (bin/cellmesh.js loads the sources in-process; no wrapper stands in between, as
 * npx does, which exits on SIGTERM and leaves the cell running).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { Cleanup, CLUSTER_SECRET, freePort, REPO_ROOT, SECRET, startChildCell, TENANT } from './harness.js';
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
