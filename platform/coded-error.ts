/**
 * An error with a stable code that callers and tests match on. Each subsystem declares its own
 * subclass (for `instanceof`) and its code union; the class itself is written once, here.
 */
export class CodedError<Code extends string> extends Error {
  constructor(
    readonly code: Code,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}
