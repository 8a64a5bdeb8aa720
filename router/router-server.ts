import uWS from 'uWebSockets.js';
import { HttpRouter, asCellError, respondJson, watchAbort, writeError } from '../cell/access/http-router.js';
import { listenExclusively } from '../cell/access/uws-server.js';
import { CellError, ErrorCode } from '../cell/protocol/errors.js';
import type { DirectoryView } from '../mesh/directory.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics, MetricsExposition, Registered } from '../platform/metrics.js';
import { RouteMetrics } from './route-metrics.js';
import { routeRoutes } from './route-routes.js';
import { webPagesRoutes, type WebPagesInit } from '../cell/access/web-pages.js';
import type { RoutingSettings } from './routing-settings.js';

export interface RouterServerInit {
  readonly host: string;
  readonly port: number;
  /** The router's copy of the gossiped directory; undefined until its mesh starts (route requests then find nothing). */
  readonly directory: () => DirectoryView | undefined;
  /** Up and has heard the cluster: what `/v1/ready` reports. */
  readonly isReady: () => boolean;
  readonly clock: Clock;
  readonly settings: RoutingSettings;
  readonly metrics: Metrics;
  readonly exposition: MetricsExposition;
  readonly logger: Logger;
  /** The web pages it serves under /app/, as every cell does (a merchant's link may point here). */
  readonly webPages?: WebPagesInit | undefined;
}

/** A route request carries no body; anything larger than this is refused unread. */
const MAX_BODY_BYTES = 1024;

/**
 * The HTTP side of `cellmesh router`: route requests and redirects (the same module as a
 * cell's), `/v1/health`, `/v1/ready` and `/v1/metrics`, on uWS. It serves no WebSocket and no
 * admin API: nothing here lists the directory.
 */
export class RouterServer {
  private readonly app = uWS.App();
  private listenSocket: uWS.us_listen_socket | undefined;
  private readonly registrations: Registered[] = [];

  constructor(private readonly init: RouterServerInit) {
    const { metrics, logger, exposition, directory } = init;
    const errors = metrics.labelledCounter({ name: 'cellmesh_errors_total', help: 'Errors answered to clients, by code.', labelNames: ['code'] });
    const routeMetrics = new RouteMetrics(metrics);
    this.registrations.push(
      errors,
      routeMetrics,
      metrics.collectedGauge({ name: 'cellmesh_router_directory_members', help: 'Members of the cluster in the router\'s directory, by role and liveness.', labelNames: ['role', 'liveness'] }, (emit) => {
        const counts = new Map<string, number>();
        for (const entry of directory()?.values() ?? []) {
          const key = `${entry.record.role ?? 'cell'} ${entry.liveness}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        for (const [key, count] of counts) {
          const [role = '', liveness = ''] = key.split(' ');
          emit({ role, liveness }, count);
        }
      }),
    );
    const router = new HttpRouter(this.app, { logger, metrics: { errors }, maxBodyBytes: MAX_BODY_BYTES });
    // Also under the cells' names (`/v1/healthz`, `/v1/readyz`), so one probe config fits cells and routers.
    for (const path of ['/v1/health', '/v1/healthz']) router.on('get', path, (res) => respondJson(res, 200, { status: 'ok' }));
    for (const path of ['/v1/ready', '/v1/readyz']) {
      router.on('get', path, (res) => (init.isReady() ? respondJson(res, 200, { status: 'ready' }) : respondJson(res, 503, { status: 'starting' })));
    }
    router.on('get', '/v1/metrics', (res) => {
      const state = watchAbort(res);
      exposition.render().then(
        (text) => !state.aborted && res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', exposition.contentType).end(text)),
        (error: unknown) => !state.aborted && res.cork(() => writeError(res, asCellError(error, logger))),
      );
    });
    routeRoutes({ directory, standalone: false, clock: init.clock, settings: init.settings, metrics: routeMetrics })(router);
    if (init.webPages !== undefined) webPagesRoutes(init.webPages)(router);
    this.app.any('/*', (res, req) => {
      const method = req.getMethod().toUpperCase();
      const url = req.getUrl();
      const allowed = router.methodsAllowedOn(url);
      if (allowed.length === 0) writeError(res, new CellError(ErrorCode.NotFound, `no route ${method} ${url}`));
      else writeError(res, new CellError(ErrorCode.MethodNotAllowed, `${method} is not allowed on ${url}; it takes ${allowed.join(', ')}`), { allow: allowed.join(', ') });
    });
  }

  /** Listens on the configured address; resolves with the port (the one the OS chose for port 0). */
  async listen(): Promise<number> {
    const { host, port } = this.init;
    const listening = await listenExclusively(this.app, host, port);
    this.listenSocket = listening.socket;
    return listening.port;
  }

  /** Stops accepting connections and unregisters the metrics (a successor may register them again). Idempotent. */
  close(): void {
    if (this.listenSocket !== undefined) {
      uWS.us_listen_socket_close(this.listenSocket);
      this.listenSocket = undefined;
    }
    for (const registration of this.registrations.splice(0)) registration.unregister();
  }
}
