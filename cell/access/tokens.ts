import { createHmac, timingSafeEqual } from 'node:crypto';
import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
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
const INVALID_SIGNATURE_MESSAGE = 'the token signature or claims are invalid';
/** Checked against when no key of this cell fits the token; its result is never trusted. */
const UNKNOWN_KEY_SECRET = 'no-tenant-of-this-cell-signs-with-this-key';
/** HS256 keys shorter than the hash give no security margin; refuse them. */
export const MIN_SECRET_BYTES = 32;

/**
 * One secret a tenant signs tokens with. `kid` names it in the token header; a tenant holds two
 * during a rotation (docs/operations.md, "Rotating secrets"). A key without `kid` is a tenant's
 * single `secret` of the config.
 */
export interface SigningKey {
  kid?: string;
  secret: string;
}

/** A tenant's signing keys from its config: its single `secret`, or its `secrets` in order. */
export function signingKeysOf(tenant: { secret?: string | undefined; secrets?: readonly SigningKey[] | undefined }): SigningKey[] {
  if (tenant.secrets !== undefined) return tenant.secrets.map(({ kid, secret }) => (kid === undefined ? { secret } : { kid, secret }));
  return tenant.secret === undefined ? [] : [{ secret: tenant.secret }];
}

export interface MintTokenOptions {
  secret: string;
  /** Names the secret in the token header (`kid`), for a tenant configured with `secrets`. */
  kid?: string;
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
    .setProtectedHeader(options.kid === undefined ? { alg: ALGORITHM, typ: 'JWT' } : { alg: ALGORITHM, typ: 'JWT', kid: options.kid })
    .setSubject(options.user)
    .setIssuedAt(issuedAtSeconds)
    .setExpirationTime(issuedAtSeconds + options.ttlSeconds)
    .sign(keyOf(options.secret));
}

/**
 * Verifies a token against its tenant's keys, synchronously. The tenant (payload) and `kid`
 * (header) are read unverified only to pick the key; nothing is trusted before the signature
 * checks out. A token with `kid` is checked against the tenant's key of that kid only; a token
 * without one against each of the tenant's keys (at most two): tokens minted before a tenant's
 * first rotation carry none.
 *
 * jose parses the token and signs tokens; the HS256 check itself is one HMAC, done here with
 * node:crypto because jose verifies only asynchronously, and the WebSocket upgrade must decide
 * inside uWS's own callback: this uWS build loses connections upgraded later from a corked
 * callback, and warns about every one upgraded uncorked.
 */
export function verifyToken(token: string, keysOfTenant: (tenant: string) => readonly SigningKey[] | undefined, nowMs: number): Identity {
  const parts = token.split('.');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let payload: ReturnType<typeof decodeJwt>;
  try {
    if (parts.length !== 3) throw new Error('not three parts');
    if (!parts.every(isCanonicalBase64url)) throw new Error('a part is not canonical base64url');
    header = decodeProtectedHeader(token);
    payload = decodeJwt(token);
  } catch {
    throw new CellError(ErrorCode.TokenInvalid, 'the token is not a well-formed JWT');
  }
  const tenant = payload['tenant'];
  const keys = (typeof tenant === 'string' ? keysOfTenant(tenant) : undefined) ?? [];
  const candidates = header.kid === undefined ? keys : keys.filter((key) => key.kid === header.kid);
  // A tenant this cell does not serve, or a kid the tenant does not have, is answered like a bad
  // signature, after the same work, so that nobody can list a cell's tenants or keys by trying.
  if (candidates.length === 0) signatureMatches(parts, UNKNOWN_KEY_SECRET);
  const signatureValid = candidates.some((key) => signatureMatches(parts, key.secret));
  if (candidates.length === 0 || header.alg !== ALGORITHM || !signatureValid) {
    throw new CellError(ErrorCode.TokenInvalid, INVALID_SIGNATURE_MESSAGE);
  }
  const nowSeconds = Math.floor(nowMs / 1000);
  if (typeof payload.exp !== 'number' || typeof payload.sub !== 'string') {
    throw new CellError(ErrorCode.TokenInvalid, 'the token lacks the required claims exp and sub');
  }
  if (payload.exp <= nowSeconds) throw new CellError(ErrorCode.TokenExpired, 'the token has expired');
  if (typeof payload.nbf === 'number' && payload.nbf > nowSeconds) {
    throw new CellError(ErrorCode.TokenInvalid, 'the token is not valid yet');
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

/**
 * Whether a JWT segment is base64url exactly as an encoder writes it: no padding, no characters
 * outside the alphabet, unused low bits zero. Decoders skip what does not fit, so without this
 * check many strings would pass for one token.
 */
function isCanonicalBase64url(segment: string): boolean {
  return segment !== '' && Buffer.from(segment, 'base64url').toString('base64url') === segment;
}

function signatureMatches([header, payload, signature]: string[], secret: string): boolean {
  const expected = createHmac('sha256', keyOf(secret)).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature ?? '', 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
