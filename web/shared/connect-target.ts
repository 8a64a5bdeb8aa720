// Where a page's client connects: in a cluster, route mode through the cell that served the page
// (the SDK asks /v1/route before every attempt and follows the merchant's moves); on a cell that
// runs alone (its /v1/route answers MESH_DISABLED), that very cell.
import { BrowserClock, BrowserTransport, CellmeshClient, ClientError, CryptoRandom } from '../../client/browser.js';

export type ConnectTarget = { route: { url: string; tenant: string; merchant: string } } | { url: string };

/** The target for `merchant`; throws an Error whose message a person can read. */
export async function connectTarget(origin: string, tenant: string, merchant: string): Promise<ConnectTarget> {
  const query = `tenant=${encodeURIComponent(tenant)}&merchant=${encodeURIComponent(merchant)}`;
  let response: Response;
  try {
    response = await fetch(`${origin}/v1/route?${query}`, { headers: { accept: 'application/json' } });
  } catch {
    throw new Error('The page could not reach its server. Check your connection and reload the page.');
  }
  if (response.ok) return { route: { url: origin, tenant, merchant } };
  const answer = (await response.json().catch(() => ({}))) as { error?: { code?: string } };
  if (answer.error?.code === 'MESH_DISABLED') return { url: `${origin.replace(/^http/, 'ws')}/v1/ws` };
  if (answer.error?.code === 'MERCHANT_UNKNOWN') throw new Error('This shop is not available right now.');
  throw new Error(`The page could not start (${answer.error?.code ?? response.status}).`);
}

/**
 * A page's SDK client to `target`: the browser's WebSocket, clock and randomness. A person waits,
 * so it reconnects within seconds, not the SDK's default half minute.
 */
export function pageClient(target: ConnectTarget, token: (signal: AbortSignal) => Promise<string>): CellmeshClient {
  return new CellmeshClient({ ...target, token, transport: new BrowserTransport(), clock: new BrowserClock(), random: new CryptoRandom(), backoff: { maxDelayMs: 5_000 } });
}

/** What a person reads for an error of the SDK or the cell. */
export function describeError(error: unknown): string {
  if (error instanceof ClientError) {
    switch (error.code) {
      case 'CUSTOMER_BLOCKED':
        return 'This shop does not accept your messages.';
      case 'MERCHANT_NOT_HOSTED':
      case 'MERCHANT_UNKNOWN':
        return 'This shop is not available right now.';
      case 'ORIGIN_FORBIDDEN':
        return 'This page may not connect (its address is not among the shop\'s allowed origins).';
      case 'GUEST_RATE_LIMITED':
        return 'Too many chats were started from your network. Try again in a minute.';
      case 'LOGIN_FAILED':
        return 'Wrong agent name or password.';
      case 'LOGIN_RATE_LIMITED':
        return 'Too many login attempts. Wait a minute and try again.';
      default:
        return `${error.message} (${error.code})`;
    }
  }
  return error instanceof Error ? error.message : String(error);
}
