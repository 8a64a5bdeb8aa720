// Uploading a file to a conversation over the cell's HTTP API (docs/protocol.md, "Attachments"):
// the WebSocket carries frames only; bytes go up by HTTP, then a `send` names them by id.
import type { MessageAttachment } from '../cell/protocol/frames.js';
import { ClientError, ClientErrorCode, messageOf } from './errors.js';

/** The part of the platform's `fetch` an upload and a route request use (Node 20 and browsers have it). */
export type FetchLike = (url: string, init: { method: string; headers: Record<string, string>; body?: Uint8Array | undefined; signal?: AbortSignal | undefined }) => Promise<{
  status: number;
  text(): Promise<string>;
}>;

/** The platform's `fetch` (Node 20, browsers); the bytes go as they are. */
export const platformFetch: FetchLike = (url, init) =>
  globalThis.fetch(url, {
    method: init.method,
    headers: init.headers,
    // Its typings want a view of an ArrayBuffer, not of any ArrayBufferLike; a Uint8Array is one.
    ...(init.body === undefined ? {} : { body: init.body as Uint8Array<ArrayBuffer> }),
    ...(init.signal === undefined ? {} : { signal: init.signal }),
  });

export interface AttachmentUploadPorts {
  /** The cell's WebSocket endpoint: the HTTP API is on the same host and port. */
  endpoint: URL;
  token: (signal: AbortSignal | undefined) => Promise<string>;
  fetch: FetchLike;
}

/**
 * Uploads `bytes` as file `name` to `conv`; resolves with what a `send` names in `attachments`.
 * Rejects with the cell's code (ATTACHMENT_TOO_LARGE, ATTACHMENT_TYPE_REFUSED, RATE_LIMITED...)
 * or CONNECTION_FAILED when the request did not get through.
 */
export async function uploadAttachment(ports: AttachmentUploadPorts, conv: string, bytes: Uint8Array, name: string, signal?: AbortSignal): Promise<MessageAttachment> {
  const url = new URL(`/v1/conversations/${encodeURIComponent(conv)}/attachments`, ports.endpoint);
  url.protocol = ports.endpoint.protocol === 'wss:' ? 'https:' : 'http:';
  url.searchParams.set('name', name);
  // The token in the query and a safelisted content type (the cell sniffs the type anyway): a
  // page's upload to a cell of another origin then needs no CORS preflight.
  url.searchParams.set('token', await ports.token(signal));
  let response: Awaited<ReturnType<FetchLike>>;
  let text: string;
  try {
    response = await ports.fetch(url.toString(), {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: bytes,
      signal,
    });
    text = await response.text();
  } catch (error) {
    if (signal?.aborted === true) throw new ClientError(ClientErrorCode.Aborted, 'the upload was aborted', { conv }, error);
    throw new ClientError(ClientErrorCode.ConnectionFailed, `the upload did not reach the cell: ${messageOf(error)}`, { conv }, error);
  }
  const answer = parseJson(text);
  if (response.status === 201 && isAttachment(answer)) return { id: answer.id, name: answer.name, type: answer.type, bytes: answer.bytes };
  const error = (answer as { error?: { code?: unknown; message?: unknown; retryAfterMs?: unknown } } | undefined)?.error;
  if (typeof error?.code !== 'string') throw new ClientError(ClientErrorCode.ProtocolError, `the cell answered the upload with HTTP ${response.status} and no error code`, { conv, httpStatus: response.status });
  const retryAfterMs = typeof error.retryAfterMs === 'number' ? { retryAfterMs: error.retryAfterMs } : {};
  throw new ClientError(error.code, typeof error.message === 'string' ? error.message : error.code, { conv, httpStatus: response.status, ...retryAfterMs });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isAttachment(value: unknown): value is MessageAttachment {
  if (typeof value !== 'object' || value === null) return false;
  const fields = value as Record<string, unknown>;
  return typeof fields['id'] === 'string' && typeof fields['name'] === 'string' && typeof fields['type'] === 'string' && typeof fields['bytes'] === 'number';
}
