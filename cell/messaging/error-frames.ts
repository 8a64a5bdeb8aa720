import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { CellMetrics } from '../metrics.js';
import { CloseCode, ErrorCode } from '../protocol/errors.js';
import type { ServerFrame } from '../protocol/frames.js';
import { operatingErrorOf } from '../protocol/operating-errors.js';
import type { DeviceConnection } from './device.js';
import { homeOf } from '../routing/merchant-redirects.js';

/** Codes of the cell's own failures: they never count against a client's error allowance. */
const SERVER_SIDE_CODES: ReadonlySet<string> = new Set([ErrorCode.StoreUnavailable, ErrorCode.ShuttingDown, ErrorCode.Internal]);

export interface ErrorFrameHost {
  clock: Clock;
  logger: Logger;
  metrics: CellMetrics;
  send(connection: DeviceConnection, frame: ServerFrame): void;
  /** Forgets a connection the cell closed for its errors. */
  disconnect(connection: DeviceConnection): void;
}

/**
 * Answers a failed frame with an `error` frame of a stable code, and closes (4429) a connection
 * whose own faults used up its error allowance. `conv` names the conversation of a refused entry
 * of a multi-conversation ack.
 */
export function answerError(host: ErrorFrameHost, connection: DeviceConnection, requestId: string | undefined, error: unknown, conv?: string): void {
  if (connection.closed) return;
  const cellError = operatingErrorOf(error);
  if (cellError === undefined) {
    host.logger.error({ err: error, device: connection.identity.device }, 'unexpected error handling a frame');
  } else if (cellError !== error) {
    host.logger.warn({ err: error, device: connection.identity.device }, 'the store failed; the frame was answered STORE_UNAVAILABLE');
  }
  const code = cellError?.code ?? ErrorCode.Internal;
  host.metrics.errors.labels({ code }).inc();
  const frame: ServerFrame = { t: 'error', code, message: cellError?.message ?? 'internal error; the frame was not applied' };
  if (requestId !== undefined) frame.id = requestId;
  if (conv !== undefined) frame.conv = conv;
  const retryAfterMs = cellError?.details?.['retryAfterMs'];
  if (typeof retryAfterMs === 'number') frame.retryAfterMs = retryAfterMs;
  const home = cellError === undefined ? undefined : homeOf(cellError);
  if (home !== undefined) frame.home = home;
  host.send(connection, frame);
  // Only the client's own faults count towards closing it; the cell's (a store failure, a
  // shutdown, a bug) must not cost a well-behaved client its connection.
  if (SERVER_SIDE_CODES.has(code)) return;
  const nowMs = host.clock.now();
  connection.errorAllowance.spend(nowMs);
  if (connection.errorAllowance.waitMs(nowMs) > 0) {
    connection.port.close(CloseCode.PolicyViolation, 'too many bad frames');
    // Forgotten at once: frames still on their way find it closed and cost nothing.
    host.disconnect(connection);
  }
}
