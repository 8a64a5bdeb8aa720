import { adminCall, printJson, type AdminOptions } from './admin-call.js';
import { CliError, ExitCode } from './cli-errors.js';
import { readPassword } from './password-input.js';

/**
 * `cellmesh agents list|add|update|remove|password` and `cellmesh audit`: the desk's people and
 * the audit log through a cell's admin API (docs/protocol.md, "HTTP API"; docs/operations.md).
 * A password is read from standard input, never from the command line, where `ps` and the shell
 * history would keep it.
 */

interface MerchantOptions extends AdminOptions {
  tenant: string;
  merchant: string;
}

interface AgentFieldOptions extends MerchantOptions {
  name?: string;
  capacity?: number;
  groups?: string;
  supervisor?: boolean;
}

interface AgentView {
  id: string;
  name: string;
  capacity: number;
  groups: string[];
  supervisor: boolean;
  hasPassword: boolean;
}

interface AuditEntry {
  id: string;
  atMs: number;
  actor: string;
  action: string;
  tenant?: string;
  merchant?: string;
  target?: string;
  outcome: string;
  error?: { code: string; message: string };
}

export async function runAgentsListCommand(options: MerchantOptions): Promise<void> {
  const body = (await adminCall(options, 'GET', agentsPath(options))) as { agents: AgentView[] };
  if (options.json === true) return printJson(body);
  if (body.agents.length === 0) return void process.stdout.write(`merchant ${options.merchant} has no agents\n`);
  for (const agent of body.agents) process.stdout.write(`${agentLine(agent)}\n`);
}

export async function runAgentsAddCommand(id: string, options: AgentFieldOptions): Promise<void> {
  const agent = (await adminCall(options, 'POST', agentsPath(options), { id, ...agentFields(options) })) as AgentView;
  if (options.json === true) return printJson(agent);
  process.stdout.write(`added ${agentLine(agent)}\n`);
}

export async function runAgentsUpdateCommand(id: string, options: AgentFieldOptions): Promise<void> {
  const fields = agentFields(options);
  if (Object.keys(fields).length === 0) throw new CliError('give at least one of --name, --capacity, --groups, --supervisor, --no-supervisor', ExitCode.Usage);
  const agent = (await adminCall(options, 'PATCH', agentPath(options, id), fields)) as AgentView;
  if (options.json === true) return printJson(agent);
  process.stdout.write(`updated ${agentLine(agent)}\n`);
}

export async function runAgentsRemoveCommand(id: string, options: MerchantOptions): Promise<void> {
  const body = (await adminCall(options, 'DELETE', agentPath(options, id))) as { removed: AgentView };
  if (options.json === true) return printJson(body);
  process.stdout.write(`removed agent ${body.removed.id} of ${options.tenant}/${options.merchant}\n`);
}

export async function runAgentsPasswordCommand(id: string, options: MerchantOptions & { passwordStdin?: boolean }): Promise<void> {
  const password = await readPassword(options.passwordStdin === true);
  const agent = (await adminCall(options, 'PUT', `${agentPath(options, id)}/password`, { password })) as AgentView;
  if (options.json === true) return printJson(agent);
  process.stdout.write(`password set for agent ${agent.id} of ${options.tenant}/${options.merchant}\n`);
}

export async function runAuditCommand(options: AdminOptions & { tenant?: string; action?: string; limit?: number; after?: string }): Promise<void> {
  const query = new URLSearchParams();
  for (const name of ['tenant', 'action', 'after'] as const) if (options[name] !== undefined) query.set(name, options[name]);
  if (options.limit !== undefined) query.set('limit', String(options.limit));
  const page = (await adminCall(options, 'GET', `/v1/admin/audit${query.size > 0 ? `?${query}` : ''}`)) as { entries: AuditEntry[]; next?: string };
  if (options.json === true) return printJson(page);
  for (const entry of page.entries) process.stdout.write(`${auditLine(entry)}\n`);
  if (page.next !== undefined) process.stdout.write(`more: --after ${page.next}\n`);
}

function agentsPath(options: MerchantOptions): string {
  return `/v1/admin/tenants/${encodeURIComponent(options.tenant)}/merchants/${encodeURIComponent(options.merchant)}/agents`;
}

function agentPath(options: MerchantOptions, id: string): string {
  return `${agentsPath(options)}/${encodeURIComponent(id)}`;
}

function agentFields(options: AgentFieldOptions): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (options.name !== undefined) fields['name'] = options.name;
  if (options.capacity !== undefined) fields['capacity'] = options.capacity;
  if (options.groups !== undefined) fields['groups'] = options.groups.split(',').map((group) => group.trim()).filter((group) => group !== '');
  if (options.supervisor !== undefined) fields['supervisor'] = options.supervisor;
  return fields;
}

function agentLine(agent: AgentView): string {
  const flags = [agent.supervisor ? 'supervisor' : '', agent.hasPassword ? 'password set' : 'no password'].filter((flag) => flag !== '');
  return `${agent.id}  "${agent.name}"  capacity ${agent.capacity}  groups ${agent.groups.join(',')}  ${flags.join(', ')}`;
}

function auditLine(entry: AuditEntry): string {
  const place = [entry.tenant, entry.merchant, entry.target].filter((part) => part !== undefined).join('/');
  const outcome = entry.error === undefined ? entry.outcome : `${entry.outcome} ${entry.error.code}: ${entry.error.message}`;
  return `${new Date(entry.atMs).toISOString()}  ${entry.actor}  ${entry.action}  ${place || '-'}  ${outcome}`;
}
