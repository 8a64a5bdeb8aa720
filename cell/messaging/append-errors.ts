import { CellError, ErrorCode } from '../protocol/errors.js';

/** A send of a device whose earlier send in the conversation was refused and has not come again (RefusedSenders). */
export function refusedBehind(): CellError {
  return new CellError(ErrorCode.StoreUnavailable, 'an earlier message of this device in this conversation could not be stored: send it again first, then this one');
}

/** A resend of `cmid` whose body is not the one stored (or being stored) under it. */
export function idempotencyConflict(cmid: string): CellError {
  return new CellError(
    ErrorCode.IdempotencyConflict,
    `client message id ${JSON.stringify(cmid)} was already used for a message with another body; a new message needs a new cmid`,
  );
}
