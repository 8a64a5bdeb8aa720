import { z } from 'zod';
import type { Clock } from '../../platform/clock.js';
import type { Random } from '../../platform/random.js';
import type { Store } from '../../platform/store/store.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { LoginsConfig } from '../settings.js';
import { identifier } from '../settings.js';
import { AgentLogins, type AgentCredentials } from './agent-logins.js';
import { GuestIssuer } from './guest-tokens.js';
import { parseJsonBody, parseWith, type HttpRouter } from './http-router.js';
import { KeyedRateLimiter } from './keyed-rate-limiter.js';
import { MAX_PASSWORD_CHARS } from './passwords.js';
import { RefreshTokens } from './refresh-tokens.js';
import { TokenMinter, type TokenMinterComponents } from './token-minter.js';
import type { RouteModule } from './uws-server.js';

export interface LoginRoutesComponents {
  store: Store;
  clock: Clock;
  /** Draws guest ids. */
  random: Random;
  signingKeyOf: TokenMinterComponents['signingKeyOf'];
  /** Whether this cell hosts the merchant now (merchants move at runtime). */
  hostsMerchant(tenant: string, merchant: string): boolean;
  /** The answer to a merchant this cell does not host: a redirect when its home is known (`CellCore.redirects.refusal`). */
  refuseMerchant(tenant: string, merchant: string, message: string): CellError;
  agents: AgentCredentials;
  settings: LoginsConfig;
}

/** Bodies of these endpoints are small; a larger one is PAYLOAD_TOO_LARGE. */
const MAX_BODY_BYTES = 4096;
/**
 * Pages of any origin may read the answers (a merchant's page asks for guest tokens, an agents'
 * app logs in): these endpoints act only on credentials in the body, never on cookies, so CORS
 * protects nothing here. Pages send JSON as `text/plain`, a request without a CORS preflight.
 */
const ANSWER_HEADERS = { 'access-control-allow-origin': '*' };
/** Refresh tokens are about 100 characters; this leaves room without inviting megabytes. */
const refreshToken = z.string().min(1).max(512);

const LoginBody = z.strictObject({
  tenant: identifier,
  merchant: identifier,
  agent: identifier,
  password: z.string().min(1).max(MAX_PASSWORD_CHARS),
  device: identifier,
});
const RefreshBody = z.strictObject({ refreshToken });
const GuestBody = z.strictObject({ tenant: identifier, merchant: identifier, device: identifier.optional(), refreshToken: refreshToken.optional() });

/**
 * How people get tokens without any secret leaving a server (docs/desk.md, "Logins and tokens"):
 *
 *   POST /v1/login           {tenant, merchant, agent, password, device}  an agent logs in
 *   POST /v1/login/refresh   {refreshToken}                               a new access token, a new refresh token
 *   POST /v1/logout          {refreshToken}                               revokes the login
 *   POST /v1/guest           {tenant, merchant, device?, refreshToken?}   a guest's customer token
 *
 * Logins are rate-limited per client address and per agent, guest tokens per client address.
 */
export function loginRoutes(components: LoginRoutesComponents): RouteModule {
  const { clock, settings } = components;
  const minter = new TokenMinter({ clock, signingKeyOf: components.signingKeyOf });
  const refreshTokens = new RefreshTokens({ store: components.store, clock, ttlMs: settings.refreshTokenTtlSeconds * 1000 });
  const logins = new AgentLogins({ agents: components.agents, minter, refreshTokens, hostsMerchant: components.hostsMerchant, refuseMerchant: components.refuseMerchant, accessTokenTtlSeconds: settings.accessTokenTtlSeconds });
  const guests = new GuestIssuer({ minter, refreshTokens, random: components.random, hostsMerchant: components.hostsMerchant, refuseMerchant: components.refuseMerchant, guestTokenTtlSeconds: settings.guestTokenTtlSeconds });
  const perMinute = (count: number, burst: number): KeyedRateLimiter => new KeyedRateLimiter({ ratePerSecond: count / 60, burst, maxKeys: settings.maxTrackedClients });
  const loginsByAddress = perMinute(settings.loginsPerMinutePerAddress, settings.loginBurstPerAddress);
  const loginsByAgent = perMinute(settings.loginsPerMinutePerAgent, settings.loginBurstPerAgent);
  const guestsByAddress = perMinute(settings.guestsPerMinutePerAddress, settings.guestBurstPerAddress);
  const limit = (limiter: KeyedRateLimiter, key: string, code: typeof ErrorCode.LoginRateLimited | typeof ErrorCode.GuestRateLimited): void => {
    const retryAfterMs = limiter.take(key, clock.now());
    if (retryAfterMs > 0) throw new CellError(code, `too many requests; retry in ${retryAfterMs} ms`, { retryAfterMs });
  };
  const options = { maxBodyBytes: MAX_BODY_BYTES, answerHeaders: ANSWER_HEADERS };

  return (router: HttpRouter) => {
    router.handle(
      'post',
      '/v1/login',
      async (request) => {
        limit(loginsByAddress, request.clientAddress, ErrorCode.LoginRateLimited);
        const body = parseWith(LoginBody, parseJsonBody(request.body));
        // Every name counts, existing or not, so the limit tells nothing about which agents exist.
        limit(loginsByAgent, `${body.tenant}/${body.merchant}/${body.agent}`, ErrorCode.LoginRateLimited);
        return { status: 200, body: await logins.login(body) };
      },
      options,
    );
    router.handle(
      'post',
      '/v1/login/refresh',
      async (request) => {
        const body = parseWith(RefreshBody, parseJsonBody(request.body));
        return { status: 200, body: await logins.refresh(body.refreshToken) };
      },
      options,
    );
    router.handle(
      'post',
      '/v1/logout',
      async (request) => {
        const body = parseWith(RefreshBody, parseJsonBody(request.body));
        await logins.logout(body.refreshToken);
        return { status: 200, body: { loggedOut: true } };
      },
      options,
    );
    router.handle(
      'post',
      '/v1/guest',
      async (request) => {
        limit(guestsByAddress, request.clientAddress, ErrorCode.GuestRateLimited);
        const body = parseWith(GuestBody, parseJsonBody(request.body));
        return { status: 200, body: await guests.issue(body) };
      },
      options,
    );
  };
}
