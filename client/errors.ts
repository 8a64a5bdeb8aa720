import { ErrorCode } from '../cell/protocol/errors.js';
import type { MerchantHome } from '../cell/protocol/frames.js';

/**
 * Codes of conditions the client detects itself. The server's codes (`ErrorCode` in
 * cell/protocol/errors.ts) pass through unchanged; both kinds are stable and meant for matching.
 */
export const ClientErrorCode = {
  /** A request got no reply within `requestTimeoutMs`. */
  RequestTimeout: 'REQUEST_TIMEOUT',
  /** No session (welcome) within `connectTimeoutMs` of starting an attempt. */
  ConnectTimeout: 'CONNECT_TIMEOUT',
  /** An attempt to connect failed below the protocol (refused, reset, DNS...). */
  ConnectionFailed: 'CONNECTION_FAILED',
  /** An open connection closed; the client reconnects unless told otherwise. */
  ConnectionLost: 'CONNECTION_LOST',
  /** The server answered no frame, not even a heartbeat pong, within the timeout. */
  HeartbeatTimeout: 'HEARTBEAT_TIMEOUT',
  /** `close()` was called; pending work is rejected with this. */
  ClientClosed: 'CLIENT_CLOSED',
  /** Another connection of the same device took over (close code 4409); the client stopped. */
  Replaced: 'REPLACED',
  /** The caller's AbortSignal fired. */
  Aborted: 'ABORTED',
  /** `maxPendingSends` unconfirmed sends are already queued. */
  OutboxFull: 'OUTBOX_FULL',
  /** `maxPendingRequests` requests are already waiting for replies. */
  RequestQueueFull: 'REQUEST_QUEUE_FULL',
  /** The token provider threw or rejected. */
  TokenProviderFailed: 'TOKEN_PROVIDER_FAILED',
  /** `maxReconnectAttempts` consecutive attempts failed; the client stopped. */
  ReconnectFailed: 'RECONNECT_FAILED',
  /** The server sent something this client cannot parse or did not expect. */
  ProtocolError: 'PROTOCOL_ERROR',
  /** Missing messages of a conversation could not be fetched; the client skipped them. */
  GapUnfilled: 'GAP_UNFILLED',
  /** Route mode: the route request failed or named no usable cell; the client retries with backoff. */
  RouteFailed: 'ROUTE_FAILED',
  /** Route mode: more than `maxRedirects` redirects in a row without a session; the client stopped. */
  TooManyRedirects: 'TOO_MANY_REDIRECTS',
} as const;

export type LocalErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

/**
 * Every code a ClientError may carry. A newer server may send codes this build does not know;
 * they arrive unchanged, hence the open string (which still lets editors complete known codes).
 */
export type ClientErrorCodeValue = LocalErrorCode | ErrorCode | (string & {});

export interface ClientErrorDetails {
  /** How long the server asked to wait (RATE_LIMITED). */
  retryAfterMs?: number;
  /** The HTTP status of a rejected upgrade. */
  httpStatus?: number;
  /** The WebSocket close code that ended a connection. */
  closeCode?: number;
  /** The conversation concerned (GAP_UNFILLED, errors of conversation requests). */
  conv?: string;
  /** The first and last seq of a skipped range (GAP_UNFILLED). */
  fromSeq?: number;
  toSeq?: number;
  /** The merchant's home cell (MERCHANT_ELSEWHERE of a client with a fixed url). */
  home?: MerchantHome;
}

/** An operating error of the client: a stable `code`, a readable message, optional details. */
export class ClientError extends Error {
  readonly code: ClientErrorCodeValue;
  readonly details: ClientErrorDetails;

  constructor(code: ClientErrorCodeValue, message: string, details: ClientErrorDetails = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ClientError';
    this.code = code;
    this.details = details;
  }
}

/**
 * Server errors after which a request or send is worth repeating unchanged, after the wait the
 * server asked for (or a backoff). Every other error is final for that request.
 */
const TRANSIENT_ERROR_CODES: ReadonlySet<string> = new Set([
  ErrorCode.RateLimited,
  ErrorCode.StoreUnavailable,
  ErrorCode.ShuttingDown,
  // A frame answered during a move, just before the cell redirects the connection: it goes
  // again, unchanged, to the new home.
  ErrorCode.MerchantElsewhere,
]);

export function isTransient(error: ClientError): boolean {
  return TRANSIENT_ERROR_CODES.has(error.code);
}

/** A readable message of anything thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
