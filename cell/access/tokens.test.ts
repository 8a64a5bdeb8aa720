import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { CellError } from '../protocol/errors.js';
import { mintToken, verifyToken, type SigningKey } from './tokens.js';

const SECRET = 'tokens-test-secret-0123456789abcdef-0123';
const NOW_MS = 1_800_000_000_000;
const secretOf = (tenant: string): SigningKey[] | undefined => (tenant === 'mall' ? [{ secret: SECRET }] : undefined);

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return error instanceof CellError ? error.code : `not a CellError: ${String(error)}`;
  }
  return undefined;
}

const base = { secret: SECRET, tenant: 'mall', user: 'alice', role: 'customer' as const, device: 'phone', ttlSeconds: 60, nowMs: NOW_MS };

describe('verifyToken', () => {
  it('accepts a token minted for the tenant and returns its identity', async () => {
    const agent = await mintToken({ ...base, user: 'bob', role: 'agent', merchant: 'm1' });
    expect(verifyToken(agent, secretOf, NOW_MS)).toEqual({
      tenant: 'mall',
      user: 'bob',
      role: 'agent',
      merchant: 'm1',
      device: 'phone',
      expiresAtMs: NOW_MS + 60_000,
    });
  });

  it('refuses forged, tampered, foreign, expired and malformed tokens with stable codes', async () => {
    const token = await mintToken(base);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const tampered = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    tampered['sub'] = 'mallory';
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
    const hs512 = await new SignJWT({ tenant: 'mall', role: 'customer', device: 'phone' })
      .setProtectedHeader({ alg: 'HS512' })
      .setSubject('alice')
      .setExpirationTime(NOW_MS / 1000 + 60)
      .sign(new TextEncoder().encode(SECRET));
    const otherSecret = await mintToken({ ...base, secret: 'another-secret-0123456789abcdef-0123456' });
    const notYet = await new SignJWT({ tenant: 'mall', role: 'customer', device: 'phone' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setNotBefore(NOW_MS / 1000 + 30)
      .setExpirationTime(NOW_MS / 1000 + 60)
      .sign(new TextEncoder().encode(SECRET));

    expect(codeOf(() => verifyToken(`${header}.${Buffer.from(JSON.stringify(tampered)).toString('base64url')}.${signature}`, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(unsigned, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(hs512, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(otherSecret, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(notYet, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(token, secretOf, NOW_MS + 60_000))).toBe('TOKEN_EXPIRED');
    const foreign = await mintToken({ ...base, tenant: 'market' });
    expect(codeOf(() => verifyToken(foreign, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken('not-a-jwt', secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(`${header}.${payload}`, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
    expect(codeOf(() => verifyToken(token, secretOf, NOW_MS))).toBeUndefined();
  });

  it('answers a tenant it does not serve exactly like a forged signature', async () => {
    const refusalOf = (token: string): unknown => {
      try {
        verifyToken(token, secretOf, NOW_MS);
      } catch (error) {
        return error instanceof CellError ? { code: error.code, message: error.message } : error;
      }
      return 'accepted';
    };
    const unknownTenant = await mintToken({ ...base, tenant: 'market' });
    const forged = await mintToken({ ...base, secret: 'another-secret-0123456789abcdef-0123456' });
    expect(refusalOf(unknownTenant)).toEqual(refusalOf(forged));
    expect(refusalOf(unknownTenant)).toMatchObject({ code: 'TOKEN_INVALID' });
  });

  it('refuses segments that are not canonical base64url: padding, stray characters, non-zero padding bits', async () => {
    const token = await mintToken(base);
    expect(codeOf(() => verifyToken(token, secretOf, NOW_MS))).toBeUndefined();
    const segments = token.split('.');
    for (const [index, segment] of segments.entries()) {
      const variants = [`${segment}=`, `${segment}==`, `${segment.slice(0, 5)}*${segment.slice(5)}`, `${segment.slice(0, 5)} ${segment.slice(5)}`, ...withPaddingBits(segment)];
      for (const variant of variants) {
        const mutated = segments.map((part, at) => (at === index ? variant : part)).join('.');
        expect(codeOf(() => verifyToken(mutated, secretOf, NOW_MS)), `segment ${index}: ${variant}`).toBe('TOKEN_INVALID');
      }
    }
  });

  it('refuses claims that do not fit the role', async () => {
    const customerWithMerchant = await new SignJWT({ tenant: 'mall', role: 'customer', merchant: 'm1', device: 'phone' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime(NOW_MS / 1000 + 60)
      .sign(new TextEncoder().encode(SECRET));
    expect(codeOf(() => verifyToken(customerWithMerchant, secretOf, NOW_MS))).toBe('TOKEN_INVALID');
  });
});

const BASE64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The segment with its unused low bits set (it decodes to the same bytes), when it has any. */
function withPaddingBits(segment: string): string[] {
  if (segment.length % 4 === 0) return [];
  const last = BASE64URL_ALPHABET.indexOf(segment.at(-1)!);
  const variant = `${segment.slice(0, -1)}${BASE64URL_ALPHABET[last | 1]}`;
  expect(Buffer.from(variant, 'base64url')).toEqual(Buffer.from(segment, 'base64url'));
  return [variant];
}

describe('tenant secrets named by kid', () => {
  const OLD = { kid: 'old', secret: SECRET };
  const NEW = { kid: 'new', secret: 'new-tokens-test-secret-0123456789abcdef' };
  const keysOf =
    (...keys: SigningKey[]) =>
    (tenant: string): SigningKey[] | undefined =>
      tenant === 'mall' ? keys : undefined;
  const refusalOf = (token: string, keys: (tenant: string) => SigningKey[] | undefined): unknown => {
    try {
      verifyToken(token, keys, NOW_MS);
    } catch (error) {
      return error instanceof CellError ? { code: error.code, message: error.message } : error;
    }
    return 'accepted';
  };

  it('writes the kid in the header and verifies against the secret of that kid only', async () => {
    const token = await mintToken({ ...base, secret: NEW.secret, kid: 'new' });
    expect(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString())).toMatchObject({ alg: 'HS256', kid: 'new' });
    expect(refusalOf(token, keysOf(OLD, NEW))).toBe('accepted');
    expect(refusalOf(token, keysOf(NEW, OLD))).toBe('accepted');
    const forged = refusalOf(await mintToken({ ...base, secret: 'another-secret-0123456789abcdef-0123456' }), keysOf(OLD));
    // A kid the tenant does not have (rotated out, or never there) is any bad token.
    expect(refusalOf(token, keysOf(OLD))).toEqual(forged);
    expect(refusalOf(token, keysOf({ secret: NEW.secret }))).toEqual(forged);
    // The kid picks the secret: another secret of the tenant does not stand in for it.
    expect(refusalOf(await mintToken({ ...base, secret: OLD.secret, kid: 'new' }), keysOf(OLD, NEW))).toEqual(forged);
  });

  it('checks a token without kid against each secret of the tenant', async () => {
    const legacy = await mintToken(base);
    expect(refusalOf(legacy, keysOf(OLD, NEW))).toBe('accepted');
    expect(refusalOf(legacy, keysOf(NEW, OLD))).toBe('accepted');
    expect(refusalOf(legacy, keysOf({ secret: SECRET }))).toBe('accepted');
    expect(refusalOf(legacy, keysOf(NEW))).toMatchObject({ code: 'TOKEN_INVALID' });
  });

  it('refuses a kid that is not a string', async () => {
    const numericKid = await new SignJWT({ tenant: 'mall', role: 'customer', device: 'phone' })
      .setProtectedHeader({ alg: 'HS256', kid: 7 as unknown as string })
      .setSubject('alice')
      .setExpirationTime(NOW_MS / 1000 + 60)
      .sign(new TextEncoder().encode(SECRET));
    expect(refusalOf(numericKid, keysOf(OLD, { kid: '7', secret: SECRET }))).toMatchObject({ code: 'TOKEN_INVALID' });
  });
});
