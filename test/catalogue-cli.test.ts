/**
 * `cellmesh tenants ...` and `cellmesh merchants ...` as an operator runs them, against a real
 * cell's admin API: what they print, that a generated secret is printed once and works, that
 * an own secret comes from standard input only, and that refusals are one line with exit code 1.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningCell } from '../assembly/process-cell.js';
import { mintToken } from '../cell/access/tokens.js';
import { runCliWithInput, startCliTestCell, type CliRun } from './cli-process.js';
import { ADMIN_TOKEN, RawClient } from './harness.js';

let cell: RunningCell;
let url: string;

beforeAll(async () => {
  ({ cell, url } = await startCliTestCell('catalogue-cli-cell'));
});
afterAll(() => cell?.stop());

function cellmesh(args: readonly string[], input?: string): Promise<CliRun> {
  return runCliWithInput([...args, '--cell', url], { ...(input === undefined ? {} : { input }), env: { CELLMESH_ADMIN_TOKEN: ADMIN_TOKEN } });
}

describe('cellmesh tenants and merchants', () => {
  test('create (secret printed once), update with settings kept, rotate, merchants, remove', async () => {
    const created = await cellmesh(['tenants', 'create', 'bazaar', '--name', 'Bazaar', '--origins', 'https://bazaar.example', '--conversation-days', '30']);
    expect(created.code).toBe(0);
    const [line, secretLine] = created.stdout.trim().split('\n');
    expect(line).toBe('created bazaar  "Bazaar"  runtime  origins https://bazaar.example  kids k1  merchants -');
    expect(secretLine).toMatch(/^secret k1: [0-9a-z]{48}$/);
    expect(created.stderr).toContain('only this once');
    const secret = secretLine!.split(' ').pop()!;

    expect(await cellmesh(['merchants', 'create', 'stall', '--tenant', 'bazaar', '--name', 'The Stall'])).toMatchObject({ code: 0, stdout: 'created stall  "The Stall"  runtime of tenant bazaar, hosted by this cell\n' });
    const agent = await RawClient.connect(url.replace('http', 'ws'), await mintToken({ secret, tenant: 'bazaar', user: 'ann', role: 'agent', merchant: 'stall', device: 'd1', ttlSeconds: 60, nowMs: Date.now() }));
    await agent.close();

    // A setting changed alone keeps the others of its section.
    const updated = await cellmesh(['tenants', 'update', 'bazaar', '--attachment-days', '7', '--add-secret', 'k2', '--secret-stdin'], 'bazaar-operator-secret-0123456789-abcdefgh\n');
    expect(updated).toMatchObject({ code: 0, stdout: 'updated bazaar  "Bazaar"  runtime  origins https://bazaar.example  kids k1,k2  merchants stall\n' });
    const shown = JSON.parse((await cellmesh(['tenants', 'list', '--json'])).stdout) as { tenants: Array<{ id: string; retention?: unknown }> };
    expect(shown.tenants.find((tenant) => tenant.id === 'bazaar')?.retention).toEqual({ conversationDays: 30, attachmentsDays: 7 });
    expect(JSON.stringify(shown)).not.toContain(secret);
    expect((await cellmesh(['tenants', 'update', 'bazaar', '--remove-secret', 'k1'])).stdout).toContain('kids k2');

    expect((await cellmesh(['tenants', 'list'])).stdout.trim().split('\n')).toEqual([
      'mall  config  origins -  kids -  merchants m1',
      'bazaar  "Bazaar"  runtime  origins https://bazaar.example  kids k2  merchants stall',
    ]);
    expect((await cellmesh(['merchants', 'list', '--tenant', 'bazaar'])).stdout).toBe('stall  "The Stall"  runtime  agents 0\n');
    expect((await cellmesh(['merchants', 'update', 'stall', '--tenant', 'bazaar', '--name', 'Big Stall'])).stdout).toBe('updated stall  "Big Stall"  runtime\n');

    const notEmpty = await cellmesh(['tenants', 'remove', 'bazaar']);
    expect([notEmpty.code, notEmpty.stderr.trim()]).toEqual([1, 'cellmesh tenants remove: TENANT_NOT_EMPTY: tenant bazaar still has merchants on this cell (stall): remove or move them first']);
    const configOwned = await cellmesh(['merchants', 'remove', 'm1', '--tenant', 'mall']);
    expect([configOwned.code, configOwned.stderr]).toEqual([1, expect.stringMatching(/^cellmesh merchants remove: CONFIG_OWNED: merchant m1 of tenant mall is defined in a config file/)]);
    expect(await cellmesh(['merchants', 'remove', 'stall', '--tenant', 'bazaar'])).toMatchObject({ code: 0, stdout: 'removed merchant stall of tenant bazaar\n' });
    expect(await cellmesh(['tenants', 'remove', 'bazaar'])).toMatchObject({ code: 0, stdout: 'removed tenant bazaar\n' });

    const usage = await cellmesh(['tenants', 'update', 'mall']);
    expect([usage.code, usage.stderr.trim()]).toEqual([2, expect.stringMatching(/^cellmesh tenants update: give at least one of --name/)]);
    const secretOnArgv = await cellmesh(['tenants', 'create', 'x', '--secret', 'abc']);
    expect([secretOnArgv.code, secretOnArgv.stderr]).toEqual([2, expect.stringContaining("unknown option '--secret'")]);
  }, 60_000);
});
