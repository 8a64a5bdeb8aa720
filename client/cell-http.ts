// POSTs of the token sources to a cell's HTTP API (logins, guest tokens), answered with the cell's
// JSON, or a ClientError that carries the cell's error code and retryAfterMs.
import { ErrorCode } from '../cell/protocol/errors.js';
import type { MerchantHome } from '../cell/protocol/frames.js';
import { ClientError, ClientErrorCode, messageOf, type ClientErrorDetails } from './errors.js';

/**
 * The cell's HTTP base URL from what an app configures: an `http(s)://` URL as it is, or the
 * client's WebSocket URL (`ws(s)://host:port/v1/ws`) turned into its HTTP origin.
 */
export function httpBaseOf(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === 'ws:' || parsed.protocol === 'wss:') return `${parsed.protocol === 'wss:' ? 'https:' : 'http:'}//${parsed.host}`;
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError(`the cell's URL must be http(s) or ws(s), got ${url}`);
  return url.replace(/\/+$/, '');
}

/** Where a token source posts: the merchant's home cell, which a redirect may change. */
export interface CellAddress {
  base: string;
}

/** Redirects (421 MERCHANT_ELSEWHERE) one POST follows before it fails with the last one. */
const MAX_HTTP_REDIRECTS = 3;

/**
 * POSTs `body` as JSON to `path` of the cell; the parsed answer of a 2xx, else a ClientError with
 * the cell's code. A redirect to the merchant's home (it moved) is followed, and `cell` keeps the
 * new home for the next calls.
 */
export async function postToCell(cell: CellAddress, path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
  for (let redirects = 0; ; redirects++) {
    try {
      return await postOnce(cell.base, path, body, signal);
    } catch (error) {
      const home = error instanceof ClientError ? error.details.home : undefined;
      if (home === undefined || redirects >= MAX_HTTP_REDIRECTS) throw error;
      cell.base = httpBaseOf(home.http);
    }
  }
}

async function postOnce(baseUrl: string, path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(`${baseUrl}${path}`, {
      method: 'POST',
      // JSON as text/plain: a page's request to a cell of another origin then needs no CORS
      // preflight, which the cell does not answer (it answers these POSTs to any origin).
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
      body: JSON.stringify(body),
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    if (signal?.aborted === true) throw new ClientError(ClientErrorCode.Aborted, 'the operation was aborted', {}, error);
    throw new ClientError(ClientErrorCode.ConnectionFailed, `POST ${path} failed: ${messageOf(error)}`, {}, error);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ClientError(ClientErrorCode.ProtocolError, `POST ${path} answered ${response.status} with a body that is not JSON`, { httpStatus: response.status });
  }
  if (response.ok) return parsed;
  const error = (parsed as { error?: { code?: unknown; message?: unknown; retryAfterMs?: unknown; home?: { http?: unknown } } } | null)?.error;
  const code = typeof error?.code === 'string' ? error.code : ClientErrorCode.ProtocolError;
  const message = typeof error?.message === 'string' ? error.message : `POST ${path} answered ${response.status}`;
  const details: ClientErrorDetails = { httpStatus: response.status };
  if (typeof error?.retryAfterMs === 'number') details.retryAfterMs = error.retryAfterMs;
  if (code === ErrorCode.MerchantElsewhere && typeof error?.home?.http === 'string') details.home = error.home as MerchantHome;
  throw new ClientError(code, message, details);
}

/** Runs calls one after the other: a refresh token is spent by each call, so two must not race. */
export function oneAtATime<T>(call: (signal: AbortSignal) => Promise<T>): (signal: AbortSignal) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return (signal) => {
    const result = tail.then(() => call(signal));
    tail = result.catch(() => undefined);
    return result;
  };
}
