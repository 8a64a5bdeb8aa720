// A token source for agents: logs in with a password once, then spends its refresh token for
// every fresh token the client asks for (the client asks before the token expires).
import { ErrorCode } from '../cell/protocol/errors.js';
import { ClientError } from './errors.js';
import { httpBaseOf, oneAtATime, postToCell } from './cell-http.js';

export interface AgentLoginOptions {
  /** The merchant's home cell (or any cell: a redirect to the home is followed): its HTTP URL, or a `ws(s)://.../v1/ws` URL. */
  url: string;
  tenant: string;
  merchant: string;
  agent: string;
  password: string;
  /** This device's id (the token's `device` claim). */
  device: string;
}

/** The client's `token` option for an agent, which can also end the login. */
export interface AgentTokenSource {
  (signal: AbortSignal): Promise<string>;
  /** Revokes the login at the cell; the next call logs in again. */
  logout(signal?: AbortSignal): Promise<void>;
}

interface LoginAnswer {
  token: string;
  refreshToken: string;
}

/**
 * Logs in at the first call (`POST /v1/login`) and refreshes at the next ones
 * (`POST /v1/login/refresh`, which rotates the refresh token). When the cell refuses the refresh
 * token (expired, revoked by a logout or because it was used twice) it logs in again; an agent
 * removed or with a new password then gets LOGIN_FAILED, which the client reports as
 * TOKEN_PROVIDER_FAILED with that cause. Pass it as the client's `token`.
 */
export function loginTokenSource(options: AgentLoginOptions): AgentTokenSource {
  const cell = { base: httpBaseOf(options.url) };
  const { tenant, merchant, agent, password, device } = options;
  let refreshToken: string | undefined;
  const keep = (answer: unknown): string => {
    const tokens = answer as LoginAnswer;
    refreshToken = tokens.refreshToken;
    return tokens.token;
  };
  const next = oneAtATime(async (signal) => {
    if (refreshToken !== undefined) {
      try {
        return keep(await postToCell(cell, '/v1/login/refresh', { refreshToken }, signal));
      } catch (error) {
        if (!(error instanceof ClientError && error.code === ErrorCode.RefreshInvalid)) throw error;
        refreshToken = undefined;
      }
    }
    return keep(await postToCell(cell, '/v1/login', { tenant, merchant, agent, password, device }, signal));
  });
  const source = (signal: AbortSignal): Promise<string> => next(signal);
  source.logout = async (signal?: AbortSignal): Promise<void> => {
    const spent = refreshToken;
    refreshToken = undefined;
    if (spent !== undefined) await postToCell(cell, '/v1/logout', { refreshToken: spent }, signal);
  };
  return source;
}
