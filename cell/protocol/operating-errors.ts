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
