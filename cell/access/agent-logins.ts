import { createHash, randomBytes } from 'node:crypto';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { hashPassword, verifyPassword } from './passwords.js';
import type { RefreshSubject, RefreshTokens } from './refresh-tokens.js';
import type { TokenMinter } from './token-minter.js';

/**
 * Where logins look agents up. The people directory of the desk implements it; until it is wired,
 * a cell knows no agent and every login is LOGIN_FAILED.
 */
export interface AgentCredentials {
  /** The stored scrypt hash of the agent's password (passwords.ts); undefined: no such agent, removed, or no password set. */
  passwordHashOf(tenant: string, merchant: string, agent: string): string | undefined;
}

export interface AgentLoginRequest {
  tenant: string;
  merchant: string;
  agent: string;
  password: string;
  device: string;
}

/** What a login or a refresh answers. */
export interface AgentTokens {
  token: string;
  expiresAtMs: number;
  refreshToken: string;
  refreshExpiresAtMs: number;
}

export interface AgentLoginsComponents {
  agents: AgentCredentials;
  minter: TokenMinter;
  refreshTokens: RefreshTokens;
  hostsMerchant(tenant: string, merchant: string): boolean;
  /**
   * The answer to a merchant this cell does not host: MERCHANT_ELSEWHERE with its home when
   * another serving cell hosts it (`CellCore.redirects.refusal`), HOME_UNAVAILABLE while its home
   * is down, else MERCHANT_NOT_HOSTED with `message`.
   */
  refuseMerchant(tenant: string, merchant: string, message: string): CellError;
  accessTokenTtlSeconds: number;
}

/**
 * Agents log in with their password and get a short-lived access token and a refresh token.
 * An unknown agent and a wrong password get the same answer after the same work (a check against
 * a dummy hash), so that logins cannot tell which agents exist.
 */
export class AgentLogins {
  /** Hashed once, with the cost of real hashes, for logins of agents that do not exist. */
  private dummyHash: Promise<string> | undefined;

  constructor(private readonly components: AgentLoginsComponents) {}

  async login(request: AgentLoginRequest): Promise<AgentTokens> {
    const { agents, refreshTokens } = this.components;
    this.requireHosted(request.tenant, request.merchant);
    // At the first login, whomever it names: a cell that takes no logins never pays for it.
    this.dummyHash ??= hashPassword(randomBytes(16).toString('base64url'));
    const stored = agents.passwordHashOf(request.tenant, request.merchant, request.agent);
    const matches = await verifyPassword(request.password, stored ?? (await this.dummyHash));
    if (stored === undefined || !matches) throw new CellError(ErrorCode.LoginFailed, 'unknown agent or wrong password');
    const subject: RefreshSubject = {
      kind: 'agent',
      tenant: request.tenant,
      merchant: request.merchant,
      user: request.agent,
      device: request.device,
      credential: credentialOf(stored),
    };
    const access = await this.mint(subject);
    return { ...access, ...(await refreshTokens.issue(subject)) };
  }

  /** A new access token and a new refresh token for the current one, while the agent and its password stay the same. */
  async refresh(refreshToken: string): Promise<AgentTokens> {
    const { agents, refreshTokens } = this.components;
    const { subject, ...refreshed } = await refreshTokens.rotate(refreshToken, 'agent', (subject) => {
      this.requireHosted(subject.tenant, subject.merchant);
      const stored = agents.passwordHashOf(subject.tenant, subject.merchant, subject.user);
      if (stored === undefined || credentialOf(stored) !== subject.credential) {
        throw new CellError(ErrorCode.RefreshInvalid, 'the agent was removed or its password changed since this login; log in again');
      }
      return subject;
    });
    return { ...(await this.mint(subject)), ...refreshed };
  }

  /** Ends the login of `refreshToken`: its every refresh token is revoked. */
  logout(refreshToken: string): Promise<void> {
    return this.components.refreshTokens.revoke(refreshToken);
  }

  private mint(subject: RefreshSubject): Promise<{ token: string; expiresAtMs: number }> {
    const { tenant, user, merchant, device } = subject;
    return this.components.minter.mint({ tenant, user, role: 'agent', merchant, device }, this.components.accessTokenTtlSeconds);
  }

  /** Agents log in at their merchant's home cell (a tenant this cell does not serve looks the same). */
  private requireHosted(tenant: string, merchant: string): void {
    if (!this.components.minter.serves(tenant) || !this.components.hostsMerchant(tenant, merchant)) {
      throw this.components.refuseMerchant(tenant, merchant, `merchant ${merchant} is not hosted by this cell; log in at its home cell (GET /v1/route)`);
    }
  }
}

/**
 * A digest of a stored password hash, kept with a login's refresh tokens: a new password (a new
 * salt, so a new hash) ends the logins made with the old one.
 */
function credentialOf(storedHash: string): string {
  return createHash('sha256').update(storedHash).digest('base64url');
}
