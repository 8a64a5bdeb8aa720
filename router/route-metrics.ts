import type { CounterChild, Metrics, Registered } from '../platform/metrics.js';

/** The endpoints that answer route requests. */
export type RouteEndpoint = 'route' | 'connect';

/**
 * How a route request ended: `routed` (answered with the home, or redirected there), `fallback`
 * (the home is down: answered with its fallback cell, leave-a-message mode), `unknown` (unknown
 * tenant or merchant, or no live cell to fall back on, one answer for all), `rate_limited`,
 * `invalid` (a malformed query) or `mesh_disabled` (a standalone cell).
 */
export type RouteOutcome = 'routed' | 'fallback' | 'unknown' | 'rate_limited' | 'invalid' | 'mesh_disabled';

const ENDPOINTS: readonly RouteEndpoint[] = ['route', 'connect'];
const OUTCOMES: readonly RouteOutcome[] = ['routed', 'fallback', 'unknown', 'rate_limited', 'invalid', 'mesh_disabled'];

/** `cellmesh_route_requests_total{endpoint, outcome}`, on cells and routers alike. */
export class RouteMetrics implements Registered {
  private readonly children = new Map<string, CounterChild>();
  private readonly registration: Registered;

  constructor(metrics: Metrics) {
    const requests = metrics.labelledCounter({
      name: 'cellmesh_route_requests_total',
      help: 'Route requests (GET /v1/route) and browser redirects (GET /v1/connect), by outcome.',
      labelNames: ['endpoint', 'outcome'],
    });
    this.registration = requests;
    // Handles obtained once: counting a request is a map lookup, not a label-set resolution.
    for (const endpoint of ENDPOINTS) for (const outcome of OUTCOMES) this.children.set(`${endpoint}/${outcome}`, requests.labels({ endpoint, outcome }));
  }

  count(endpoint: RouteEndpoint, outcome: RouteOutcome): void {
    this.children.get(`${endpoint}/${outcome}`)?.inc();
  }

  unregister(): void {
    this.registration.unregister();
  }
}
