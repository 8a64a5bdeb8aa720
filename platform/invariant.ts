import { CodedError } from './coded-error.js';

/**
 * A broken invariant of the core: a bug, never an operating condition. Invariants are checked
 * always (not only in tests), cheaply, and fail loudly so that a violation stops the operation
 * that would have written wrong state instead of letting it spread (in the style of
 * TigerBeetle's assertions).
 */
export class InvariantError extends CodedError<'INVARIANT_BROKEN'> {
  constructor(message: string) {
    super('INVARIANT_BROKEN', `invariant broken: ${message}`);
  }
}

/**
 * Throws an InvariantError when `condition` is false. `describe` is only called then, so a
 * message with figures costs nothing on the hot path.
 */
export function invariant(condition: boolean, describe: () => string): asserts condition {
  if (!condition) throw new InvariantError(describe());
}
