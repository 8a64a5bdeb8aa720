// Where each connection attempt goes: a fixed cell (the `url` option), or, in route mode, the
// home cell of one merchant, asked of any cell or router before every attempt and followed
// through the cells' MERCHANT_ELSEWHERE redirects (docs/routing.md, "SDK").
import { ErrorCode, type CloseCode } from '../cell/protocol/errors.js';
import type { MerchantHome } from '../cell/protocol/frames.js';
import type { FetchLike } from './attachment-upload.js';
import { httpBaseOf } from './cell-http.js';
import { ClientError, ClientErrorCode, messageOf } from './errors.js';

/** Where the cell serves WebSocket clients, used when a URL names only the host. */
export const DEFAULT_WEBSOCKET_PATH = '/v1/ws';

/** Route mode: the merchant this client talks to, and where to ask for its home. */
export interface RouteOptions {
  /**
   * The HTTP base (or WebSocket URL) of any cell of the cluster or of a router: the client asks
   * its `GET /v1/route?tenant=&merchant=` before every connection attempt.
   */
  url: string;
  tenant: string;
  merchant: string;
}

/** A merchant's home cell that is down, as a route answer in leave-a-message mode names it (docs/routing.md). */
export interface DownHome {
  readonly cellId: string;
  /** The epoch of its claim. */
  readonly epoch: number;
  /** `dead`, or `left` (stopped still claiming the merchant). */
  readonly liveness: string;
}

export interface EndpointSource {
  /** The WebSocket endpoint (without token) of the latest attempt; the HTTP API is on its host. */
  readonly current: URL;
  /** Route mode: the merchant's home that is down when `current` is its fallback cell (leave-a-message mode); undefined otherwise. */
  readonly homeDown: DownHome | undefined;
  /** The endpoint of the next attempt: a redirect's target, the route's answer, or the fixed URL. */
  next(signal: AbortSignal): URL | Promise<URL>;
  /**
   * The cell closed the connection with a redirect (4307) to `home` (undefined when its frame
   * did not name one): the error to stop with, or undefined when the next attempt follows it.
   */
  redirected(home: MerchantHome | undefined, closeCode: CloseCode): ClientError | undefined;
  /** A session opened: redirects in a row count from zero again. */
  opened(): void;
  /**
   * Whether each attempt asks the route again: then a cell that says it does not host the
   * merchant (a move or a restart under way, an answer from a stale directory) is a reason to
   * route again after the backoff, not to stop.
   */
  readonly routes: boolean;
}

/** The cell's WebSocket URL of `url`: checked, with the default path, without a token. */
export function endpointOf(url: string): URL {
  const endpoint = new URL(url);
  if (endpoint.protocol !== 'ws:' && endpoint.protocol !== 'wss:') {
    throw new TypeError(`url must start with ws: or wss:, got ${endpoint.protocol}`);
  }
  if (endpoint.pathname === '/' || endpoint.pathname === '') endpoint.pathname = DEFAULT_WEBSOCKET_PATH;
  endpoint.searchParams.delete('token');
  return endpoint;
}

/** One cell, always: a redirect is not followed but ends the client with MERCHANT_ELSEWHERE and its `home`. */
export class FixedEndpoint implements EndpointSource {
  readonly routes = false;
  readonly homeDown = undefined;

  constructor(readonly current: URL) {}

  next(): URL {
    return this.current;
  }

  redirected(home: MerchantHome | undefined, closeCode: CloseCode): ClientError {
    const where = home === undefined ? 'another cell' : `cell ${home.cellId} (${home.ws})`;
    return new ClientError(ErrorCode.MerchantElsewhere, `the merchant lives in ${where}; this client has a fixed url (use the route option to follow it)`, {
      closeCode,
      ...(home === undefined ? {} : { home }),
    });
  }

  opened(): void {
    // Nothing to count: a fixed endpoint follows no redirect.
  }
}

/**
 * The home cell of one merchant. Each attempt asks the route URL afresh (so a reconnect after
 * a move or a drop finds the new home without the app doing anything), unless the last
 * connection ended with a redirect, whose target it takes. More than `maxRedirects` redirects
 * without a session in between end the client with TOO_MANY_REDIRECTS (two cells that each
 * believe the other is home, while the directory converges, must not make it bounce forever).
 */
export class RoutedEndpoint implements EndpointSource {
  readonly routes = true;
  current: URL;
  homeDown: DownHome | undefined;
  private readonly routeUrl: string;
  private redirectTarget: URL | undefined;
  private redirectsInARow = 0;

  constructor(
    private readonly route: RouteOptions,
    private readonly fetch: FetchLike,
    private readonly maxRedirects: number,
  ) {
    const base = httpBaseOf(route.url);
    this.routeUrl = `${base}/v1/route?tenant=${encodeURIComponent(route.tenant)}&merchant=${encodeURIComponent(route.merchant)}`;
    // Until the first answer, uploads and the like have nowhere better to go than the route URL's host.
    this.current = this.routed(`${base.replace(/^http/, 'ws')}${DEFAULT_WEBSOCKET_PATH}`);
  }

  next(signal: AbortSignal): URL | Promise<URL> {
    const target = this.redirectTarget;
    if (target !== undefined) {
      this.redirectTarget = undefined;
      this.current = target;
      // A redirect names a serving home.
      this.homeDown = undefined;
      return target;
    }
    return this.ask(signal).then((endpoint) => (this.current = endpoint));
  }

  redirected(home: MerchantHome | undefined, closeCode: CloseCode): ClientError | undefined {
    this.redirectsInARow++;
    if (this.redirectsInARow > this.maxRedirects) {
      return new ClientError(ClientErrorCode.TooManyRedirects, `redirected ${this.redirectsInARow} times in a row without a session (last to ${home?.cellId ?? 'an unnamed cell'}); the cluster's directory may not have converged`, { closeCode });
    }
    // Without a named home, the next attempt asks the route URL again.
    this.redirectTarget = home === undefined ? undefined : this.routed(home.ws);
    return undefined;
  }

  opened(): void {
    this.redirectsInARow = 0;
  }

  /** The home's WebSocket endpoint, routed for the merchant (the cell redirects the connection when it moves). */
  private routed(ws: string): URL {
    const endpoint = endpointOf(ws);
    endpoint.searchParams.set('merchant', this.route.merchant);
    return endpoint;
  }

  private async ask(signal: AbortSignal): Promise<URL> {
    let status: number;
    let text: string;
    try {
      const response = await this.fetch(this.routeUrl, { method: 'GET', headers: { accept: 'application/json' }, signal });
      status = response.status;
      text = await response.text();
    } catch (error) {
      throw new ClientError(ClientErrorCode.RouteFailed, `GET ${this.routeUrl} failed: ${messageOf(error)}`, {}, error);
    }
    let answer: { ws?: unknown; mode?: unknown; home?: Partial<DownHome>; error?: { code?: unknown; message?: unknown } } | undefined;
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      throw new ClientError(ClientErrorCode.RouteFailed, `GET ${this.routeUrl} answered ${status} with a body that is not JSON`, { httpStatus: status });
    }
    if (status !== 200 || typeof answer?.ws !== 'string') {
      const code = typeof answer?.error?.code === 'string' ? answer.error.code : ClientErrorCode.RouteFailed;
      const message = typeof answer?.error?.message === 'string' ? answer.error.message : `GET ${this.routeUrl} answered ${status} without a route`;
      throw new ClientError(code, message, { httpStatus: status });
    }
    try {
      const endpoint = this.routed(answer.ws);
      this.homeDown = answer.mode === 'leave-a-message' ? downHomeOf(answer.home) : undefined;
      return endpoint;
    } catch (error) {
      throw new ClientError(ClientErrorCode.RouteFailed, `the route names an unusable WebSocket URL: ${messageOf(error)}`, {}, error);
    }
  }
}

/** The `home` of a leave-a-message route answer, when it is well formed. */
function downHomeOf(home: Partial<DownHome> | undefined): DownHome | undefined {
  if (typeof home?.cellId !== 'string' || typeof home.epoch !== 'number' || typeof home.liveness !== 'string') return undefined;
  return { cellId: home.cellId, epoch: home.epoch, liveness: home.liveness };
}
