import { SignJWT, decodeJwt, errors as joseErrors, jwtVerify } from 'jose';
import { z } from 'zod';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN, type Role } from '../protocol/frames.js';

/** Who a connection or HTTP request acts as, read from a verified token. */
export interface Identity {
  tenant: string;
  user: string;
  role: Role;
  /** The merchant an agent works for; absent for customers. */
  merchant?: string;
  device: string;
  /** Token expiry, ms since the epoch. */
  expiresAtMs: number;
}

const identifier = z.string().regex(IDENTIFIER_PATTERN);
const Claims = z
  .object({
    tenant: identifier,
    sub: identifier,
    role: z.enum(['customer', 'agent']),
    merchant: identifier.optional(),
    device: identifier,
    exp: z.number().int(),
  })
  .refine((claims) => (claims.role === 'agent') === (claims.merchant !== undefined), {
    message: 'agents carry a merchant claim and customers do not',
  });

const ALGORITHM = 'HS256';
/** HS256 keys shorter than the hash give no security margin; refuse them. */
export const MIN_SECRET_BYTES = 32;

export interface MintTokenOptions {
  secret: string;
  tenant: string;
  user: string;
  role: Role;
  merchant?: string;
  device: string;
  /** Lifetime in seconds from `nowMs`. */
  ttlSeconds: number;
  /** Issue time, ms since the epoch (from the caller's clock). */
  nowMs: number;
}

function keyOf(secret: string): Uint8Array {
  const key = new TextEncoder().encode(secret);
  if (key.length < MIN_SECRET_BYTES) {
    throw new Error(`tenant secrets must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  return key;
}

/** Signs a token for a user's device (used by the CLI, demos, tests and benchmarks). */
export async function mintToken(options: MintTokenOptions): Promise<string> {
  const issuedAtSeconds = Math.floor(options.nowMs / 1000);
  const claims: Record<string, string> = { tenant: options.tenant, role: options.role, device: options.device };
  if (options.merchant !== undefined) claims['merchant'] = options.merchant;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: ALGORITHM, typ: 'JWT' })
    .setSubject(options.user)
    .setIssuedAt(issuedAtSeconds)
    .setExpirationTime(issuedAtSeconds + options.ttlSeconds)
    .sign(keyOf(options.secret));
}

/**
 * Verifies a token against its tenant's secret. The tenant is read from the unverified payload
 * only to pick the key; nothing is trusted before the signature checks out.
 */
export async function verifyToken(
  token: string,
  secretOfTenant: (tenant: string) => string | undefined,
  nowMs: number,
): Promise<Identity> {
  let unverifiedTenant: unknown;
  try {
    unverifiedTenant = decodeJwt(token)['tenant'];
  } catch {
    throw new CellError(ErrorCode.TokenInvalid, 'the token is not a well-formed JWT');
  }
  const secret = typeof unverifiedTenant === 'string' ? secretOfTenant(unverifiedTenant) : undefined;
  if (secret === undefined) {
    throw new CellError(ErrorCode.TenantUnknown, 'the token names no tenant this cell serves');
  }
  let payload: unknown;
  try {
    ({ payload } = await jwtVerify(token, keyOf(secret), {
      algorithms: [ALGORITHM],
      currentDate: new Date(nowMs),
      requiredClaims: ['exp', 'sub'],
    }));
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) {
      throw new CellError(ErrorCode.TokenExpired, 'the token has expired');
    }
    throw new CellError(ErrorCode.TokenInvalid, 'the token signature or claims are invalid');
  }
  const parsed = Claims.safeParse(payload);
  if (!parsed.success) {
    throw new CellError(ErrorCode.TokenInvalid, `the token claims are invalid: ${parsed.error.issues[0]?.message ?? ''}`);
  }
  const claims = parsed.data;
  const identity: Identity = {
    tenant: claims.tenant,
    user: claims.sub,
    role: claims.role,
    device: claims.device,
    expiresAtMs: claims.exp * 1000,
  };
  if (claims.merchant !== undefined) identity.merchant = claims.merchant;
  return identity;
}
