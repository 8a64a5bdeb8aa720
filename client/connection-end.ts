// Reads how a connection to the cell ended (close code, refused upgrade, the client's own
// verdict) and decides what follows: retry after a backoff, retry with a fresh token, or stop.
import { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
import { ClientError, ClientErrorCode, type ClientErrorCodeValue, type ClientErrorDetails } from './errors.js';
import type { TransportErrorInfo } from './transport.js';

/** Upgrade rejections that a fresh token may cure. */
const AUTH_REJECTIONS: ReadonlySet<string> = new Set([ErrorCode.TokenExpired, ErrorCode.TokenInvalid, ErrorCode.Unauthenticated]);
/**
 * Upgrade rejections that stay however often the client retries: the origin, the protocol
 * version or the merchant's home cell would have to change first.
 */
const FINAL_REJECTIONS: ReadonlySet<string> = new Set([
  ErrorCode.OriginForbidden,
  ErrorCode.UnsupportedVersion,
  ErrorCode.MerchantNotHosted,
  ErrorCode.AgentUnknown,
]);
/** Upgrade rejections that may clear, but not within seconds (another device has to leave). */
const POLICY_REJECTIONS: ReadonlySet<string> = new Set([ErrorCode.DeviceLimit, ErrorCode.RateLimited]);

export interface ConnectionEnd {
  closeCode?: number | undefined;
  closeReason?: string | undefined;
  /** Set when the client itself gave the connection up. */
  error?: ClientError | undefined;
}

/**
 * `retry` after the backoff (at least the policy delay with `policy`); `auth`: the token was
 * refused or expired, so retry with a fresh one if the token comes from a provider and the
 * refusals (those that `count`) stay under `maxAuthFailures`; `fatal` and `replaced` stop;
 * `redirect` goes to the merchant's home cell.
 */
export type EndOutcome =
  | { kind: 'retry'; error: ClientError; policy: boolean }
  | { kind: 'auth'; error: ClientError; counts: boolean }
  | { kind: 'fatal'; error: ClientError }
  | { kind: 'replaced'; error: ClientError }
  /** The cell sent the device to the merchant's home (4307): follow it at once (route mode) or stop. */
  | { kind: 'redirect'; error: ClientError };

/**
 * Decides, from how a connection ended, whether and how to try again. `transportError` is the
 * last error the transport reported for it; `wasOpen` whether the cell had welcomed the device.
 */
export function classifyEnd(end: ConnectionEnd, transportError: TransportErrorInfo | undefined, wasOpen: boolean): EndOutcome {
  const code = end.closeCode;
  const closeDetails: ClientErrorDetails = code === undefined ? {} : { closeCode: code };
  const reason = end.closeReason ? `: ${end.closeReason}` : '';
  if (code === CloseCode.Replaced) {
    return {
      kind: 'replaced',
      error: new ClientError(ClientErrorCode.Replaced, `another connection of this device took over${reason}`, closeDetails),
    };
  }
  // In band (an error frame naming the home, then 4307), or an upgrade refused over HTTP (no home named).
  if (code === CloseCode.MerchantElsewhere || (!wasOpen && transportError?.code === ErrorCode.MerchantElsewhere)) {
    return { kind: 'redirect', error: new ClientError(ErrorCode.MerchantElsewhere, `the merchant lives in another cell${reason}`, closeDetails) };
  }
  if (code === CloseCode.TokenExpired) {
    const refusedCode = wasOpen ? undefined : transportError?.code;
    const error =
      refusedCode === undefined
        ? new ClientError(ErrorCode.TokenExpired, `the token expired during the session${reason}`, closeDetails)
        : new ClientError(refusedCode, transportError?.message ?? refusedCode, closeDetails);
    // A token that merely expired during a session does not count as a refusal.
    return { kind: 'auth', error, counts: refusedCode !== undefined };
  }
  if (code === CloseCode.Forbidden && wasOpen) {
    // During a session the cell forbids only an agent its merchant no longer has (removed).
    return { kind: 'fatal', error: new ClientError(ErrorCode.AgentUnknown, `the cell closed this agent's session${reason}`, closeDetails) };
  }
  if (code === CloseCode.PolicyViolation) {
    const error = new ClientError(ClientErrorCode.ConnectionLost, `closed for a policy violation${reason}`, closeDetails);
    return { kind: 'retry', error, policy: true };
  }
  const status = transportError?.httpStatus;
  if (!wasOpen && transportError !== undefined && (status !== undefined || transportError.code !== undefined)) {
    const rejectionCode = transportError.code ?? (status === undefined ? ClientErrorCode.ConnectionFailed : codeOfStatus(status));
    const error = new ClientError(rejectionCode, transportError.message, status === undefined ? {} : { httpStatus: status });
    if (FINAL_REJECTIONS.has(rejectionCode) || status === 403 || status === 426) return { kind: 'fatal', error };
    if (AUTH_REJECTIONS.has(rejectionCode) || status === 401) return { kind: 'auth', error, counts: true };
    if (POLICY_REJECTIONS.has(rejectionCode) || status === 409 || status === 429) return { kind: 'retry', error, policy: true };
    return { kind: 'retry', error, policy: false };
  }
  if (end.error !== undefined) return { kind: 'retry', error: end.error, policy: false };
  const error = wasOpen
    ? new ClientError(ClientErrorCode.ConnectionLost, `the connection closed (${code ?? 'no code'})${reason}`, closeDetails)
    : new ClientError(
        ClientErrorCode.ConnectionFailed,
        transportError?.message ?? `the connection closed (${code ?? 'no code'}) before the session began${reason}`,
        closeDetails,
      );
  return { kind: 'retry', error, policy: false };
}

/** The protocol's code for a rejected upgrade whose body named none. */
export function codeOfStatus(status: number): ClientErrorCodeValue {
  switch (status) {
    case 401:
      return ErrorCode.Unauthenticated;
    case 403:
      return ErrorCode.OriginForbidden;
    case 409:
      return ErrorCode.DeviceLimit;
    case 426:
      return ErrorCode.UnsupportedVersion;
    case 429:
      return ErrorCode.RateLimited;
    default:
      return ClientErrorCode.ConnectionFailed;
  }
}
