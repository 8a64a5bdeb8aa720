import { CommanderError } from 'commander';

/** Exit codes of the `cellmesh` command; docs/operations.md ("Exit codes") has the same table. */
export const ExitCode = {
  /** Done; also a cell or demo stopped gracefully by SIGTERM or SIGINT. */
  Ok: 0,
  /** The command ran and failed: refused by a cell, a failed or overlong shutdown, a bug. */
  Failed: 1,
  /** The command line or the configuration is wrong: fix it and run again. */
  Usage: 2,
  /** No cell answered at the address given (refused, timed out, no such host). */
  Unreachable: 3,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** A failure a command reports as one readable line, ending the process with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The exit code of a commander parse error (it has printed its own message already). */
export function exitCodeOfCommander(error: CommanderError): ExitCodeValue {
  return error.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
}

/** `fetch failed (connect ECONNREFUSED 127.0.0.1:1)`: an error's message and its causes', on one line. */
export function messageWithCauses(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  // Causes chain a few levels deep at most; the bound guards against a cycle.
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    parts.push(current instanceof Error ? current.message : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  const [first = 'unknown error', ...causes] = parts.map((part) => part.replace(/\s*\n\s*/g, ' ').trim()).filter((part) => part !== '');
  return causes.length === 0 ? first : `${first} (${causes.join(': ')})`;
}
