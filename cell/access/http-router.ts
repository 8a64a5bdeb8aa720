import { timingSafeEqual } from 'node:crypto';
import type uWS from 'uWebSockets.js';
import type { z } from 'zod';
import type { Logger } from '../../platform/logger.js';
import type { CellMetrics } from '../metrics.js';
import { CellError, ErrorCode, httpStatusOf } from '../protocol/errors.js';
import { operatingErrorOf } from '../protocol/operating-errors.js';
import { homeOf } from '../routing/merchant-redirects.js';
import { FORWARDED_HEADERS, type ForwardContext } from './sibling-forwarding.js';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'del';

/** One HTTP request as a route handler sees it: read in full before the handler runs. */
export interface HttpRequestData {
  /** The `:name` segments of the pattern, in order, as sent (still percent-encoded). */
  parameters: string[];
  query: URLSearchParams;
  /** The body as UTF-8 text ('' for GET). */
  body: string;
  /** The body as bytes (uploads). */
  bytes: Buffer;
  /** Request headers a handler asked for (lower-case names), '' when absent. */
  headers: Record<string, string>;
  /** The bearer token of the `Authorization` header, '' when there is none. */
  token: string;
  /** The peer's IP address as text (rate limits per client address). */
  clientAddress: string;
}

/** A JSON answer; `headers` are added to it. */
export interface HttpAnswer {
  status: number;
  body: unknown;
  headers?: Record<string, string> | undefined;
}

/** A raw answer (a file): bytes with their own content type. */
export interface HttpRawAnswer {
  status: number;
  raw: Buffer;
  contentType: string;
  headers?: Record<string, string> | undefined;
}

export interface RouteOptions {
  /**
   * Largest body accepted (bytes); larger is PAYLOAD_TOO_LARGE. Default: the router's frame limit.
   * A function decides per request from its headers and query (say, the tenant of its token)
   * before any of the body is read; what it throws is the answer.
   */
  maxBodyBytes?: number | ((request: HttpRequestData) => number);
  /** The error of a body over the limit (default: PAYLOAD_TOO_LARGE). */
  bodyTooLarge?: (maxBodyBytes: number) => CellError;
  /** Request headers the handler reads (lower-case). */
  headers?: readonly string[];
  /** Headers of every answer of the route, errors included (CORS headers for pages, say). */
  answerHeaders?: Record<string, string>;
}

/**
 * The HTTP half of the access layer: registers routes on the uWS app, reads bodies (bounded),
 * answers JSON or typed errors, and remembers every route's methods so that a wrong method gets
 * 405 with `Allow`. Route modules (device API, admin API, logins, attachments) register here.
 */
export class HttpRouter {
  /** The methods of every route, by its pattern: what `Allow` lists when another method comes. */
  private readonly routeMethods = new Map<string, string[]>();
  /** A cell of several processes: answers a request another process should serve (sibling-forwarding.ts). */
  private forwarder: ((pattern: string, request: HttpRequestData, context: ForwardContext) => Promise<HttpRawAnswer | undefined>) | undefined;

  constructor(
    private readonly app: uWS.TemplatedApp,
    private readonly options: { logger: Logger; metrics: Pick<CellMetrics, 'errors'>; maxBodyBytes: number },
  ) {}

  /** Registers a bare uWS handler of one method and pattern, and records it for `Allow`. */
  on(method: HttpMethod, pattern: string, handler: (res: uWS.HttpResponse, req: uWS.HttpRequest) => void): void {
    this.recordRoute(method, pattern);
    this.app[method](pattern, handler);
  }

  /** From now on, every route asks `forwarder` first whether another process serves the request. */
  forwardWith(forwarder: (pattern: string, request: HttpRequestData, context: ForwardContext) => Promise<HttpRawAnswer | undefined>): void {
    this.forwarder = forwarder;
  }

  /** Records a route served elsewhere (the WebSocket upgrade) for `Allow`. */
  recordRoute(method: HttpMethod, pattern: string): void {
    const methods = this.routeMethods.get(pattern) ?? [];
    methods.push(method === 'del' ? 'DELETE' : method.toUpperCase());
    this.routeMethods.set(pattern, methods);
  }

  /** Reads the body (bounded), runs `handler`, answers JSON (or raw bytes) or a typed error. */
  handle(method: HttpMethod, pattern: string, handler: (request: HttpRequestData) => Promise<HttpAnswer | HttpRawAnswer>, routeOptions: RouteOptions = {}): void {
    const { logger, metrics } = this.options;
    const bodyLimit = routeOptions.maxBodyBytes ?? this.options.maxBodyBytes;
    const bodyTooLarge =
      routeOptions.bodyTooLarge ?? ((maxBodyBytes: number) => new CellError(ErrorCode.PayloadTooLarge, `request body exceeds ${maxBodyBytes} bytes`));
    const parameterCount = (pattern.match(/:/g) ?? []).length;
    this.on(method, pattern, (res, req) => {
      const headers: Record<string, string> = {};
      for (const name of routeOptions.headers ?? []) headers[name] = req.getHeader(name);
      const request: HttpRequestData = {
        parameters: Array.from({ length: parameterCount }, (_, index) => req.getParameter(index) ?? ''),
        query: new URLSearchParams(req.getQuery() ?? ''),
        body: '',
        bytes: Buffer.alloc(0),
        headers,
        token: bearerToken(req.getHeader('authorization')),
        clientAddress: Buffer.from(res.getRemoteAddressAsText()).toString(),
      };
      const forwarding = this.forwarder === undefined ? undefined : forwardContextOf(method, req, request.clientAddress);
      const state = watchAbort(res);
      const chunks: Buffer[] = [];
      let received = 0;
      const refuse = (error: unknown): void => {
        const cellError = asCellError(error, logger);
        metrics.errors.labels({ code: cellError.code }).inc();
        if (!state.aborted) res.cork(() => writeError(res, cellError, routeOptions.answerHeaders));
      };
      let maxBodyBytes: number;
      try {
        maxBodyBytes = typeof bodyLimit === 'number' ? bodyLimit : bodyLimit(request);
        // A body announced too large is refused before any of it is read.
        const announced = Number(req.getHeader('content-length') || '0');
        if (announced > maxBodyBytes) throw bodyTooLarge(maxBodyBytes);
      } catch (error) {
        refuse(error);
        return;
      }
      const run = async (): Promise<void> => {
        try {
          if (received > maxBodyBytes) throw bodyTooLarge(maxBodyBytes);
          request.bytes = Buffer.concat(chunks);
          request.body = request.bytes.toString('utf8');
          const answer = (forwarding === undefined ? undefined : await this.forwarder?.(pattern, request, forwarding)) ?? (await handler(request));
          if (state.aborted) return;
          const headers = { ...routeOptions.answerHeaders, ...answer.headers };
          res.cork(() => ('raw' in answer ? respondRaw(res, { ...answer, headers }) : respondJson(res, answer.status, answer.body, headers)));
        } catch (error) {
          refuse(error);
        }
      };
      if (method === 'get' || method === 'del') {
        void run();
        return;
      }
      res.onData((chunk, isLast) => {
        received += chunk.byteLength;
        // Copy: uWS reuses the chunk's memory after this callback.
        if (received <= maxBodyBytes) chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
        if (isLast) void run();
      });
    });
  }

  /** The methods of the routes whose pattern matches `url` (a `:name` segment matches any non-empty one). */
  methodsAllowedOn(url: string): string[] {
    const segments = url.split('/');
    const allowed = new Set<string>();
    for (const [pattern, methods] of this.routeMethods) {
      const patternSegments = pattern.split('/');
      const matches =
        patternSegments.length === segments.length &&
        patternSegments.every((segment, index) => (segment.startsWith(':') ? segments[index] !== '' : segment === segments[index]));
      if (matches) for (const method of methods) allowed.add(method);
    }
    return [...allowed].sort();
  }
}

function forwardContextOf(method: HttpMethod, req: uWS.HttpRequest, clientAddress: string): ForwardContext {
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_HEADERS) headers[name] = req.getHeader(name);
  return { method: method === 'del' ? 'DELETE' : method.toUpperCase(), path: req.getUrl(), query: req.getQuery() ?? '', headers, clientAddress };
}

export function watchAbort(res: uWS.HttpResponse): { aborted: boolean } {
  const state = { aborted: false };
  res.onAborted(() => {
    state.aborted = true;
  });
  return state;
}

export function respondJson(res: uWS.HttpResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeStatus(`${status} ${statusText(status)}`).writeHeader('content-type', 'application/json');
  for (const [name, value] of Object.entries(headers)) res.writeHeader(name, value);
  res.end(JSON.stringify(body));
}

function respondRaw(res: uWS.HttpResponse, answer: HttpRawAnswer): void {
  res.writeStatus(`${answer.status} ${statusText(answer.status)}`).writeHeader('content-type', answer.contentType);
  for (const [name, value] of Object.entries(answer.headers ?? {})) res.writeHeader(name, value);
  res.end(answer.raw);
}

export function writeError(res: uWS.HttpResponse, error: CellError, headers: Record<string, string> = {}): void {
  const body: Record<string, unknown> = { error: { code: error.code, message: error.message } };
  const retryAfterMs = error.details?.['retryAfterMs'];
  // A redirect (421 MERCHANT_ELSEWHERE) names the merchant's home: send the request there.
  const home = homeOf(error);
  if (home !== undefined) (body['error'] as Record<string, unknown>)['home'] = home;
  if (typeof retryAfterMs !== 'number') {
    respondJson(res, httpStatusOf[error.code], body, headers);
    return;
  }
  (body['error'] as Record<string, unknown>)['retryAfterMs'] = retryAfterMs;
  // Retry-After counts whole seconds; rounded up, so a client that obeys it is let in.
  respondJson(res, httpStatusOf[error.code], body, { ...headers, 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) });
}

export function asCellError(error: unknown, logger: Logger): CellError {
  const cellError = operatingErrorOf(error);
  if (cellError === undefined) {
    logger.error({ err: error }, 'unexpected error in the access layer');
    return new CellError(ErrorCode.Internal, 'internal error');
  }
  if (cellError !== error) logger.warn({ err: error }, 'the store failed; the request was answered STORE_UNAVAILABLE');
  return cellError;
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    200: 'OK',
    201: 'Created',
    204: 'No Content',
    302: 'Found',
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    405: 'Method Not Allowed',
    409: 'Conflict',
    413: 'Payload Too Large',
    415: 'Unsupported Media Type',
    421: 'Misdirected Request',
    426: 'Upgrade Required',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    501: 'Not Implemented',
    503: 'Service Unavailable',
  };
  return texts[status] ?? 'Unknown';
}

export function bearerToken(header: string): string {
  return header.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : '';
}

export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new CellError(ErrorCode.BadJson, 'the request body is not valid JSON');
  }
}

/** Validates with a zod schema; the first issue becomes a BAD_FRAME naming its path. */
export function parseWith<Schema extends z.ZodType>(schema: Schema, value: unknown): z.output<Schema> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new CellError(ErrorCode.BadFrame, `${issue?.path.join('.') || 'request'}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data;
}

/** Throws ADMIN_FORBIDDEN unless `given` is one of the admin tokens (none configured: the admin API is disabled). */
export function requireAdmin(given: string, adminTokens: readonly string[]): void {
  if (!matchesAny(given, adminTokens)) {
    throw new CellError(ErrorCode.AdminForbidden, adminTokens.length === 0 ? 'the admin API is disabled: set admin.token in the config' : 'missing or wrong admin token');
  }
}

/** Compares with every token, so the time taken does not tell which one (if any) came close. */
function matchesAny(given: string, tokens: readonly string[]): boolean {
  let matched = false;
  for (const token of tokens) matched = constantTimeEquals(given, token) || matched;
  return matched;
}

function constantTimeEquals(given: string, expected: string): boolean {
  const left = Buffer.from(given);
  const right = Buffer.from(expected);
  return left.length === right.length && timingSafeEqual(left, right);
}
