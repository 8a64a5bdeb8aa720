/**
 * `cellmesh agents ...` and `cellmesh audit` as an operator runs them, against a real cell's
 * admin API: what they print, that a password goes through standard input only, and that every
 * failure is one line on stderr with its exit code.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningCell } from '../assembly/process-cell.js';
import { verifyPassword } from '../cell/access/passwords.js';
import { runCliWithInput, startCliTestCell, type CliRun } from './cli-process.js';
import { ADMIN_TOKEN } from './harness.js';

let cell: RunningCell;
let url: string;

beforeAll(async () => {
  ({ cell, url } = await startCliTestCell('people-cli-cell'));
});
afterAll(() => cell?.stop());

/** Runs `cellmesh ...args` with `input` on its standard input and the admin token in the environment. */
function cellmesh(args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<CliRun> {
  return runCliWithInput(args, { ...(options.input === undefined ? {} : { input: options.input }), env: options.env ?? { CELLMESH_ADMIN_TOKEN: ADMIN_TOKEN } });
}

const merchant = (): string[] => ['--cell', url, '--tenant', 'mall', '--merchant', 'm1'];

describe('cellmesh agents and audit', () => {
  test('add, list, update, password (from stdin), remove, then the audit log of it all', async () => {
    const added = await cellmesh(['agents', 'add', 'bob', ...merchant(), '--name', 'Bob Stone', '--capacity', '3', '--groups', 'pre-sales,after-sales', '--supervisor']);
    expect(added).toMatchObject({ code: 0, stderr: '' });
    expect(added.stdout).toBe('added bob  "Bob Stone"  capacity 3  groups pre-sales,after-sales  supervisor, no password\n');
    expect((await cellmesh(['agents', 'add', 'ann', ...merchant()])).code).toBe(0);

    const listed = await cellmesh(['agents', 'list', ...merchant()]);
    expect(listed.stdout.trim().split('\n')).toEqual(['ann  "ann"  capacity 5  groups default  no password', 'bob  "Bob Stone"  capacity 3  groups pre-sales,after-sales  supervisor, no password']);

    const updated = await cellmesh(['agents', 'update', 'bob', ...merchant(), '--capacity', '4', '--no-supervisor']);
    expect(updated.stdout).toBe('updated bob  "Bob Stone"  capacity 4  groups pre-sales,after-sales  no password\n');

    const password = await cellmesh(['agents', 'password', 'bob', ...merchant(), '--password-stdin'], { input: 'correct horse battery\n' });
    expect(password).toMatchObject({ code: 0, stdout: 'password set for agent bob of mall/m1\n' });
    expect(await verifyPassword('correct horse battery', cell.people.get('mall', 'm1', 'bob')!.passwordHash!)).toBe(true);
    // Piped standard input without the flag works the same way.
    expect((await cellmesh(['agents', 'password', 'ann', ...merchant()], { input: 'another long secret' })).code).toBe(0);

    const json = await cellmesh(['agents', 'list', ...merchant(), '--json']);
    const body = JSON.parse(json.stdout) as { agents: Array<{ id: string; hasPassword: boolean }> };
    expect(body.agents.map((agent) => [agent.id, agent.hasPassword])).toEqual([
      ['ann', true],
      ['bob', true],
    ]);
    expect(json.stdout).not.toMatch(/scrypt|correct horse/);

    expect(await cellmesh(['agents', 'remove', 'ann', ...merchant()])).toMatchObject({ code: 0, stdout: 'removed agent ann of mall/m1\n' });

    const audit = await cellmesh(['audit', '--cell', url]);
    expect(audit.code).toBe(0);
    expect(audit.stdout.trim().split('\n').map((line) => line.split('  ').slice(1).join(' '))).toEqual([
      'admin agent.remove mall/m1/ann ok',
      'admin agent.password mall/m1/ann ok',
      'admin agent.password mall/m1/bob ok',
      'admin agent.update mall/m1/bob ok',
      'admin agent.create mall/m1/ann ok',
      'admin agent.create mall/m1/bob ok',
    ]);
    const page = await cellmesh(['audit', '--cell', url, '--action', 'agent.password', '--limit', '1']);
    const [line, more] = page.stdout.trim().split('\n');
    expect(line).toMatch(/  admin  agent.password  mall\/m1\/ann  ok$/);
    expect(more).toMatch(/^more: --after \d{16}-\d{16}$/);
    const next = await cellmesh(['audit', '--cell', url, '--action', 'agent.password', '--after', more!.split(' ').pop()!, '--json']);
    expect((JSON.parse(next.stdout) as { entries: Array<{ target: string }> }).entries.map((entry) => entry.target)).toEqual(['bob']);
  }, 60_000);

  test('every failure is one line on stderr with its exit code; a password never comes from argv', async () => {
    // `byCommander`: commander's own parse errors, followed by the usage of the command.
    const cases: Array<{ name: string; args: string[]; env?: Record<string, string>; input?: string; code: number; stderr: RegExp; byCommander?: true }> = [
      { name: 'a refusal of the cell', args: ['agents', 'remove', 'nobody', ...merchant()], code: 1, stderr: /^cellmesh agents remove: AGENT_UNKNOWN: merchant m1 has no agent nobody$/ },
      { name: 'validation', args: ['agents', 'add', 'zed', ...merchant(), '--groups', 'a b'], code: 1, stderr: /^cellmesh agents add: BAD_FRAME: groups\.0: must be 1-64 characters/ },
      { name: 'a merchant not hosted', args: ['agents', 'list', '--cell', url, '--tenant', 'mall', '--merchant', 'm7'], code: 1, stderr: /^cellmesh agents list: MERCHANT_NOT_HOSTED: / },
      { name: 'a wrong admin token', args: ['audit', '--cell', url, '--admin-token', 'wrong-token'], code: 1, stderr: /^cellmesh audit: ADMIN_FORBIDDEN: missing or wrong admin token$/ },
      { name: 'no admin token', args: ['audit', '--cell', url], env: {}, code: 2, stderr: /^cellmesh audit: pass --admin-token or set CELLMESH_ADMIN_TOKEN$/ },
      { name: 'an unreachable cell', args: ['agents', 'list', '--cell', 'http://127.0.0.1:9', '--tenant', 'mall', '--merchant', 'm1'], code: 3, stderr: /^cellmesh agents list: cannot reach http:\/\/127\.0\.0\.1:9: / },
      { name: 'an update of nothing', args: ['agents', 'update', 'bob', ...merchant()], code: 2, stderr: /^cellmesh agents update: give at least one of --name/ },
      { name: 'a password on the command line', args: ['agents', 'password', 'bob', ...merchant(), '--password', 'correct horse battery'], code: 2, stderr: /unknown option '--password'/, byCommander: true },
      { name: 'no password on stdin', args: ['agents', 'password', 'bob', ...merchant()], input: '', code: 2, stderr: /^cellmesh agents password: no password on standard input/ },
      { name: 'a short password', args: ['agents', 'password', 'bob', ...merchant()], input: 'short\n', code: 1, stderr: /^cellmesh agents password: BAD_FRAME: password: must be at least 10 characters$/ },
      { name: 'a capacity that is no number', args: ['agents', 'add', 'zed', ...merchant(), '--capacity', 'lots'], code: 2, stderr: /'lots' is not a positive integer/, byCommander: true },
    ];
    const runs = await Promise.all(cases.map((row) => cellmesh(row.args, { ...(row.env === undefined ? {} : { env: row.env }), ...(row.input === undefined ? {} : { input: row.input }) })));
    const problems = cases.flatMap((row, index) => {
      const run = runs[index]!;
      const lines = run.stderr.trim().split('\n');
      const ok = run.code === row.code && row.stderr.test(lines[0] ?? '') && (row.byCommander === true || lines.length === 1);
      return ok ? [] : [`${row.name}: expected ${row.code} ${row.stderr}, got ${run.code} ${JSON.stringify(run.stderr)}`];
    });
    expect(problems).toEqual([]);
    expect(runs.every((run) => !/\n\s+at /.test(run.stderr))).toBe(true);
  }, 60_000);
});
