/**
 * `GET /v1/admin/closure` and `cellmesh closure` against a real cell in a (one-cell) cluster:
 * a customer's message sent at its merchant's home never crosses a cell boundary.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ADMIN_TOKEN, Cleanup, errorCodeOf, eventually, httpRequest, sendMessage, startChildCell, tokenFor, type ChildCell } from './harness.js';
import { runCli } from './cli-process.js';

const cleanup = new Cleanup();
let cell: ChildCell;

beforeAll(async () => {
  const directory = await cleanup.tempDir();
  cell = await startChildCell({ directory, configDir: directory, mesh: {} });
  cleanup.add(async () => {
    cell.kill('SIGTERM');
    await cell.exited;
  });
}, 90_000);
afterAll(() => cleanup.run());

interface Totals {
  messages: { inCell: number; relayed: number; copied: number; total: number; inCellRatio: number | null };
  conversations: { total: number; crossed: number; inCell: number; inCellRatio: number | null };
}

test('a message sent at its home counts as in cell, per cell and for the cluster', async () => {
  const closureUrl = `${cell.httpUrl}/v1/admin/closure`;
  const empty = await httpRequest('GET', closureUrl, { token: ADMIN_TOKEN });
  expect(empty.status).toBe(200);
  expect(empty.body).toMatchObject({ messages: { total: 0, inCellRatio: null }, conversations: { total: 0, inCellRatio: null } });
  expect(errorCodeOf(await httpRequest('GET', closureUrl))).toBe('ADMIN_FORBIDDEN');

  const customer = await cleanup.client(cell.url, await tokenFor({ user: 'cu-1' }));
  await sendMessage(customer, 'm1:cu-1', 'k1', 'hello');
  await sendMessage(customer, 'm1:cu-1', 'k2', 'again');
  await customer.close();
  await eventually(async () => {
    const answer = await httpRequest('GET', closureUrl, { token: ADMIN_TOKEN });
    return (answer.body as Totals).messages.total === 2;
  }, 'both messages counted');

  const run = await runCli(['closure', '--cell', cell.httpUrl, '--admin-token', ADMIN_TOKEN, '--json']);
  expect(run.code).toBe(0);
  const report = JSON.parse(run.stdout) as { cells: Array<{ cellId: string }>; unread: unknown[]; total: Totals };
  expect(report.unread).toEqual([]);
  expect(report.cells).toHaveLength(1);
  expect(report.total).toEqual({
    messages: { inCell: 2, relayed: 0, copied: 0, total: 2, inCellRatio: 1 },
    conversations: { total: 1, crossed: 0, inCell: 1, inCellRatio: 1 },
  });
  const table = await runCli(['closure', '--cell', cell.httpUrl, '--admin-token', ADMIN_TOKEN]);
  expect(table.code).toBe(0);
  expect(table.stdout).toMatch(/^cluster\s+2\s+2\s+0\s+0\s+1\.0000\s+1\s+0\s+1\.0000$/m);
}, 60_000);
