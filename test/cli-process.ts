/** Runs the real `cellmesh` command (node bin/cellmesh.js) as a child process, for the CLI tests. */
import { spawn, type SpawnOptions } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, REPO_ROOT, SECRET } from './harness.js';

export const BIN = join(REPO_ROOT, 'bin', 'cellmesh.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The test's environment without CELLMESH_* variables, so only the arguments decide. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))), ...extra };
}

/** Runs `cellmesh ...args` to its end (killed after `timeoutMs`), with no standard input. */
export function runCli(args: readonly string[], options: { timeoutMs?: number; spawn?: SpawnOptions } = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(), ...options.spawn });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

/**
 * Runs `cellmesh ...args` with `input` on its standard input, in an environment of `env` only
 * (beside the test's own, CELLMESH_* variables left out): the admin commands' tests.
 */
export function runCliWithInput(args: readonly string[], options: { input?: string; env: Record<string, string> }): Promise<CliRun> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv(options.env) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.end(options.input ?? '');
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** A real cell in this process for a CLI test to talk to: memory store, the test admin token, tenant `mall` with merchant `m1`. */
export async function startCliTestCell(cellId: string): Promise<{ cell: RunningCell; url: string }> {
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'memory' },
    admin: { token: ADMIN_TOKEN },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }],
  });
  const cell = await startCell({ config, logger: silentLogger });
  return { cell, url: `http://127.0.0.1:${cell.port}` };
}

export interface CellRunEnded {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cellmesh cell --config <file>` with `config` (and `args`, and no CELLMESH_* variable of
 * the test's shell) until it exits; a cell that starts listening instead is sent `stopWith`, so
 * a test expecting a refusal fails rather than hangs (SIGKILL: exit code null) and one expecting
 * a start ends too (SIGTERM: exit code 0).
 */
export async function runCellUntilListening(configDir: string, config: Record<string, unknown>, args: readonly string[], stopWith: NodeJS.Signals): Promise<CellRunEnded> {
  const file = join(configDir, `cell-${Math.floor(Math.random() * 1e9)}.json`);
  await writeFile(file, JSON.stringify(config));
  const child = spawn(process.execPath, [BIN, 'cell', '--config', file, ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (stdout.includes('"event":"listening"')) child.kill(stopWith);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}
