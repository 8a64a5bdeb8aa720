// Route requests over the simulated device network: the SDK's `fetch` port in route mode. A
// request to `http://front.sim` goes to the cluster's front door, a layer-4 load balancer that
// hands it to a running cell; a request to `http://<cell id>.sim` goes to that cell. Either way
// the cell answers with the production route module (router/route-routes.ts) on its own copy
// of the gossiped directory, as `GET /v1/route` does in a cell process.
import type { HttpAnswer, HttpRawAnswer, HttpRequestData, HttpRouter } from '../cell/access/http-router.js';
import { CellError, ErrorCode, httpStatusOf } from '../cell/protocol/errors.js';
import type { FetchLike } from '../client/attachment-upload.js';
import { noopMetrics } from '../platform/metrics.js';
import type { Random } from '../platform/random.js';
import { RouteMetrics } from '../router/route-metrics.js';
import { routeRoutes } from '../router/route-routes.js';
import { DEFAULT_ROUTING_SETTINGS } from '../router/routing-settings.js';
import type { DeviceNetwork } from './device-link.js';
import { pickIndex } from './rng.js';
import type { SimCellIncarnation } from './sim-cell.js';

/** The host of the front door: what every simulated device is given as its route URL. */
export const FRONT_DOOR_URL = 'http://front.sim';
const FRONT_DOOR_HOST = 'front.sim';

type Handler = (request: HttpRequestData) => Promise<HttpAnswer | HttpRawAnswer>;

export interface SimHttpPorts {
  readonly network: Pick<DeviceNetwork, 'clock' | 'latencyMs'>;
  /** The running incarnation of `cellId` while its access server listens (it accepts devices). */
  readonly incarnationOf: (cellId: string) => SimCellIncarnation | undefined;
  /** The cells the front door may hand a request to now (its health checks see exactly these). */
  readonly servingCells: () => readonly string[];
  /** The front door's own draws: which cell takes each request. */
  readonly random: Random;
}

/**
 * HTTP over the simulated network, for route requests: one latency there, one back; a cell that
 * is down (or not listening yet) refuses the connection, as a dead process's port does.
 */
export class SimHttp {
  /** The route module of each incarnation: its own rate limiter, as each process has. */
  private readonly handlers = new WeakMap<SimCellIncarnation, Map<string, Handler>>();
  routeRequests = 0;

  constructor(private readonly ports: SimHttpPorts) {}

  /** The `fetch` a device's SDK is given; `clientAddress` is the device's (the balancer passes it on: layer 4). */
  fetchFor(clientAddress: string): FetchLike {
    return (url, init) => this.request(url, init.method, clientAddress, init.signal);
  }

  private request(url: string, method: string, clientAddress: string, signal: AbortSignal | undefined): Promise<{ status: number; text(): Promise<string> }> {
    const { clock, latencyMs } = this.ports.network;
    const parsed = new URL(url);
    return new Promise((resolve, reject) => {
      const aborted = (): void => reject(new Error('the operation was aborted'));
      signal?.addEventListener('abort', aborted, { once: true });
      clock.setTimer(latencyMs(), () => {
        if (signal?.aborted === true) return;
        const answer = this.arrive(parsed, method, clientAddress);
        clock.setTimer(latencyMs(), () => {
          signal?.removeEventListener('abort', aborted);
          if (signal?.aborted === true) return;
          answer.then(
            (response) => (response === undefined ? reject(new Error(`connect ECONNREFUSED ${parsed.host}`)) : resolve(response)),
            reject,
          );
        });
      });
    });
  }

  /** The answer of the cell the request reached, or undefined when no cell took the connection. */
  private async arrive(url: URL, method: string, clientAddress: string): Promise<{ status: number; text(): Promise<string> } | undefined> {
    let cellId = url.hostname.split('.')[0] ?? '';
    if (url.host === FRONT_DOOR_HOST) {
      const cells = this.ports.servingCells();
      if (cells.length === 0) return undefined;
      cellId = cells[pickIndex(this.ports.random, cells.length)]!;
    }
    const incarnation = this.ports.incarnationOf(cellId);
    if (incarnation === undefined) return undefined;
    const handler = method.toUpperCase() === 'GET' ? this.handlersOf(incarnation).get(url.pathname) : undefined;
    this.routeRequests++;
    const request: HttpRequestData = { parameters: [], query: url.searchParams, body: '', bytes: Buffer.alloc(0), headers: {}, token: '', clientAddress };
    let status: number;
    let body: unknown;
    try {
      if (handler === undefined) throw new CellError(ErrorCode.NotFound, `no route for ${method} ${url.pathname}`);
      const answer = await handler(request);
      status = answer.status;
      body = 'raw' in answer ? answer.raw.toString('utf8') : answer.body;
    } catch (error) {
      const cellError = error instanceof CellError ? error : new CellError(ErrorCode.Internal, 'internal error');
      status = httpStatusOf[cellError.code];
      body = { error: { code: cellError.code, message: cellError.message, ...cellError.details } };
    }
    const text = JSON.stringify(body);
    return { status, text: () => Promise.resolve(text) };
  }

  /** The GET handlers the production route module registers on this incarnation, made on first use. */
  private handlersOf(incarnation: SimCellIncarnation): Map<string, Handler> {
    let handlers = this.handlers.get(incarnation);
    if (handlers !== undefined) return handlers;
    handlers = new Map();
    const registered = handlers;
    const module = routeRoutes({
      directory: () => incarnation.mesh?.directory,
      standalone: false,
      clock: incarnation.clock,
      settings: DEFAULT_ROUTING_SETTINGS,
      metrics: new RouteMetrics(noopMetrics),
    });
    // Route modules only register handlers (`handle`); the simulator serves them without uWS.
    const recorder = {
      handle: (method: string, pattern: string, handler: Handler) => {
        if (method === 'get') registered.set(pattern, handler);
      },
    };
    module(recorder as unknown as HttpRouter);
    this.handlers.set(incarnation, handlers);
    return handlers;
  }
}
