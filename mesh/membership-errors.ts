import { CodedError } from '../platform/coded-error.js';

/**
 * Typed errors of the membership core (directory, failure detector, anti-entropy, CellMesh).
 * Callers and tests match on `code`, never on the message.
 */
export type MembershipErrorCode =
  /** An operation that needs a started mesh was called before `start()` or after `stop()`. */
  | 'NOT_STARTED'
  /** `start()` was called twice; a CellMesh starts once (build a new one to restart). */
  | 'ALREADY_STARTED'
  /** The mesh stopped (or left) while the operation was under way. */
  | 'STOPPED'
  /** An own record (or a patch of it) does not satisfy the CellRecord schema. */
  | 'INVALID_RECORD'
  /** The RecordSigner's key does not verify as the transport's peer id: wrong key configured. */
  | 'SIGNER_MISMATCH'
  /** The persisted incarnation in the Store is not a non-negative integer. */
  | 'STORE_CORRUPT'
  /** A request or message on the wire failed validation; answered, never a crash. */
  | 'BAD_MESSAGE'
  /** No bootstrap address answered within the configured attempts. */
  | 'BOOTSTRAP_FAILED'
  /** The caller's AbortSignal fired. */
  | 'ABORTED';

const DEFAULT_MESSAGES: Record<MembershipErrorCode, string> = {
  NOT_STARTED: 'the cell mesh is not started',
  ALREADY_STARTED: 'the cell mesh was already started',
  STOPPED: 'the cell mesh stopped',
  INVALID_RECORD: 'the cell record is invalid',
  SIGNER_MISMATCH: "the record signer's key does not belong to the transport's peer id",
  STORE_CORRUPT: 'the persisted mesh state is corrupt',
  BAD_MESSAGE: 'malformed mesh message',
  BOOTSTRAP_FAILED: 'no bootstrap address could be reached',
  ABORTED: 'the operation was aborted',
};

/** A membership failure with a stable code and a readable message. */
export class MembershipError extends CodedError<MembershipErrorCode> {
  constructor(code: MembershipErrorCode, message: string = DEFAULT_MESSAGES[code], options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
