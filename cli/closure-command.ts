import { sumClosures, type ClosureCounted } from '../cell/messaging/closure-counts.js';
import { adminCall, printJson, type AdminOptions } from './admin-call.js';
import { messageWithCauses } from './cli-errors.js';

/**
 * `cellmesh closure`: the in-cell closure of a whole cluster (docs/routing.md, "In-cell
 * closure"). Asks one cell for the cluster's members, then every serving cell for its
 * `GET /v1/admin/closure` (with the same admin token), and sums: each message is counted by its
 * home cell only. A cell that cannot be read is listed and left out of the sum.
 */

interface ClosureAnswer extends ClosureCounted {
  cellId: string;
}

interface MemberView {
  cellId: string;
  role?: 'cell' | 'router';
  liveness: string;
  endpoints: { http: string };
}

const SERVING = new Set(['alive', 'suspect', 'leaving']);

export async function runClosureCommand(options: AdminOptions): Promise<void> {
  const view = (await adminCall(options, 'GET', '/v1/admin/cluster')) as { cells: MemberView[] };
  const members = view.cells.filter((member) => member.role !== 'router' && SERVING.has(member.liveness));
  const unread: Array<{ cellId: string; reason: string }> = [];
  const answers: ClosureAnswer[] = [];
  await Promise.all(
    members.map(async (member) => {
      try {
        answers.push((await adminCall({ ...options, cell: member.endpoints.http }, 'GET', '/v1/admin/closure')) as ClosureAnswer);
      } catch (error) {
        unread.push({ cellId: member.cellId, reason: messageWithCauses(error) });
      }
    }),
  );
  answers.sort((left, right) => (left.cellId < right.cellId ? -1 : 1));
  const total = sumClosures(answers);
  if (options.json === true) return printJson({ cells: answers, unread, total });
  const ratio = (value: number | null): string => (value === null ? '-' : value.toFixed(4));
  const rows = [
    ['cell', 'messages', 'in cell', 'relayed', 'copied', 'ratio', 'conversations', 'crossed', 'ratio'],
    ...answers.map((answer) => {
      const one = sumClosures([answer]);
      return [answer.cellId, one.messages.total, one.messages.inCell, one.messages.relayed, one.messages.copied, ratio(one.messages.inCellRatio), one.conversations.total, one.conversations.crossed, ratio(one.conversations.inCellRatio)];
    }),
    ['cluster', total.messages.total, total.messages.inCell, total.messages.relayed, total.messages.copied, ratio(total.messages.inCellRatio), total.conversations.total, total.conversations.crossed, ratio(total.conversations.inCellRatio)],
  ].map((row) => row.map(String));
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ')}\n`);
  for (const { cellId, reason } of unread) process.stdout.write(`not read: ${cellId}: ${reason}\n`);
  process.stdout.write('since each cell started; messages and conversations of merchants homed on the cells listed (docs/routing.md, "In-cell closure")\n');
}
