/**
 * The `cellmesh` command reports a failure as one readable line on stderr, prefixed with the
 * command, and ends with the exit code docs/operations.md documents ("Exit codes"): never a
 * stack trace, never silence. Each case runs the real command (node bin/cellmesh.js).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { mintToken } from '../cell/access/tokens.js';
import { Cleanup, freePort, REPO_ROOT, SECRET, TENANT } from './harness.js';
import { runCli, type CliRun } from './cli-process.js';

const cleanup = new Cleanup();
afterAll(() => cleanup.run());

/** Exactly one line on stderr, starting with `prefix`, and no stack frame anywhere. */
function expectOneLine(run: CliRun, prefix: string, exitCode: number): string {
  const lines = run.stderr.split('\n').filter((line) => line.trim() !== '');
  expect({ code: run.code, lines }, `stdout: ${run.stdout}`).toMatchObject({ code: exitCode, lines: [expect.stringMatching(new RegExp(`^${prefix}: \\S`))] });
  expect(`${run.stdout}${run.stderr}`).not.toMatch(/^\s+at /m);
  return lines[0] ?? '';
}

describe('one line and a documented exit code', () => {
  test('demo stop-cell of a cell that does not run: exit 1', async () => {
    const dataDir = await cleanup.tempDir();
    const line = expectOneLine(await runCli(['demo', 'stop-cell', 'nosuch', '--data-dir', dataDir]), 'cellmesh demo stop-cell', 1);
    expect(line).toContain(`no demo cell 'nosuch' is running from ${dataDir}`);
  });

  test('chat with an expired token: exit 1, naming TOKEN_EXPIRED', async () => {
    const cell = await cleanup.cell();
    const expired = await mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', device: 'cli', ttlSeconds: 60, nowMs: Date.now() - 3_600_000 });
    const line = expectOneLine(await runCli(['chat', '--url', cell.url, '--token', expired, '--conv', 'm1:c1']), 'cellmesh chat', 1);
    expect(line).toContain('TOKEN_EXPIRED');
  });

  test('chat --url to a port where nothing listens: exit 3 (today exit 13 and no output)', async () => {
    const port = await freePort();
    const token = await mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', device: 'cli', ttlSeconds: 600, nowMs: Date.now() });
    const line = expectOneLine(await runCli(['chat', '--url', `ws://127.0.0.1:${port}`, '--token', token, '--conv', 'm1:c1']), 'cellmesh chat', 3);
    expect(line).toContain('ECONNREFUSED');
  });

  test('chat --cluster to a port where nothing listens: exit 3, not "TypeError: fetch failed"', async () => {
    const port = await freePort();
    const token = await mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', device: 'cli', ttlSeconds: 600, nowMs: Date.now() });
    const line = expectOneLine(await runCli(['chat', '--cluster', `http://127.0.0.1:${port}`, '--token', token, '--conv', 'm1:c1']), 'cellmesh chat', 3);
    expect(line).toContain(`cannot reach the cluster at http://127.0.0.1:${port}`);
    expect(line).toContain('ECONNREFUSED');
  });

  test('token --secret short: exit 2, naming the setting', async () => {
    const line = expectOneLine(await runCli(['token', '--tenant', TENANT, '--user', 'u1', '--secret', 'short']), 'cellmesh token', 2);
    expect(line).toContain('at least 32 bytes');
  });

  test('a bad flag value is a usage error: exit 2', async () => {
    const run = await runCli(['token', '--tenant', TENANT, '--user', 'u1', '--ttl', 'soon']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("'soon' is not a positive integer");
    expect(run.stderr).not.toMatch(/^\s+at /m);
  });

  test('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const run = await runCli(['--version']);
    expect(run).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: '' });
  });
});
