import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId } from '../protocol/frames.js';
import type { HttpRawAnswer, HttpRequestData } from './http-router.js';
import { RELAYED_BY_HEADER, type SiblingAccess, type SiblingServer } from './sibling-relay.js';

/**
 * HTTP calls about one merchant, in a cell of several processes, go to the process that owns it
 * (docs/operations.md, "A cell of several processes"): the calls on a conversation (messages,
 * reads, attachments), logins and guest tokens (their body names the merchant), and the admin
 * calls on one merchant's agents and blocks. In a mesh, the mesh's own API goes to the speaker. The changes of tenants and merchants, and erasures,
 * go to the process that applies them (`SiblingAccess.catalogueApplier`: in a standalone cell,
 * the process reached, as every process may change the catalogue under the cell's lock and run
 * an erasure); an erasure's share asked of a process by another (naming its merchants) is served
 * where it arrives. The
 * request is sent on as it came, and the answer comes back as it is, status and body.
 */

/** What of the request a forward needs, read while uWS's request object is valid. */
export interface ForwardContext {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly clientAddress: string;
}

/** Headers passed on to the owner. */
export const FORWARDED_HEADERS = ['authorization', 'content-type', 'origin', 'user-agent', 'x-forwarded-for', RELAYED_BY_HEADER] as const;

const FORWARD_TIMEOUT_MS = 10_000;
const ERASURE = 'DELETE /v1/admin/tenants/:tenant/customers/:customer';
const RETRY_MS = 500;

/** Forwards `request` to the sibling that owns its merchant; undefined when this process serves it. */
export async function forwardToOwner(siblings: SiblingAccess, pattern: string, request: HttpRequestData, context: ForwardContext): Promise<HttpRawAnswer | undefined> {
  const served = serverOf(siblings, pattern, request, context);
  if (served === undefined || served.server.here) return undefined;
  const { server, what } = served;
  if (context.headers[RELAYED_BY_HEADER] !== '') throw new CellError(ErrorCode.OwnerUnavailable, `${what} is changing; retry`, { retryAfterMs: RETRY_MS });
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_HEADERS) if (context.headers[name] !== '') headers[name] = context.headers[name]!;
  headers[RELAYED_BY_HEADER] = siblings.processId;
  headers['x-forwarded-for'] = context.headers['x-forwarded-for'] ? `${context.headers['x-forwarded-for']}, ${context.clientAddress}` : context.clientAddress;
  const hasBody = context.method !== 'GET' && context.method !== 'DELETE';
  let response: Response;
  try {
    response = await fetch(`${server.http}${context.path}${context.query === '' ? '' : `?${context.query}`}`, {
      method: context.method,
      headers,
      ...(hasBody ? { body: new Uint8Array(request.bytes) } : {}),
      signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
    });
  } catch (error) {
    throw new CellError(ErrorCode.OwnerUnavailable, `${what} cannot be reached (${error instanceof Error ? error.message : String(error)}); retry`, { retryAfterMs: RETRY_MS });
  }
  const retryAfter = response.headers.get('retry-after');
  return {
    status: response.status,
    raw: Buffer.from(await response.arrayBuffer()),
    contentType: response.headers.get('content-type') ?? 'application/json',
    ...(retryAfter === null ? {} : { headers: { 'retry-after': retryAfter } }),
  };
}

/** A request for one process's share of an erasure: relayed by another process, naming the merchants of the share. */
export function isShareOfErasure(relayedBy: string, query: URLSearchParams): boolean {
  return relayedBy !== '' && query.has('merchants');
}

/**
 * The changes of the cell's catalogue (cell/tenant-catalogue.ts) and erasures
 * (cell/customer-erasure.ts): run by the process that applies them.
 */
const APPLIER_CHANGES: ReadonlySet<string> = new Set([
  'POST /v1/admin/tenants',
  'PATCH /v1/admin/tenants/:tenant',
  'DELETE /v1/admin/tenants/:tenant',
  'POST /v1/admin/tenants/:tenant/merchants',
  'PATCH /v1/admin/tenants/:tenant/merchants/:merchant',
  'DELETE /v1/admin/tenants/:tenant/merchants/:merchant',
  ERASURE,
]);

/** Who serves the request, and what names it in errors; undefined when nothing names a merchant (served here). */
function serverOf(siblings: SiblingAccess, pattern: string, request: HttpRequestData, context: ForwardContext): { server: SiblingServer; what: string } | undefined {
  const route = `${context.method} ${pattern}`;
  // A share of an erasure another process runs is this process's to erase: it names its merchants
  // (sibling-erasure.ts). A whole erasure another process sent on to the applier names none.
  const share = route === ERASURE && isShareOfErasure(context.headers[RELAYED_BY_HEADER] ?? '', request.query);
  if (APPLIER_CHANGES.has(route) && !share) return { server: siblings.catalogueApplier(), what: "the process that applies the cell's catalogue changes and erasures" };
  // The mesh's own API (a cell in a mesh): the speaker's, wherever the call landed.
  if (SPEAKER_ROUTES.has(pattern)) return { server: siblings.speakerServer(), what: 'the process that speaks for the cell' };
  const target = merchantOf(pattern, request);
  if (target === undefined) return undefined;
  return { server: siblings.serverOf(target.tenant, target.merchant), what: `the process that owns merchant ${target.merchant}` };
}

/**
 * The routes of the mesh's own API, which in a cell of several processes in a mesh only the
 * speaker serves (it holds the mesh): the cluster view and tools, moves, placements, the drain,
 * route requests. The closure counts are each process's own, as its metrics.
 */
const SPEAKER_ROUTES: ReadonlySet<string> = new Set([
  '/v1/admin/cluster',
  '/v1/admin/locate',
  '/v1/admin/merchants/move',
  '/v1/admin/merchants/place',
  '/v1/admin/capacity',
  '/v1/admin/mesh/block',
  '/v1/admin/mesh/unblock',
  '/v1/admin/drain',
  '/v1/route',
  '/v1/connect',
]);

/** The admin routes about one merchant (its agents, its blocks), run by its owner, whose desk holds them. */
const MERCHANT_ADMIN_PREFIX = '/v1/admin/tenants/:tenant/merchants/:merchant/';

/**
 * The merchant a request is about: a conversation's (its tenant from the token's claims, read
 * without checking the signature: the owner checks the token, and a forged claim only sends the
 * request to a process that refuses it), or the one a login's or a guest token's body names.
 */
function merchantOf(pattern: string, request: HttpRequestData): { tenant: string; merchant: string } | undefined {
  if (pattern.startsWith('/v1/conversations/:conv/')) {
    let conv: string;
    try {
      conv = decodeURIComponent(request.parameters[0] ?? '');
    } catch {
      return undefined;
    }
    const merchant = parseConversationId(conv)?.merchant;
    const tenant = claimedTenantOf(request.token);
    return merchant === undefined || tenant === undefined ? undefined : { tenant, merchant };
  }
  if (pattern.startsWith(MERCHANT_ADMIN_PREFIX)) {
    try {
      const [tenant, merchant] = request.parameters.map((segment) => decodeURIComponent(segment));
      return tenant === undefined || merchant === undefined ? undefined : { tenant, merchant };
    } catch {
      return undefined;
    }
  }
  if (pattern === '/v1/login' || pattern === '/v1/guest') {
    try {
      const body = JSON.parse(request.body) as { tenant?: unknown; merchant?: unknown };
      return typeof body.tenant === 'string' && typeof body.merchant === 'string' ? { tenant: body.tenant, merchant: body.merchant } : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function claimedTenantOf(token: string): string | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { tenant?: unknown };
    return typeof claims.tenant === 'string' ? claims.tenant : undefined;
  } catch {
    return undefined;
  }
}
