import { z } from 'zod';
import type { CustomerData } from '../customer-data.js';
import { EXPORT_AFTER_PATTERN } from '../customer-data.js';
import type { CustomerErasure } from '../customer-erasure.js';
import { MAX_BLOCKS_PAGE, type CustomerBlocks } from '../desk/customer-blocks.js';
import type { AuditLog } from '../audit-log.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { operatingErrorOf } from '../protocol/operating-errors.js';
import { IDENTIFIER_PATTERN, MAX_NOTE_CHARS, conversationIdOf } from '../protocol/frames.js';
import type { ServedTenant } from './admin-people-routes.js';
import { parseJsonBody, parseWith, requireAdmin, type HttpMethod, type HttpRequestData } from './http-router.js';
import { isShareOfErasure } from './sibling-forwarding.js';
import { RELAYED_BY_HEADER } from './sibling-relay.js';
import type { RouteModule } from './uws-server.js';

/**
 * The admin API of one customer's data (docs/protocol.md, "HTTP API"; docs/desk.md, "Blocks" and
 * "Retention, export and erasure"): a merchant's blocks of customers, the export of everything
 * this cell holds of a customer, and its erasure across the cluster. Every call needs the admin
 * token; blocks, unblocks and erasures are recorded in the audit log with `admin` as the actor.
 * In a cell of several processes, an erasure with the relay marker is another process's request
 * for this one's share of it (sibling-erasure.ts): erased, never recorded here.
 */
export interface AdminCustomerComponents {
  /** The tenants served and merchants hosted now: CellCore.servedTenants. */
  servedTenants: () => ServedTenant[];
  blocks: CustomerBlocks;
  /** Closes the blocked customer's open consultation (DeskService.closeIfOpen). */
  closeConsultation: (tenant: string, conv: string) => void;
  data: CustomerData;
  erasure: CustomerErasure;
  /** Where a failed block, unblock or erasure is recorded (a successful one records itself). */
  audit: AuditLog;
  adminTokens: readonly string[];
}

const BLOCKS = '/v1/admin/tenants/:tenant/merchants/:merchant/blocks';
const BLOCK = `${BLOCKS}/:customer`;
const CUSTOMER = '/v1/admin/tenants/:tenant/customers/:customer';

const identifier = (name: string) => z.string().regex(IDENTIFIER_PATTERN, `${name} must be 1-64 characters of [A-Za-z0-9_.-]`);
const BlockBody = z.strictObject({ reason: z.string().max(MAX_NOTE_CHARS, `must be at most ${MAX_NOTE_CHARS} characters`).optional() });
const BlocksQuery = z.strictObject({
  after: identifier('after').optional(),
  limit: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(MAX_BLOCKS_PAGE, `must be at most ${MAX_BLOCKS_PAGE}`).optional(),
});
const ExportQuery = z.strictObject({ after: z.string().regex(EXPORT_AFTER_PATTERN, 'must be the `next` of a previous page').optional() });
/** A share of an erasure: the merchants whose conversations are this process's to erase (none: only its devices). */
const ShareQuery = z.strictObject({
  merchants: z
    .string()
    .transform((list) => (list === '' ? [] : list.split(',')))
    .pipe(z.array(identifier('merchants')).max(10_000, 'names at most 10000 merchants')),
});

export function adminCustomerRoutes(components: AdminCustomerComponents): RouteModule {
  const { blocks, data, erasure } = components;
  return (router) => {
    const handle = (method: HttpMethod, pattern: string, handler: (request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void =>
      router.handle(
        method,
        pattern,
        async (request) => {
          requireAdmin(request.token, components.adminTokens);
          return handler(request);
        },
        { headers: [RELAYED_BY_HEADER] },
      );
    /** A change: its success is recorded where it is made; a failure (a bad body, an unknown merchant) here. */
    const change = (method: HttpMethod, pattern: string, action: string, handler: (request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void =>
      handle(method, pattern, async (request) => {
        try {
          return await handler(request);
        } catch (error) {
          // Another process's request for a share: that process records the erasure's outcome.
          if (isShareOfErasure(request.headers[RELAYED_BY_HEADER] ?? '', request.query)) throw error;
          const [tenant, second, third] = request.parameters.map(decodedSegment);
          const place = pattern.startsWith(BLOCKS) ? { merchant: second, target: third } : { target: second };
          const known = operatingErrorOf(error);
          const failure = known === undefined ? { code: ErrorCode.Internal, message: 'internal error' } : { code: known.code, message: known.message };
          await components.audit.record({ actor: 'admin', action, tenant, ...place, error: failure }).catch(() => undefined);
          throw error;
        }
      });

    handle('get', BLOCKS, async (request) => {
      const { tenant, merchant } = hostedPlace(components, request.parameters);
      const { after, limit } = parseWith(BlocksQuery, queryObject(request));
      return { status: 200, body: { tenant, merchant, ...(await blocks.list(tenant, merchant, after, limit ?? MAX_BLOCKS_PAGE)) } };
    });
    handle('get', BLOCK, async (request) => {
      const { tenant, merchant, customer } = hostedPlace(components, request.parameters);
      const record = await blocks.get(tenant, merchant, customer!);
      if (record === undefined) throw notBlocked(merchant, customer!);
      return { status: 200, body: record };
    });
    change('put', BLOCK, 'customer.block', async (request) => {
      const { tenant, merchant, customer } = hostedPlace(components, request.parameters);
      // An empty body blocks without a reason.
      const { reason } = parseWith(BlockBody, request.body.trim() === '' ? {} : parseJsonBody(request.body));
      const record = await blocks.block(tenant, merchant, customer!, 'admin', reason);
      components.closeConsultation(tenant, conversationIdOf(merchant, customer!));
      return { status: 200, body: record };
    });
    change('del', BLOCK, 'customer.unblock', async (request) => {
      const { tenant, merchant, customer } = hostedPlace(components, request.parameters);
      const record = await blocks.unblock(tenant, merchant, customer!, 'admin');
      if (record === undefined) throw notBlocked(merchant, customer!);
      return { status: 200, body: { unblocked: record } };
    });
    handle('get', `${CUSTOMER}/export`, async (request) => {
      const { tenant, customer } = servedCustomer(components, request.parameters);
      const { after } = parseWith(ExportQuery, queryObject(request));
      return { status: 200, body: await data.exportPage(tenant, customer, after) };
    });
    change('del', CUSTOMER, 'customer.erase', async (request) => {
      const { tenant, customer } = servedCustomer(components, request.parameters);
      if (isShareOfErasure(request.headers[RELAYED_BY_HEADER] ?? '', request.query)) {
        const { merchants } = parseWith(ShareQuery, queryObject(request));
        return { status: 200, body: await erasure.eraseShare(tenant, customer, merchants) };
      }
      return { status: 200, body: await erasure.erase(tenant, customer, request.token) };
    });
  };
}

function notBlocked(merchant: string, customer: string): CellError {
  return new CellError(ErrorCode.NotFound, `merchant ${merchant} has not blocked customer ${customer}`);
}

/** The query parameters as an object (the strict schemas refuse unknown ones). */
function queryObject(request: HttpRequestData): Record<string, string> {
  return Object.fromEntries(request.query.entries());
}

function checkedSegments(parameters: readonly string[], names: readonly string[]): string[] {
  return parameters.map((raw, index) => {
    const value = decodedSegment(raw);
    if (!IDENTIFIER_PATTERN.test(value)) throw new CellError(ErrorCode.BadFrame, `${names[index]}: '${value.slice(0, 100)}' must be 1-64 characters of [A-Za-z0-9_.-]`);
    return value;
  });
}

function servedTenantOf(components: AdminCustomerComponents, tenant: string): ServedTenant {
  const served = components.servedTenants().find((candidate) => candidate.id === tenant);
  if (served === undefined) throw new CellError(ErrorCode.TenantUnknown, `this cell serves no tenant ${tenant}`);
  return served;
}

/** The tenant, merchant (and customer) of a blocks path: a tenant this cell serves, a merchant it hosts (its blocks live here). */
function hostedPlace(components: AdminCustomerComponents, parameters: readonly string[]): { tenant: string; merchant: string; customer: string | undefined } {
  const [tenant, merchant, customer] = checkedSegments(parameters, ['tenant', 'merchant', 'customer']);
  if (!servedTenantOf(components, tenant!).merchants.includes(merchant!)) {
    throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by this cell`);
  }
  return { tenant: tenant!, merchant: merchant!, customer };
}

function servedCustomer(components: AdminCustomerComponents, parameters: readonly string[]): { tenant: string; customer: string } {
  const [tenant, customer] = checkedSegments(parameters, ['tenant', 'customer']);
  servedTenantOf(components, tenant!);
  return { tenant: tenant!, customer: customer! };
}

function decodedSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}
