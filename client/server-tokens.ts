// For a merchant's own site: its server mints customer tokens for its signed-in shoppers with
// the tenant's secret, which never leaves that server. Node only (it signs with node:crypto).
import { randomBytes } from 'node:crypto';
import { mintToken } from '../cell/access/tokens.js';
import { IDENTIFIER_PATTERN } from '../cell/protocol/frames.js';

export interface CustomerTokenOptions {
  /** The tenant's signing secret (at least 32 bytes), as in the cells' config. */
  secret: string;
  /** The `kid` of `secret`, for a tenant configured with `secrets`. */
  kid?: string;
  tenant: string;
  /** The shopper's id in the merchant's site (1-64 characters of [A-Za-z0-9_.-]). */
  user: string;
  /** The shopper's device (a browser tab, an app install); a random `web-...` id by default. */
  device?: string;
  /** Lifetime; 3600 (one hour) by default. */
  ttlSeconds?: number;
}

const DEFAULT_TTL_SECONDS = 3600;

/**
 * A customer token for one of the site's signed-in shoppers, to hand to the shopper's page (which
 * passes it, or a function fetching a fresh one from the site, as the client's `token`).
 */
export function mintCustomerToken(options: CustomerTokenOptions): Promise<string> {
  const device = options.device ?? `web-${randomBytes(6).toString('hex')}`;
  const ttlSeconds = options.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  const named = { tenant: options.tenant, user: options.user, device, ...(options.kid === undefined ? {} : { kid: options.kid }) };
  for (const [name, value] of Object.entries(named)) {
    if (!IDENTIFIER_PATTERN.test(value)) throw new TypeError(`${name} must be 1-64 characters of [A-Za-z0-9_.-], got ${JSON.stringify(value)}`);
  }
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new RangeError(`ttlSeconds must be a positive integer, got ${ttlSeconds}`);
  return mintToken({
    secret: options.secret,
    ...(options.kid === undefined ? {} : { kid: options.kid }),
    tenant: options.tenant,
    user: options.user,
    role: 'customer',
    device,
    ttlSeconds,
    nowMs: Date.now(), // real-clock-ok: a merchant's server signs on its own clock
  });
}
