import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * The secret the processes of a cell on Redis show each other on the internal channel
 * (cell/access/internal-routes.ts): `<prefix>internal-secret`, made by the first process that
 * asks (SET NX) and read by the others. Whoever can read the cell's Redis is trusted already: it
 * holds every message. Kept for the cell's life; delete the key and restart the processes to change it.
 */
export async function cellSecretOf(redis: Redis, keyPrefix: string): Promise<string> {
  const key = `${keyPrefix}internal-secret`;
  await redis.set(key, randomBytes(32).toString('base64url'), 'NX');
  const secret = await redis.get(key);
  if (secret === null) throw new Error(`the cell's secret ${key} vanished right after it was set`);
  return secret;
}
