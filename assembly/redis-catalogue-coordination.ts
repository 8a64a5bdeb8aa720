import type { Redis } from 'ioredis';
import type { CatalogueCoordination } from '../cell/processes/cell-wide-catalogue.js';

/**
 * The catalogue of a cell of several processes, kept in step through its Redis
 * (cell/processes/cell-wide-catalogue.ts). Keys, under the cell's key prefix:
 *
 *     <prefix>catalogue/lock      "<process id>/<nonce>": the process changing the catalogue (PX)
 *     <prefix>catalogue/version   a counter moved on by every change (INCR)
 */
export class RedisCatalogueCoordination implements CatalogueCoordination {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async lock(holder: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.lockKey(), holder, 'PX', ttlMs, 'NX')) === 'OK';
  }

  async unlock(holder: string): Promise<void> {
    await this.redis.eval(UNLOCK, 1, this.lockKey(), holder);
  }

  async version(): Promise<string> {
    return (await this.redis.get(this.versionKey())) ?? '0';
  }

  async bump(): Promise<void> {
    await this.redis.incr(this.versionKey());
  }

  private lockKey(): string {
    return `${this.prefix}catalogue/lock`;
  }

  private versionKey(): string {
    return `${this.prefix}catalogue/version`;
  }
}

const UNLOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`;
