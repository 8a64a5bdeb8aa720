import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * Agent passwords, stored only as scrypt hashes: `scrypt$<N>$<r>$<p>$<salt>$<hash>` (salt and
 * hash in base64url). The parameters travel with each hash, so raising them later leaves
 * existing hashes verifiable. N = 2^15, r = 8 costs about 32 MiB and tens of ms per check: slow
 * enough to make guessing expensive, fast enough for a login.
 *
 * The salt comes from the operating system's CSPRNG, not from the cell's Random port: a salt
 * must be unpredictable, and no rule of the cell depends on its value (the simulator never
 * compares hashes).
 */
const COST = { N: 2 ** 15, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Room for N = 2^15, r = 8 (128 * N * r = 32 MiB) and a little more. */
const MAX_MEMORY = 64 * 1024 * 1024;
export const MIN_PASSWORD_CHARS = 10;
export const MAX_PASSWORD_CHARS = 256;

function derive(password: string, salt: Buffer, options: ScryptOptions, keyBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keyBytes, { ...options, maxmem: MAX_MEMORY }, (error, key) => (error === null ? resolve(key) : reject(error)));
  });
}

/** The stored form of a new password. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, COST, KEY_BYTES);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/** Whether `password` is the one `stored` was made from; false for a malformed `stored`. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || salt === undefined || hash === undefined) return false;
  const expected = Buffer.from(hash, 'base64url');
  const options = { N: Number(n), r: Number(r), p: Number(p) };
  if (![options.N, options.r, options.p].every((value) => Number.isSafeInteger(value) && value > 0) || expected.length === 0) return false;
  const key = await derive(password, Buffer.from(salt, 'base64url'), options, expected.length);
  return timingSafeEqual(key, expected);
}
