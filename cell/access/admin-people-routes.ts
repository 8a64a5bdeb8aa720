import { z } from 'zod';
import { AUDIT_ID_PATTERN, MAX_AUDIT_PAGE, recordOutcome, requestDetails, type AuditLog } from '../audit-log.js';
import { agentView, type PeopleDirectory } from '../desk/people.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN } from '../protocol/frames.js';
import { parseJsonBody, parseWith, requireAdmin, type HttpMethod, type HttpRequestData } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * The admin API of the desk's people and of the audit log (docs/protocol.md, "HTTP API"): the
 * agents of the merchants this cell hosts, their passwords, and the audit log (the tenants and
 * merchants themselves: admin-catalogue-routes.ts). Every call needs the admin token; every change is recorded in the audit log with its
 * outcome. A standalone cell serves it too: nothing here needs the mesh.
 */

/** A tenant this cell serves, as the core knows it: its browser origins and the merchants hosted now. */
export interface ServedTenant {
  id: string;
  origins: string[];
  merchants: string[];
}

export interface AdminPeopleComponents {
  /** The tenants served and merchants hosted now (moves change them): CellCore.servedTenants. */
  servedTenants: () => ServedTenant[];
  people: PeopleDirectory;
  audit: AuditLog;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
}

const AGENTS = '/v1/admin/tenants/:tenant/merchants/:merchant/agents';
const AGENT = `${AGENTS}/:agent`;

const PasswordBody = z.strictObject({ password: z.string() });
const AuditQuery = z.object({
  after: z.string().regex(AUDIT_ID_PATTERN, 'must be the id of an audit entry (<ms>-<counter>, from a previous page)').optional(),
  limit: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(MAX_AUDIT_PAGE, `must be at most ${MAX_AUDIT_PAGE}`).optional(),
  tenant: z.string().regex(IDENTIFIER_PATTERN, 'must be a tenant id').optional(),
  action: z.string().max(64).optional(),
});

export function adminPeopleRoutes(components: AdminPeopleComponents): RouteModule {
  const { people, audit } = components;
  return (router) => {
    const handle = (method: HttpMethod, pattern: string, handler: (request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void =>
      router.handle(method, pattern, async (request) => {
        requireAdmin(request.token, components.adminTokens);
        return handler(request);
      });
    /** A change: recorded with its outcome, whatever the path and body turn out to be. */
    const change = (method: HttpMethod, pattern: string, action: string, handler: (place: AgentPlace, request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void =>
      handle(method, pattern, (request) => {
        const [tenant, merchant, agent] = request.parameters.map(decodedSegment);
        const details = detailsOf(action, request.body);
        // A new agent's id is in the body, not the path.
        const target = agent ?? (typeof details?.['id'] === 'string' ? details['id'] : undefined);
        return recordOutcome(audit, { actor: 'admin', action, tenant, merchant, target, details }, () =>
          handler(hostedPlace(components, request.parameters), request),
        );
      });

    handle('get', AGENTS, async (request) => {
      const { tenant, merchant } = hostedPlace(components, request.parameters);
      return { status: 200, body: { tenant, merchant, agents: people.list(tenant, merchant).map(agentView) } };
    });
    handle('get', AGENT, async (request) => {
      const { tenant, merchant, agent } = hostedPlace(components, request.parameters);
      const record = people.get(tenant, merchant, agent!);
      if (record === undefined) throw new CellError(ErrorCode.AgentUnknown, `merchant ${merchant} has no agent ${agent}`);
      return { status: 200, body: agentView(record) };
    });
    change('post', AGENTS, 'agent.create', async ({ tenant, merchant }, request) => ({
      status: 201,
      body: agentView(await people.create(tenant, merchant, parseJsonBody(request.body))),
    }));
    change('patch', AGENT, 'agent.update', async ({ tenant, merchant, agent }, request) => ({
      status: 200,
      body: agentView(await people.update(tenant, merchant, agent!, parseJsonBody(request.body))),
    }));
    change('del', AGENT, 'agent.remove', async ({ tenant, merchant, agent }) => ({
      status: 200,
      body: { removed: agentView(await people.remove(tenant, merchant, agent!)) },
    }));
    change('put', `${AGENT}/password`, 'agent.password', async ({ tenant, merchant, agent }, request) => {
      const { password } = parseWith(PasswordBody, parseJsonBody(request.body));
      return { status: 200, body: agentView(await people.setPassword(tenant, merchant, agent!, password)) };
    });
    handle('get', '/v1/admin/audit', async (request) => {
      const query = parseWith(AuditQuery, Object.fromEntries(['after', 'limit', 'tenant', 'action'].flatMap((name) => (request.query.has(name) ? [[name, request.query.get(name)]] : []))));
      return { status: 200, body: await audit.list(query) };
    });
  };
}

interface AgentPlace {
  tenant: string;
  merchant: string;
  agent: string | undefined;
}

/** The tenant, merchant (and agent) of a path, checked: a tenant this cell serves, a merchant it hosts. */
function hostedPlace(components: AdminPeopleComponents, parameters: readonly string[]): AgentPlace {
  const [tenant, merchant, agent] = parameters.map(decodedSegment);
  const names = ['tenant', 'merchant', 'agent'];
  [tenant, merchant, agent].forEach((value, index) => {
    if (value !== undefined && !IDENTIFIER_PATTERN.test(value)) throw new CellError(ErrorCode.BadFrame, `${names[index]}: '${value.slice(0, 100)}' must be 1-64 characters of [A-Za-z0-9_.-]`);
  });
  const served = components.servedTenants().find((candidate) => candidate.id === tenant);
  if (served === undefined) throw new CellError(ErrorCode.TenantUnknown, `this cell serves no tenant ${tenant}`);
  if (!served.merchants.includes(merchant!) || !components.people.hasMerchant(tenant!, merchant!)) {
    throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by this cell`);
  }
  return { tenant: tenant!, merchant: merchant!, agent };
}

function decodedSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** What the audit entry keeps of a request body: the fields asked for, never a password. */
function detailsOf(action: string, body: string): Record<string, unknown> | undefined {
  return action === 'agent.password' ? undefined : requestDetails(body);
}
