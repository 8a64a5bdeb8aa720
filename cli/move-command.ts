import { CliError, ExitCode, messageWithCauses, type ExitCodeValue } from './cli-errors.js';

interface MoveCommandOptions {
  cluster: string;
  adminToken?: string;
  tenant: string;
  merchant: string;
  to: string;
}

/**
 * `cellmesh move-merchant`: asks the merchant's home cell (found through any cell of the
 * cluster) to hand the merchant over to cell `--to`, and prints what moved.
 */
export async function runMoveCommand(options: MoveCommandOptions): Promise<void> {
  const fail = (message: string, code: ExitCodeValue = ExitCode.Failed): never => {
    throw new CliError(message, code);
  };
  if (options.adminToken === undefined || options.adminToken === '') fail('pass --admin-token or set CELLMESH_ADMIN_TOKEN', ExitCode.Usage);
  const base = options.cluster.replace(/\/$/, '');
  const query = `tenant=${encodeURIComponent(options.tenant)}&merchant=${encodeURIComponent(options.merchant)}`;
  const route = await fetchJson(`${base}/v1/route?${query}`).catch((error: unknown) => fail(`cannot reach ${base}: ${messageWithCauses(error)}`, ExitCode.Unreachable));
  if (route.status !== 200) fail(`no home cell for ${options.merchant}: ${errorText(route.body)}`);
  const home = route.body as { cellId: string; http: string };
  process.stdout.write(`moving ${options.tenant}/${options.merchant} from ${home.cellId} to ${options.to}...\n`);
  const moved = await fetchJson(`${home.http}/v1/admin/merchants/move`, {
    method: 'POST',
    headers: { authorization: `Bearer ${options.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ tenant: options.tenant, merchant: options.merchant, to: options.to }),
  }).catch((error: unknown) => fail(`cannot reach ${home.http}: ${messageWithCauses(error)}`, ExitCode.Unreachable));
  if (moved.status !== 200) fail(`the move failed: ${errorText(moved.body)}`);
  const result = moved.body as { to: string; epoch: number; conversations: number; keysCopied: number; fencedMs: number };
  process.stdout.write(
    `moved: ${result.conversations} conversations (${result.keysCopied} keys) now live on ${result.to} (epoch ${result.epoch}); ` +
      `writes waited ${result.fencedMs} ms; every cell routes ${options.merchant} to ${result.to}\n`,
  );
}

export async function fetchJson(url: string, init: RequestInit = {}): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(60_000) });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) as unknown };
  } catch {
    return { status: response.status, body: text };
  }
}

export function errorText(body: unknown): string {
  const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  return error === undefined ? JSON.stringify(body) : `${error.code}: ${error.message}`;
}
