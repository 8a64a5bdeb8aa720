import type { z } from 'zod';
import type { HttpRequestData, HttpRouter } from '../cell/access/http-router.js';
import { parseWith } from '../cell/access/http-router.js';
import { KeyedRateLimiter } from '../cell/access/keyed-rate-limiter.js';
import type { RouteModule } from '../cell/access/uws-server.js';
import { HttpRouteQuery } from '../cell/protocol/http.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';
import type { DirectoryView } from '../mesh/directory.js';
import type { Clock } from '../platform/clock.js';
import { ClientAddresses } from './client-address.js';
import { routeRequest, type Route } from './route.js';
import type { RouteEndpoint, RouteMetrics } from './route-metrics.js';
import type { RoutingSettings } from './routing-settings.js';

export interface RouteRoutesComponents {
  /**
   * The gossiped directory to answer from; undefined while the mesh has not started (a cell in
   * a cluster answers as for an unknown merchant then).
   */
  readonly directory: () => DirectoryView | undefined;
  /** A cell without a mesh section: it answers MESH_DISABLED (connect to it directly). */
  readonly standalone: boolean;
  readonly clock: Clock;
  readonly settings: RoutingSettings;
  readonly metrics: RouteMetrics;
}

/**
 * The one answer for "no route": an unknown tenant, an unknown merchant (and a merchant whose
 * home is down when no live cell can take its customers) get these very bytes (status, code and
 * message name neither), so the front door cannot be used to list tenants or merchants.
 */
export const NO_ROUTE_MESSAGE = 'no serving cell for this tenant and merchant';

/** Answers may change with every gossip round: no cache may keep them. */
const ANSWER_HEADERS = { 'cache-control': 'no-store' };

/**
 * `GET /v1/route` and `GET /v1/connect` (docs/routing.md, "Route requests"), the same on cells
 * and routers: rate-limited per client address first (so malformed and unknown requests spend
 * the budget too), then validated, then answered from the directory by routeRequest.
 */
export function routeRoutes(components: RouteRoutesComponents): RouteModule {
  const { clock, settings, metrics } = components;
  const limiter = new KeyedRateLimiter({ ratePerSecond: settings.requestsPerSecondPerAddress, burst: settings.burstPerAddress, maxKeys: settings.maxTrackedClients });
  const addresses = new ClientAddresses(settings.trustedProxies);
  const headers = settings.trustedProxies.length > 0 ? ['x-forwarded-for'] : [];

  /** The route of a request, or the typed error that answers it; counts the outcome either way. */
  const routeOf = (endpoint: RouteEndpoint, request: HttpRequestData): Route => {
    const client = addresses.clientOf(request.clientAddress, request.headers['x-forwarded-for'] ?? '');
    const retryAfterMs = limiter.take(client, clock.now());
    if (retryAfterMs > 0) {
      metrics.count(endpoint, 'rate_limited');
      throw new CellError(ErrorCode.RouteRateLimited, `too many route requests; retry in ${retryAfterMs} ms`, { retryAfterMs });
    }
    if (components.standalone) {
      metrics.count(endpoint, 'mesh_disabled');
      throw new CellError(ErrorCode.MeshDisabled, 'this cell runs standalone: connect to it directly');
    }
    let query: z.infer<typeof HttpRouteQuery>;
    try {
      query = parseWith(HttpRouteQuery, {
        tenant: request.query.get('tenant') ?? undefined,
        merchant: request.query.get('merchant') ?? undefined,
        customer: request.query.get('customer') ?? undefined,
        group: request.query.get('group') ?? undefined,
      });
    } catch (error) {
      metrics.count(endpoint, 'invalid');
      throw error;
    }
    const directory = components.directory();
    const route = directory === undefined ? undefined : routeRequest(directory, query);
    if (route === undefined) {
      metrics.count(endpoint, 'unknown');
      throw new CellError(ErrorCode.MerchantUnknown, NO_ROUTE_MESSAGE);
    }
    metrics.count(endpoint, route.mode === undefined ? 'routed' : 'fallback');
    return route;
  };

  return (router: HttpRouter) => {
    const options = { headers, answerHeaders: ANSWER_HEADERS };
    router.handle('get', '/v1/route', async (request) => ({ status: 200, body: routeOf('route', request) }), options);
    router.handle(
      'get',
      '/v1/connect',
      async (request) => {
        const route = routeOf('connect', request);
        const location = connectLocation(route, settings.connectPath, request.query);
        return { status: 302, body: { location }, headers: { location } };
      },
      options,
    );
  };
}

/**
 * Where `/v1/connect` sends a browser: `connectPath` on the home cell's http endpoint, with the
 * request's tenant and merchant (and customer and group, when given) as the query.
 */
export function connectLocation(route: Route, connectPath: string, query: URLSearchParams): string {
  const target = new URLSearchParams({ tenant: route.tenant, merchant: route.merchant });
  for (const name of ['customer', 'group']) {
    const value = query.get(name);
    if (value !== null) target.set(name, value);
  }
  return `${route.http.replace(/\/+$/, '')}${connectPath}?${target.toString()}`;
}
