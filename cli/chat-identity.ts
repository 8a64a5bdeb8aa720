import { ClientError, ClientErrorCode, conversationIdOf, guestTokenSource, loginTokenSource, parseConversationId, type RouteOptions, type TokenSource } from '../client/index.js';
import { CliError, ExitCode, messageWithCauses } from './cli-errors.js';
import { guestFileStorage, guestFilePath } from './guest-file.js';

/**
 * Who `cellmesh chat` runs as, and where: a device token given (`--token`), a guest of a
 * merchant (`--guest`, its refresh token kept in a file so the same guest returns), or an agent
 * that logs in with its password (`--login`); and the cell to connect to (`--url`, or the
 * merchant's home cell as `--cluster` routes it).
 */
export interface ChatIdentityOptions {
  url?: string;
  cluster?: string;
  token?: string;
  guest?: string | boolean;
  login?: string;
  tenant?: string;
  merchant?: string;
  device?: string;
  conv?: string;
}

export interface ChatIdentity {
  /** The cell's WebSocket origin (`ws://host:port`): the one given, or where `--cluster` routed first. */
  url: string;
  /**
   * With `--cluster`: the SDK's route mode for the merchant, so the chat routes again at every
   * reconnect and follows the merchant's redirects when it moves (docs/routing.md, "SDK").
   */
  route: RouteOptions | undefined;
  token: TokenSource;
  user: string;
  role: 'customer' | 'agent';
  /** The conversation the chat writes to: a customer's own; an agent's, when given. */
  conv: string | undefined;
  /** For the first line printed: "as guest g-...", "routed by ...". */
  notes: string[];
}

/** How long the route lookup, a login or a guest token may take before the command gives up. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** The device of a terminal agent unless `--device` names another. */
const DEFAULT_AGENT_DEVICE = 'terminal';

interface Claims {
  tenant?: string;
  user?: string;
  role?: string;
  merchant?: string;
}

/** Resolves the identity; `password` is asked only for `--login`. */
export async function identify(options: ChatIdentityOptions, password: () => Promise<string>): Promise<ChatIdentity> {
  const ways = [options.token !== undefined, options.guest !== undefined && options.guest !== false, options.login !== undefined].filter(Boolean).length;
  if (ways !== 1) throw new CliError('chat as exactly one of: --token <jwt>, --guest [name], --login <agent>', ExitCode.Usage);
  let named: { merchant: string; customer: string } | undefined;
  if (options.conv !== undefined) {
    named = parseConversationId(options.conv);
    if (named === undefined) throw new CliError(`'${options.conv}' is not a conversation id (<merchant>:<customer>)`, ExitCode.Usage);
  }
  const claims = options.token === undefined ? {} : claimsOf(options.token);
  const tenant = options.tenant ?? claims.tenant;
  if (tenant === undefined) throw new CliError('pass --tenant (no token names it)', ExitCode.Usage);
  const merchant = named?.merchant ?? options.merchant ?? claims.merchant;
  const notes: string[] = [];
  const url = await cellUrlOf(options, tenant, merchant, notes);
  const route = options.url === undefined && options.cluster !== undefined && merchant !== undefined ? { url: options.cluster, tenant, merchant } : undefined;

  if (options.token !== undefined) {
    const role = claims.role === 'agent' ? 'agent' : 'customer';
    const user = claims.user ?? '?';
    const conv = options.conv ?? (role === 'customer' && merchant !== undefined ? conversationIdOf(merchant, user) : undefined);
    if (role === 'customer' && conv === undefined) throw new CliError('name the conversation with --conv, or its merchant with --merchant', ExitCode.Usage);
    return { url, route, token: options.token, user, role, conv, notes };
  }
  if (merchant === undefined) throw new CliError('name the merchant with --merchant (or --conv)', ExitCode.Usage);

  if (options.login !== undefined) {
    const source = loginTokenSource({ url, tenant, merchant, agent: options.login, password: await password(), device: options.device ?? DEFAULT_AGENT_DEVICE });
    const first = await firstToken(source, `login as ${options.login} of ${tenant}/${merchant}`);
    notes.push(`logged in as ${options.login} of ${merchant}`);
    return { url, route, token: startingWith(first, source), user: options.login, role: 'agent', conv: options.conv, notes };
  }

  const guestName = typeof options.guest === 'string' ? options.guest : 'guest';
  const source = guestTokenSource({ url, tenant, merchant, storage: guestFileStorage(guestFilePath(), guestName), ...(options.device === undefined ? {} : { device: options.device }) });
  const first = await firstToken(source, `a guest token of ${tenant}/${merchant}`);
  const user = claimsOf(first).user ?? '?';
  const conv = conversationIdOf(merchant, user);
  if (options.conv !== undefined && options.conv !== conv) throw new CliError(`a guest writes to its own conversation (${conv}), not ${options.conv}`, ExitCode.Usage);
  notes.push(`as guest '${guestName}' (${user}, kept in ${guestFilePath()})`);
  return { url, route, token: startingWith(first, source), user, role: 'customer', conv, notes };
}

/** The first token, asked before connecting so that a refused login is one clear line. */
async function firstToken(source: (signal: AbortSignal) => Promise<string>, what: string): Promise<string> {
  try {
    return await source(AbortSignal.timeout(CONNECT_TIMEOUT_MS));
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    const unreachable = error.code === ClientErrorCode.ConnectionFailed || error.code === ClientErrorCode.Aborted;
    const message = error.message.includes(error.code) ? error.message : `${error.message} (${error.code})`;
    throw new CliError(`${what}: ${unreachable ? messageWithCauses(error) : message}`, unreachable ? ExitCode.Unreachable : ExitCode.Failed);
  }
}

/** Hands out `first` once (it was just issued), then asks `source` for fresh ones. */
function startingWith(first: string, source: (signal: AbortSignal) => Promise<string>): TokenSource {
  let unused: string | undefined = first;
  return (signal) => {
    const token = unused;
    unused = undefined;
    return token === undefined ? source(signal) : Promise.resolve(token);
  };
}

/** The cell to connect to: given, or the merchant's home cell as the cluster routes it. */
async function cellUrlOf(options: ChatIdentityOptions, tenant: string, merchant: string | undefined, notes: string[]): Promise<string> {
  if (options.url !== undefined) return options.url;
  if (options.cluster === undefined) throw new CliError('pass --url <ws url of a cell> or --cluster <http url of any cell>', ExitCode.Usage);
  if (merchant === undefined) throw new CliError('name the merchant with --merchant (or --conv) so that --cluster can route to it', ExitCode.Usage);
  const cluster = options.cluster.replace(/\/$/, '');
  let response: Response;
  let body: { ws?: string; error?: { code: string; message: string } };
  try {
    response = await fetch(`${cluster}/v1/route?tenant=${encodeURIComponent(tenant)}&merchant=${encodeURIComponent(merchant)}`, {
      signal: AbortSignal.timeout(CONNECT_TIMEOUT_MS),
    });
    body = (await response.json()) as typeof body;
  } catch (error) {
    throw new CliError(`cannot reach the cluster at ${cluster}: ${messageWithCauses(error)}`, ExitCode.Unreachable);
  }
  if (!response.ok || body.ws === undefined) {
    throw new CliError(`cannot route to merchant ${merchant}: ${body.error?.message ?? `HTTP ${response.status}`}`, ExitCode.Failed);
  }
  const url = body.ws.replace(/\/v1\/ws$/, '');
  notes.push(`routed by ${options.cluster} to ${url}`);
  return url;
}

/** The claims of a token, read without verifying (the cell verifies it). */
function claimsOf(token: string): Claims {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
    const text = (name: string): string | undefined => (typeof payload[name] === 'string' ? payload[name] : undefined);
    const claims: Claims = {};
    // The user is the token's subject (`sub`).
    for (const [name, claim] of [['tenant', 'tenant'], ['user', 'sub'], ['role', 'role'], ['merchant', 'merchant']] as const) {
      const value = text(claim);
      if (value !== undefined) claims[name] = value;
    }
    return claims;
  } catch {
    return {};
  }
}
