/**
 * Where the client gets its JWT: a fixed token, or a provider the client calls for a fresh one
 * when the cached token expires or the cell rejects it. The provider receives a signal that
 * aborts when the client gives the attempt up or closes.
 */
export type TokenSource = string | ((signal: AbortSignal) => Promise<string>);

/**
 * The `exp` claim of a JWT in ms since the epoch, read without verifying the signature (only the
 * cell can verify; the client merely avoids connecting with a token it knows is stale).
 * Undefined when the token is not a JWT with a numeric `exp`.
 */
export function jwtExpiresAtMs(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined || payload.length === 0) return undefined;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (typeof claims !== 'object' || claims === null) return undefined;
    const exp = (claims as Record<string, unknown>).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
