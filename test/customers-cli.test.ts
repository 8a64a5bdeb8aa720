/**
 * `cellmesh customers export|erase` and `cellmesh blocks list|add|remove` as an operator runs
 * them, against a real cell's admin API (uWS, LevelDB in a temp dir): the export follows every
 * page into one document, the erasure asks for consent, blocks refuse the customer's messages,
 * and every failure is one line on stderr with its exit code.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { EXPORT_PAGE_MESSAGES, type ExportPage } from '../cell/customer-data.js';
import { runCliWithInput, type CliRun } from './cli-process.js';
import { ADMIN_TOKEN, Cleanup, errorCodeOf, httpRequest, tokenFor, type TestCell } from './harness.js';

const cleanup = new Cleanup();
let cell: TestCell;
let cathy: string;
/** More than one export page of messages in one conversation. */
const M1_MESSAGES = EXPORT_PAGE_MESSAGES + 20;

beforeAll(async () => {
  cell = await cleanup.cell({ admin: ADMIN_TOKEN });
  cathy = await tokenFor({ user: 'cathy' });
  for (let start = 1; start <= M1_MESSAGES; start += 50) {
    const batch = Array.from({ length: Math.min(50, M1_MESSAGES - start + 1) }, (_, index) => send('m1:cathy', `c${start + index}`));
    await Promise.all(batch);
  }
  await send('m2:cathy', 'hello m2');
  await send('m1:dave', 'dave here', await tokenFor({ user: 'dave' }));
}, 120_000);
afterAll(() => cleanup.run());

/** Sends one message over HTTP as a customer; fails unless it is stored. */
async function send(conv: string, cmid: string, token = cathy): Promise<void> {
  const answer = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/${conv}/messages`, { token, json: { cmid, body: `body of ${cmid}` } });
  if (answer.status !== 201) throw new Error(`send ${cmid} to ${conv}: ${answer.status} ${answer.text}`);
}

/** Runs `cellmesh ...args` with `input` on its standard input and the admin token in the environment. */
function cellmesh(args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<CliRun> {
  return runCliWithInput(args, { ...(options.input === undefined ? {} : { input: options.input }), env: options.env ?? { CELLMESH_ADMIN_TOKEN: ADMIN_TOKEN } });
}

const tenant = (): string[] => ['--cell', cell.httpUrl, '--tenant', 'mall'];
const merchant = (): string[] => [...tenant(), '--merchant', 'm1'];

describe('cellmesh blocks and customers', () => {
  test('blocks: add (with a reason), list, the customer refused, remove', async () => {
    const added = await cellmesh(['blocks', 'add', 'cathy', ...merchant(), '--reason', 'insults']);
    expect(added).toMatchObject({ code: 0, stderr: '' });
    expect(added.stdout).toMatch(/^blocked cathy {2}since \d{4}-\d\d-\d\dT[\d:.]+Z {2}by admin {2}"insults"\n$/);
    expect((await cellmesh(['blocks', 'add', 'dave', ...merchant()])).code).toBe(0);

    const listed = await cellmesh(['blocks', 'list', ...merchant()]);
    expect(listed.stdout.trim().split('\n').map((line) => line.replace(/since \S+/, 'since T'))).toEqual(['cathy  since T  by admin  "insults"', 'dave  since T  by admin']);
    const page = await cellmesh(['blocks', 'list', ...merchant(), '--limit', '1']);
    expect(page.stdout.trim().split('\n')[1]).toBe('more: --after cathy');
    const next = await cellmesh(['blocks', 'list', ...merchant(), '--after', 'cathy', '--json']);
    expect((JSON.parse(next.stdout) as { blocks: Array<{ customer: string }> }).blocks.map((block) => block.customer)).toEqual(['dave']);

    const refused = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/m1:cathy/messages`, { token: cathy, json: { cmid: 'while-blocked', body: 'hi' } });
    expect(errorCodeOf(refused)).toBe('CUSTOMER_BLOCKED');

    expect(await cellmesh(['blocks', 'remove', 'cathy', ...merchant()])).toMatchObject({ code: 0, stdout: 'unblocked customer cathy of mall/m1\n' });
    expect((await cellmesh(['blocks', 'remove', 'dave', ...merchant()])).code).toBe(0);
    expect(await cellmesh(['blocks', 'list', ...merchant()])).toMatchObject({ code: 0, stdout: 'merchant m1 has blocked no customers\n' });
  }, 60_000);

  test('export: every page into one document, on stdout or in a file readable by its owner only', async () => {
    const printed = await cellmesh(['customers', 'export', 'cathy', ...tenant()]);
    expect(printed).toMatchObject({ code: 0, stderr: '' });
    const document = JSON.parse(printed.stdout) as ExportPage;
    expect(document).toMatchObject({ tenant: 'mall', customer: 'cathy' });
    expect(document).not.toHaveProperty('next');
    expect(document.conversations.map((conversation) => [conversation.conv, conversation.messages.length])).toEqual([
      ['m1:cathy', M1_MESSAGES],
      ['m2:cathy', 1],
    ]);
    const seqs = document.conversations[0]!.messages.map((message) => message.seq);
    expect(seqs).toEqual(Array.from({ length: M1_MESSAGES }, (_, index) => index + 1));

    const out = join(await cleanup.tempDir(), 'cathy.json');
    const written = await cellmesh(['customers', 'export', 'cathy', ...tenant(), '--out', out]);
    expect(written).toMatchObject({ code: 0, stderr: '', stdout: `wrote 2 conversations, ${M1_MESSAGES + 1} messages of mall/cathy to ${out}\n` });
    expect(JSON.parse(await readFile(out, 'utf8'))).toEqual(document);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  }, 60_000);

  test('erase: refused without a terminal or --yes; with --yes, what was deleted and which cells were asked', async () => {
    const refused = await cellmesh(['customers', 'erase', 'cathy', ...tenant()]);
    expect(refused).toMatchObject({ code: 2, stdout: '', stderr: 'cellmesh customers erase: erasure cannot be undone: pass --yes to erase without a terminal to confirm on\n' });
    expect(JSON.parse((await cellmesh(['customers', 'export', 'cathy', ...tenant()])).stdout).conversations).toHaveLength(2);

    const erased = await cellmesh(['customers', 'erase', 'cathy', ...tenant(), '--yes']);
    expect(erased).toMatchObject({ code: 0, stderr: '' });
    const [here, others] = erased.stdout.trim().split('\n');
    expect(here).toMatch(new RegExp(`^erased mall/cathy here: 2 conversations, ${M1_MESSAGES + 1} messages, .*; 0 devices closed$`));
    expect(others).toBe('no other cells asked');
    expect(JSON.parse((await cellmesh(['customers', 'export', 'cathy', ...tenant()])).stdout).conversations).toEqual([]);
    // Another customer of the same merchant is untouched.
    expect(JSON.parse((await cellmesh(['customers', 'export', 'dave', ...tenant()])).stdout).conversations).toHaveLength(1);

    const again = await cellmesh(['customers', 'erase', 'cathy', ...tenant(), '--yes', '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ tenant: 'mall', customer: 'cathy', deleted: { conversations: 0, messages: 0 }, cellsAsked: [], cellsFailed: [] });
  }, 60_000);

  test('every failure is one line on stderr with its exit code', async () => {
    const cases: Array<{ name: string; args: string[]; env?: Record<string, string>; code: number; stderr: RegExp }> = [
      { name: 'a block not there', args: ['blocks', 'remove', 'nobody', ...merchant()], code: 1, stderr: /^cellmesh blocks remove: NOT_FOUND: merchant m1 has not blocked customer nobody$/ },
      { name: 'a merchant not hosted', args: ['blocks', 'list', ...tenant(), '--merchant', 'm7'], code: 1, stderr: /^cellmesh blocks list: MERCHANT_NOT_HOSTED: / },
      { name: 'a reason too long', args: ['blocks', 'add', 'cathy', ...merchant(), '--reason', 'x'.repeat(1001)], code: 1, stderr: /^cellmesh blocks add: BAD_FRAME: reason: must be at most 1000 characters$/ },
      { name: 'a tenant not served', args: ['customers', 'export', 'cathy', '--cell', cell.httpUrl, '--tenant', 'nowhere'], code: 1, stderr: /^cellmesh customers export: TENANT_UNKNOWN: / },
      { name: 'a customer id with bad characters', args: ['customers', 'erase', 'c 1', ...tenant(), '--yes'], code: 1, stderr: /^cellmesh customers erase: BAD_FRAME: customer: / },
      { name: 'a wrong admin token', args: ['customers', 'export', 'cathy', ...tenant(), '--admin-token', 'wrong-token'], code: 1, stderr: /^cellmesh customers export: ADMIN_FORBIDDEN: missing or wrong admin token$/ },
      { name: 'no admin token', args: ['blocks', 'list', ...merchant()], env: {}, code: 2, stderr: /^cellmesh blocks list: pass --admin-token or set CELLMESH_ADMIN_TOKEN$/ },
      { name: 'an unreachable cell', args: ['customers', 'export', 'cathy', '--cell', 'http://127.0.0.1:9', '--tenant', 'mall'], code: 3, stderr: /^cellmesh customers export: cannot reach http:\/\/127\.0\.0\.1:9: / },
    ];
    const runs = await Promise.all(cases.map((row) => cellmesh(row.args, row.env === undefined ? {} : { env: row.env })));
    const problems = cases.flatMap((row, index) => {
      const run = runs[index]!;
      const lines = run.stderr.trim().split('\n');
      return run.code === row.code && row.stderr.test(lines[0] ?? '') && lines.length === 1 ? [] : [`${row.name}: expected ${row.code} ${row.stderr}, got ${run.code} ${JSON.stringify(run.stderr)}`];
    });
    expect(problems).toEqual([]);
    // The export has no --json: its output is JSON already.
    expect((await cellmesh(['customers', 'export', 'cathy', ...tenant(), '--json'])).code).toBe(2);
  }, 60_000);
});
