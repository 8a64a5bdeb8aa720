import { recordOutcome, requestDetails, type AuditLog } from '../audit-log.js';
import type { PeopleDirectory } from '../desk/people.js';
import type { CellError } from '../protocol/errors.js';
import type { MerchantView, TenantCatalogue, TenantView } from '../tenant-catalogue.js';
import { parseJsonBody, requireAdmin, type HttpMethod, type HttpRequestData } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * The admin API of tenants and merchants (docs/protocol.md, "HTTP API"; docs/desk.md, "Tenants
 * and merchants"): list the tenants this cell serves and the merchants it hosts, create, change
 * and remove those of the admin API (cell/tenant-catalogue.ts). Every call needs the admin
 * token; every change is recorded in the audit log with its outcome, never with a secret. No
 * answer holds a secret but the one the cell generated, once, in the answer that created it.
 */
export interface AdminCatalogueComponents {
  catalogue: TenantCatalogue;
  /** For the agent count of each merchant. */
  people: PeopleDirectory;
  audit: AuditLog;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
  /** Why the cell takes no new merchant now (a drain: CELL_DRAINING); undefined while it takes them. */
  merchantIntakeRefusal?: (() => CellError | undefined) | undefined;
}

const TENANTS = '/v1/admin/tenants';
const TENANT = `${TENANTS}/:tenant`;
const MERCHANTS = `${TENANT}/merchants`;
const MERCHANT = `${MERCHANTS}/:merchant`;

type Answer = { status: number; body: unknown };

export function adminCatalogueRoutes(components: AdminCatalogueComponents): RouteModule {
  const { catalogue, people, audit } = components;
  const withAgents = (tenant: TenantView): TenantView & { merchants: Array<MerchantView & { agents: number }> } => ({
    ...tenant,
    merchants: tenant.merchants.map((merchant) => ({ ...merchant, agents: people.list(tenant.id, merchant.id).length })),
  });
  return (router) => {
    const handle = (method: HttpMethod, pattern: string, handler: (request: HttpRequestData, tenant: string, merchant: string | undefined) => Promise<Answer>): void =>
      router.handle(method, pattern, async (request) => {
        requireAdmin(request.token, components.adminTokens);
        const [tenant, merchant] = request.parameters.map(decodedSegment);
        return handler(request, tenant!, merchant);
      });
    /** A change: recorded with its outcome, whatever the path and body turn out to be. */
    const change = (method: HttpMethod, pattern: string, action: string, handler: (request: HttpRequestData, tenant: string, merchant: string | undefined) => Promise<Answer>): void =>
      router.handle(method, pattern, async (request) => {
        requireAdmin(request.token, components.adminTokens);
        const [pathTenant, pathMerchant] = request.parameters.map(decodedSegment);
        const details = withoutSecrets(requestDetails(request.body));
        // A new tenant's or merchant's id is in the body, not the path.
        const bodyId = typeof details?.['id'] === 'string' ? details['id'] : undefined;
        const tenant = pathTenant ?? bodyId;
        const merchant = pathMerchant ?? (action === 'merchant.create' ? bodyId : undefined);
        return recordOutcome(audit, { actor: 'admin', action, tenant, merchant, target: merchant ?? tenant, details }, () => handler(request, pathTenant!, pathMerchant));
      });

    handle('get', TENANTS, async () => ({ status: 200, body: { tenants: catalogue.list().map(withAgents) } }));
    handle('get', TENANT, async (_request, tenant) => ({ status: 200, body: withAgents(catalogue.get(tenant)) }));
    change('post', TENANTS, 'tenant.create', async (request) => {
      const created = await catalogue.createTenant(parseJsonBody(request.body));
      return { status: 201, body: { ...created, tenant: withAgents(created.tenant) } };
    });
    change('patch', TENANT, 'tenant.update', async (request, tenant) => {
      const updated = await catalogue.updateTenant(tenant, parseJsonBody(request.body));
      return { status: 200, body: { ...updated, tenant: withAgents(updated.tenant) } };
    });
    change('del', TENANT, 'tenant.remove', async (_request, tenant) => ({ status: 200, body: await catalogue.removeTenant(tenant) }));

    handle('get', MERCHANTS, async (_request, tenant) => ({
      status: 200,
      body: { tenant, merchants: catalogue.listMerchants(tenant).map((merchant) => ({ ...merchant, agents: people.list(tenant, merchant.id).length })) },
    }));
    change('post', MERCHANTS, 'merchant.create', async (request, tenant) => {
      const refusal = components.merchantIntakeRefusal?.();
      if (refusal !== undefined) throw refusal;
      return { status: 201, body: await catalogue.createMerchant(tenant, parseJsonBody(request.body)) };
    });
    change('patch', MERCHANT, 'merchant.update', async (request, tenant, merchant) => ({ status: 200, body: await catalogue.updateMerchant(tenant, merchant!, parseJsonBody(request.body)) }));
    change('del', MERCHANT, 'merchant.remove', async (_request, tenant, merchant) => ({ status: 200, body: await catalogue.removeMerchant(tenant, merchant!) }));
  };
}

/** What the audit log keeps of a body: a secret given is recorded as given, never as its value. */
function withoutSecrets(details: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (details === undefined) return undefined;
  const kept: Record<string, unknown> = { ...details };
  if ('secret' in kept) kept['secret'] = '(given)';
  const added = kept['addSecret'];
  if (typeof added === 'object' && added !== null && 'secret' in added) kept['addSecret'] = { ...added, secret: '(given)' };
  return kept;
}

function decodedSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}
