import type { AgentStatus } from '../protocol/frames.js';
import type { OpenDesk } from './open-desk.js';

/** One merchant's desk as the cell console shows it (`GET /v1/admin/desks`, docs/protocol.md). */
export interface DeskOverview {
  tenant: string;
  merchant: string;
  agents: Array<{ id: string; name: string; status: AgentStatus; capacity: number; open: number; groups: string[] }>;
  /** Customers waiting for an agent per group, and how long the longest-waiting one has waited. */
  queues: Array<{ group: string; length: number; oldestWaitMs: number }>;
  consultations: { waiting: number; assigned: number };
}

/**
 * The desks of the merchants this cell hosts at `nowMs`, by tenant and merchant id: their agents
 * (status, load), their queues by group (every group an agent is in, empty ones too) and their
 * open consultations. Read from memory; a desk still loading is left out.
 */
export function deskOverview(desks: Iterable<OpenDesk>, nowMs: number, nameOf: (open: OpenDesk, agent: string) => string | undefined): DeskOverview[] {
  const overview: DeskOverview[] = [];
  for (const open of desks) {
    const queues = new Map<string, { group: string; length: number; oldestWaitMs: number }>();
    for (const group of open.groups) queues.set(group, { group, length: 0, oldestWaitMs: 0 });
    const consultations = { waiting: 0, assigned: 0 };
    for (const record of open.records.values()) {
      if (record.opening === true) continue;
      consultations[record.state]++;
      if (record.state !== 'waiting') continue;
      const queue = queues.get(record.group) ?? { group: record.group, length: 0, oldestWaitMs: 0 };
      queue.length++;
      queue.oldestWaitMs = Math.max(queue.oldestWaitMs, nowMs - record.queuedAtMs);
      queues.set(record.group, queue);
    }
    const agents = open.rules
      .allAgents()
      .map((agent) => ({ id: agent.id, name: nameOf(open, agent.id) ?? agent.id, status: agent.status, capacity: agent.capacity, open: agent.open, groups: [...agent.groups] }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const byGroup = [...queues.values()].sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
    overview.push({ tenant: open.tenant, merchant: open.merchant, agents, queues: byGroup, consultations });
  }
  return overview.sort((a, b) => (a.tenant === b.tenant ? (a.merchant < b.merchant ? -1 : 1) : a.tenant < b.tenant ? -1 : 1));
}
