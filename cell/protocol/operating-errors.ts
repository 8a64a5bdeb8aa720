import { StoreError } from '../../platform/store/store.js';
import { CellError, ErrorCode } from './errors.js';

/**
 * The CellError a client is answered for `error`: a CellError as it is, STORE_UNAVAILABLE for a
 * failure of the store (whatever path met it: a send, a read, history, inbox, an ack), and
 * undefined for anything else, which is a bug, answered INTERNAL and logged. The store's own
 * message (it may name the data directory) stays in the log, never in the answer.
 *
 * Apart from errors.ts, which the client SDK bundles, so that it does not carry the store's types.
 */
export function operatingErrorOf(error: unknown): CellError | undefined {
  if (error instanceof CellError) return error;
  if (error instanceof StoreError) return new CellError(ErrorCode.StoreUnavailable, 'the store is unavailable; retry');
  return undefined;
}

/** RATE_LIMITED with the wait it asks for. */
export function rateLimited(retryAfterMs: number): CellError {
  return new CellError(ErrorCode.RateLimited, `slow down: retry in ${retryAfterMs} ms`, { retryAfterMs });
}

/** SHUTTING_DOWN, as a draining cell answers writes. */
export function shuttingDown(): CellError {
  return new CellError(ErrorCode.ShuttingDown, 'the cell is shutting down; resend after reconnecting');
}
