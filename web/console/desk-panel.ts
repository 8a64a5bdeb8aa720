// The console's "Desks" panel: per merchant this cell hosts, its agents (status, load), its queues
// by group (length, oldest wait) and its open consultations, from GET /v1/admin/desks.
import { h } from '../shared/dom.js';

export interface DesksView {
  cellId: string;
  desks: Array<{
    tenant: string;
    merchant: string;
    agents: Array<{ id: string; name: string; status: string; capacity: number; open: number }>;
    queues: Array<{ group: string; length: number; oldestWaitMs: number }>;
    consultations: { waiting: number; assigned: number };
  }>;
}

/** The table's rows, one per merchant (a row saying so when no desk is open here). */
export function deskRows(view: DesksView): HTMLTableRowElement[] {
  if (view.desks.length === 0) return [h('tr', {}, h('td', { colspan: 4 }, 'No merchant with a desk is hosted here.'))];
  return view.desks.map((desk) => {
    const name = `${desk.tenant}/${desk.merchant}`;
    return h(
      'tr',
      { 'data-desk': name },
      h('th', { scope: 'row' }, name),
      h(
        'td',
        {},
        desk.agents.length === 0
          ? 'none'
          : h('ul', { class: 'plain' }, ...desk.agents.map((agent) => h('li', { 'data-agent': agent.id, 'data-status': agent.status }, `${agent.name}: ${agent.status}, ${agent.open} of ${agent.capacity}`))),
      ),
      h(
        'td',
        {},
        desk.queues.length === 0
          ? 'none'
          : h('ul', { class: 'plain' }, ...desk.queues.map((queue) => h('li', { 'data-group': queue.group, 'data-waiting': queue.length }, queueText(queue)))),
      ),
      h('td', {}, `${desk.consultations.assigned} assigned, ${desk.consultations.waiting} waiting`),
    );
  });
}

function queueText(queue: { group: string; length: number; oldestWaitMs: number }): string {
  if (queue.length === 0) return `${queue.group}: nobody waiting`;
  return `${queue.group}: ${queue.length} waiting, the longest ${waitText(queue.oldestWaitMs)}`;
}

function waitText(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}
