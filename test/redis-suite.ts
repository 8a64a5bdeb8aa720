import { Redis } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { startRedisServer, type RedisServer } from '../testing/redis-server.js';

/** A redis-server of a suite's own (testing/redis-server.ts), and the clients its tests opened on it. */
export class SuiteRedis {
  private server: RedisServer | undefined;
  private readonly clients: Redis[] = [];

  get url(): string {
    if (this.server === undefined) throw new Error('the suite\'s redis-server has not started (use it inside a test)');
    return this.server.url;
  }

  /** A client the suite disconnects at its end. */
  client(): Redis {
    const client = new Redis(this.url);
    this.clients.push(client);
    return client;
  }

  async start(): Promise<void> {
    this.server = await startRedisServer();
  }

  async stop(): Promise<void> {
    for (const client of this.clients.splice(0)) client.disconnect();
    await this.server?.stop();
  }
}

/**
 * Starts a redis-server before the suite's tests and stops it after them; `beforeStop` runs first
 * (the suite's own cleanup: processes that use the server end before it does).
 */
export function useRedisServer(beforeStop?: () => Promise<void>): SuiteRedis {
  const redis = new SuiteRedis();
  beforeAll(() => redis.start());
  afterAll(async () => {
    await beforeStop?.();
    await redis.stop();
  });
  return redis;
}
