import type { Clock } from '../../platform/clock.js';
import type { Role } from '../protocol/frames.js';
import { mintToken, type SigningKey } from './tokens.js';

/** Whom an access token is for. */
export interface TokenSubject {
  tenant: string;
  user: string;
  role: Role;
  /** Agents only. */
  merchant?: string | undefined;
  device: string;
}

export interface MintedToken {
  token: string;
  /** The token's `exp`, in ms since the epoch. */
  expiresAtMs: number;
}

export interface TokenMinterComponents {
  clock: Clock;
  /**
   * The key a tenant signs new tokens with: its newest (the last of its `secrets`, the one rotated
   * in), or its single `secret`. Undefined for a tenant this cell does not serve.
   */
  signingKeyOf(tenant: string): SigningKey | undefined;
}

/** Signs the access tokens the cell hands out itself (logins, guests), on the cell's clock. */
export class TokenMinter {
  constructor(private readonly components: TokenMinterComponents) {}

  /** Whether this cell can sign tokens of `tenant`. */
  serves(tenant: string): boolean {
    return this.components.signingKeyOf(tenant) !== undefined;
  }

  async mint(subject: TokenSubject, ttlSeconds: number): Promise<MintedToken> {
    const key = this.components.signingKeyOf(subject.tenant);
    if (key === undefined) throw new Error(`tenant ${subject.tenant} is not served by this cell`);
    const nowMs = this.components.clock.now();
    const token = await mintToken({
      secret: key.secret,
      ...(key.kid === undefined ? {} : { kid: key.kid }),
      tenant: subject.tenant,
      user: subject.user,
      role: subject.role,
      ...(subject.merchant === undefined ? {} : { merchant: subject.merchant }),
      device: subject.device,
      ttlSeconds,
      nowMs,
    });
    // mintToken counts whole seconds from the second of `nowMs`.
    return { token, expiresAtMs: (Math.floor(nowMs / 1000) + ttlSeconds) * 1000 };
  }
}

/** The signing key of new tokens among a tenant's keys in config order: the last, the newest. */
export function newestSigningKey(keys: readonly SigningKey[]): SigningKey | undefined {
  return keys.at(-1);
}
