import { CliError, ExitCode, messageWithCauses, type ExitCodeValue } from './cli-errors.js';
import { errorText, fetchJson } from './move-command.js';

/**
 * One call of a cell's admin API for the operator commands (`agents`, `audit`, `customers`,
 * `blocks`): the admin token from `--admin-token` or CELLMESH_ADMIN_TOKEN, a refusal or an
 * unreachable cell turned into one line and its exit code.
 */

export interface AdminOptions {
  cell: string;
  adminToken?: string;
  json?: boolean;
}

export async function adminCall(options: AdminOptions, method: string, path: string, json?: unknown): Promise<unknown> {
  const fail = (message: string, code: ExitCodeValue = ExitCode.Failed): never => {
    throw new CliError(message, code);
  };
  if (options.adminToken === undefined || options.adminToken === '') fail('pass --admin-token or set CELLMESH_ADMIN_TOKEN', ExitCode.Usage);
  const base = options.cell.replace(/\/$/, '');
  const headers: Record<string, string> = { authorization: `Bearer ${options.adminToken}` };
  if (json !== undefined) headers['content-type'] = 'application/json';
  const answer = await fetchJson(`${base}${path}`, { method, headers, ...(json === undefined ? {} : { body: JSON.stringify(json) }) }).catch((error: unknown) =>
    fail(`cannot reach ${base}: ${messageWithCauses(error)}`, ExitCode.Unreachable),
  );
  if (answer.status >= 300) fail(errorText(answer.body));
  return answer.body;
}

/** Prints an answer of the API as it is (`--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
