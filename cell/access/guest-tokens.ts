import { randomId, type Random } from '../../platform/random.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { scopeOfRefreshToken, type RefreshSubject, type RefreshTokens } from './refresh-tokens.js';
import type { TokenMinter } from './token-minter.js';

export interface GuestRequest {
  tenant: string;
  merchant: string;
  /** The page's own device id; a new guest without one gets a random one, kept across refreshes. */
  device?: string | undefined;
  /** The refresh token the page kept from its last guest token: the same guest comes back. */
  refreshToken?: string | undefined;
}

export interface GuestTokens {
  token: string;
  expiresAtMs: number;
  user: string;
  device: string;
  refreshToken: string;
  refreshExpiresAtMs: number;
}

export interface GuestIssuerComponents {
  minter: TokenMinter;
  refreshTokens: RefreshTokens;
  random: Random;
  hostsMerchant(tenant: string, merchant: string): boolean;
  /**
   * The answer to a merchant this cell does not host: MERCHANT_ELSEWHERE with its home when
   * another serving cell hosts it (`CellCore.redirects.refusal`), HOME_UNAVAILABLE while its home
   * is down, else MERCHANT_NOT_HOSTED with `message`.
   */
  refuseMerchant(tenant: string, merchant: string, message: string): CellError;
  guestTokenTtlSeconds: number;
}

/** Guest ids are `g-` and this many characters of [0-9a-z] (about 103 bits). */
const GUEST_ID_CHARS = 20;
const DEVICE_ID_CHARS = 12;

/**
 * Customer tokens for shoppers without an account, for one merchant this cell hosts. A guest is
 * `g-<random id>`; the page keeps the refresh token it is given and presents it next time, to come
 * back as the same guest, to the same conversation (`<merchant>:g-...`).
 */
export class GuestIssuer {
  constructor(private readonly components: GuestIssuerComponents) {}

  async issue(request: GuestRequest): Promise<GuestTokens> {
    const { minter, refreshTokens, random, hostsMerchant } = this.components;
    if (!minter.serves(request.tenant) || !hostsMerchant(request.tenant, request.merchant)) {
      throw this.components.refuseMerchant(request.tenant, request.merchant, `merchant ${request.merchant} is not hosted by this cell`);
    }
    let subject: RefreshSubject;
    let refreshed: { refreshToken: string; refreshExpiresAtMs: number };
    if (request.refreshToken === undefined) {
      subject = {
        kind: 'guest',
        tenant: request.tenant,
        merchant: request.merchant,
        user: `g-${randomId(random, GUEST_ID_CHARS)}`,
        device: request.device ?? `web-${randomId(random, DEVICE_ID_CHARS)}`,
      };
      refreshed = await refreshTokens.issue(subject);
    } else {
      const scope = scopeOfRefreshToken(request.refreshToken);
      if (scope !== undefined && (scope.tenant !== request.tenant || scope.merchant !== request.merchant)) {
        // Refused without touching the token: it still brings its guest back to its own merchant.
        throw new CellError(ErrorCode.RefreshInvalid, `this refresh token is for a guest of merchant ${scope.merchant} of tenant ${scope.tenant}`);
      }
      const device = request.device;
      ({ subject, ...refreshed } = await refreshTokens.rotate(request.refreshToken, 'guest', (kept) => (device === undefined ? kept : { ...kept, device })));
    }
    const access = await minter.mint({ tenant: subject.tenant, user: subject.user, role: 'customer', device: subject.device }, this.components.guestTokenTtlSeconds);
    return { ...access, user: subject.user, device: subject.device, ...refreshed };
  }
}
