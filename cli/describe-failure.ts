import { ClientError, ClientErrorCode } from '../client/index.js';
import { ConfigError } from '../assembly/config.js';
import { CellStartError } from '../assembly/start-errors.js';
import { CliError, ExitCode, messageWithCauses, type ExitCodeValue } from './cli-errors.js';

/** Client codes that mean the cell could not be reached at all. */
const UNREACHABLE_CLIENT_CODES: ReadonlySet<string> = new Set([ClientErrorCode.ConnectionFailed, ClientErrorCode.ConnectTimeout, ClientErrorCode.ReconnectFailed]);

/**
 * The line and exit code for anything a command threw: typed errors keep their message (and
 * code), anything else is reported by its message and causes; never a stack trace.
 */
export function describeFailure(error: unknown): { message: string; exitCode: ExitCodeValue } {
  if (error instanceof CliError) return { message: error.message, exitCode: error.exitCode };
  // A busy port or a locked store is the operator's to fix, like a config error.
  if (error instanceof ConfigError || error instanceof CellStartError) return { message: error.message, exitCode: ExitCode.Usage };
  if (error instanceof ClientError) {
    return { message: withCode(error.message, error.code), exitCode: UNREACHABLE_CLIENT_CODES.has(error.code) ? ExitCode.Unreachable : ExitCode.Failed };
  }
  const code = (error as { code?: unknown } | undefined)?.code;
  return { message: withCode(messageWithCauses(error), typeof code === 'string' ? code : undefined), exitCode: ExitCode.Failed };
}

function withCode(message: string, code: string | undefined): string {
  return code === undefined || message.includes(code) ? message : `${message} (${code})`;
}
