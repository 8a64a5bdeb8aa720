import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisDurabilityError } from './redis-durability.js';
import { RedisStore, type RedisStoreInit } from './redis-store.js';
import { StoreError, StoreFencedError, type StoreOp } from './store.js';
import { describeStoreContract } from '../../testing/store-contract.js';
import { redisServerMissing, startRedisServer, type RedisServer, type RedisServerOptions } from '../../testing/redis-server.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`redis-store.test.ts: skipped: ${skipReason}`);

/** Every store of this file gets its own prefix, so tests never see each other's keys. */
let prefixes = 0;
const freshPrefix = (): string => `test:${(prefixes += 1)}:`;

describe.skipIf(skipReason !== undefined)(`RedisStore${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  const servers: RedisServer[] = [];
  const stores: RedisStore[] = [];
  const clients: Redis[] = [];
  let shared: RedisServer;

  async function server(options: RedisServerOptions = {}): Promise<RedisServer> {
    const started = await startRedisServer(options);
    servers.push(started);
    return started;
  }

  function storeOn(redis: RedisServer, init: Partial<RedisStoreInit> = {}): RedisStore {
    const store = new RedisStore({ url: redis.url, keyPrefix: freshPrefix(), ...init });
    stores.push(store);
    return store;
  }

  /** A plain client, to look at and change what the store keeps behind its back. */
  function clientOf(redis: RedisServer): Redis {
    const client = new Redis(redis.url, { lazyConnect: true });
    // Tests kill servers under their clients: the reconnection errors are expected.
    client.on('error', () => {});
    clients.push(client);
    return client;
  }

  beforeAll(async () => {
    shared = await server();
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    clients.splice(0).forEach((client) => client.disconnect());
  });

  afterAll(async () => {
    await Promise.all(servers.map((started) => started.stop()));
  });

  describeStoreContract('RedisStore', async () => ({
    store: new RedisStore({ url: shared.url, keyPrefix: freshPrefix() }),
    cleanup: async () => {},
  }));

  it('keeps cells apart by key prefix on one Redis, under two keys per cell', async () => {
    const first = storeOn(shared, { keyPrefix: 'cellmesh:c1:' });
    const second = storeOn(shared, { keyPrefix: 'cellmesh:c2:' });
    await Promise.all([first.open(), second.open()]);
    await first.write([{ type: 'put', key: 'k', value: 'first' }]);
    expect(await second.get('k')).toBeUndefined();
    expect(await second.range({ gte: '', lt: '\uffff', limit: 10 })).toEqual([]);
    const client = clientOf(shared);
    await client.connect();
    expect((await client.keys('cellmesh:c1:*')).sort()).toEqual(['cellmesh:c1:index', 'cellmesh:c1:values']);
  });

  it('takes a write, a getMany and a range of 50 000 keys in one piece (more arguments than a call may spread)', async () => {
    const store = storeOn(shared);
    await store.open();
    const keys = Array.from({ length: 50_000 }, (_, index) => `big/${String(index).padStart(6, '0')}`);
    await store.write(keys.map((key): StoreOp => ({ type: 'put', key, value: key })));
    expect(await store.getMany(keys)).toEqual(keys);
    const entries = await store.range({ gte: 'big/', lt: 'big0', limit: 200_000 });
    expect(entries.map(([key]) => key)).toEqual(keys);
  });

  describe('fencing', () => {
    const fenceKey = 'lease:merchant-1';
    let token: string | undefined;
    let client: Redis;

    beforeAll(async () => {
      client = new Redis(shared.url);
    });
    afterAll(() => client.disconnect());

    it('applies a write only while the fence key holds the token, and nothing of a refused one', async () => {
      await client.set(fenceKey, 'token-1');
      token = 'token-1';
      const store = storeOn(shared, { fence: { key: fenceKey, token: () => token } });
      await store.open();
      await store.write([{ type: 'put', key: 'a', value: '1' }]);

      // Another process took the lease.
      await client.set(fenceKey, 'token-2');
      const refused: unknown = await store
        .write([
          { type: 'put', key: 'a', value: 'stale' },
          { type: 'put', key: 'b', value: 'stale' },
        ])
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(StoreFencedError);
      expect(refused).toBeInstanceOf(StoreError);
      expect(refused).toMatchObject({ code: 'STORE_UNAVAILABLE', fenced: true });
      expect(await store.getMany(['a', 'b'])).toEqual(['1', undefined]);

      // A missing fence key fences off too.
      await client.del(fenceKey);
      await expect(store.write([{ type: 'del', key: 'a' }])).rejects.toBeInstanceOf(StoreFencedError);

      // No token at all: refused without asking Redis.
      await client.set(fenceKey, 'token-3');
      token = undefined;
      await expect(store.write([{ type: 'put', key: 'c', value: 'x' }])).rejects.toMatchObject({ fenced: true });

      token = 'token-3';
      await store.write([{ type: 'put', key: 'c', value: 'x' }]);
      expect(await store.getMany(['a', 'c'])).toEqual(['1', 'x']);
    });

    it('fences single writes with writeFenced, one fence per merchant', async () => {
      await client.mset('lease:m1', 'mine', 'lease:m2', 'theirs');
      const store = storeOn(shared);
      await store.open();
      await store.writeFenced([{ type: 'put', key: 'm1/x', value: '1' }], { key: 'lease:m1', token: 'mine' });
      await expect(store.writeFenced([{ type: 'put', key: 'm2/x', value: '1' }], { key: 'lease:m2', token: 'mine' })).rejects.toBeInstanceOf(StoreFencedError);
      await store.write([{ type: 'put', key: 'unfenced', value: '1' }]);
      expect(await store.getMany(['m1/x', 'm2/x', 'unfenced'])).toEqual(['1', undefined, '1']);
    });
  });

  describe('refusing a Redis that cannot keep the durable ack', () => {
    async function openFailure(store: RedisStore): Promise<StoreError> {
      const error: unknown = await store.open().catch((reason: unknown) => reason);
      expect(error).toBeInstanceOf(StoreError);
      return error as StoreError;
    }

    it('refuses appendfsync everysec, naming the setting and the fix, unless told to accept it', async () => {
      const weak = await server({ appendfsync: 'everysec' });
      const error = await openFailure(storeOn(weak));
      expect(error.cause).toBeInstanceOf(RedisDurabilityError);
      const message = (error.cause as Error).message;
      expect(message).toMatch(/appendfsync is everysec/);
      expect(message).toMatch(/appendfsync always/);
      expect(message).toMatch(/store\.redis\.acceptWeakDurability: true/);

      const accepting = storeOn(weak, { acceptWeakDurability: true });
      await accepting.open();
      expect(accepting.durabilityProblems().map((problem) => problem.setting)).toEqual(['appendfsync']);
      await accepting.write([{ type: 'put', key: 'k', value: 'v' }]);
      expect(await accepting.get('k')).toBe('v');
    });

    it('refuses appendonly no', async () => {
      const weak = await server({ appendonly: false });
      const error = await openFailure(storeOn(weak));
      expect((error.cause as RedisDurabilityError).problems.map((problem) => problem.setting)).toEqual(['appendonly']);
    });

    it('says so when CONFIG is disabled, with the same way out', async () => {
      const managed = await server({ disableConfigCommand: true });
      const error = await openFailure(storeOn(managed));
      expect((error.cause as Error).message).toMatch(/CONFIG GET is disabled/);
      const accepting = storeOn(managed, { acceptWeakDurability: true });
      await accepting.open();
      expect(accepting.durabilityProblems().map((problem) => problem.setting)).toEqual(['CONFIG']);
    });

    it('refuses to wait for replicas that are not there', async () => {
      const error = await openFailure(storeOn(shared, { waitReplicas: 1 }));
      expect((error.cause as Error).message).toMatch(/writes wait for 1 replica\(s\) but 0 are connected/);
    });

    it('fails open() with StoreError when nothing listens at the URL', async () => {
      const redis = await server();
      await redis.kill('SIGKILL');
      const error = await openFailure(storeOn(redis));
      expect(error.message).toMatch(/open failed/);
    });
  });

  describe('with a replica', () => {
    it('acknowledges a write once the replica holds it (WAIT), and fails it when the replica is gone', async () => {
      const primary = await server();
      const replica = await server({ replicaOfPort: primary.port });
      const client = clientOf(primary);
      await client.connect();
      await eventually(async () => {
        // Online: done with its first full synchronisation, from then on counted by WAIT.
        if (!/^slave0:.*state=online/m.test(await client.info('replication'))) throw new Error('the replica is not online yet');
      });

      const onTheReplica: unknown = await storeOn(replica).open().catch((error: unknown) => error);
      expect(((onTheReplica as StoreError).cause as Error).message).toMatch(/is a replica \(role slave\).*fix: point store\.redis\.url at the primary/);

      // Writes that do not wait for the replica are refused: a failover could lose them.
      const unwaited: unknown = await storeOn(primary).open().catch((error: unknown) => error);
      expect(((unwaited as StoreError).cause as Error).message).toMatch(/has 1 replica\(s\) but writes do not wait for them/);

      const prefix = freshPrefix();
      const store = storeOn(primary, { keyPrefix: prefix, waitReplicas: 1, waitTimeoutMs: 200 });
      await store.open();
      await store.write([{ type: 'put', key: 'k', value: 'on both' }]);
      const onReplica = clientOf(replica);
      await onReplica.connect();
      expect(await onReplica.hlen(`${prefix}values`)).toBe(1);

      await replica.kill('SIGKILL');
      // The primary notices the replica's end when its socket closes.
      await eventually(async () => {
        if (!/^connected_slaves:0/m.test(await client.info('replication'))) throw new Error('the primary still counts the replica');
      });
      await expect(store.write([{ type: 'put', key: 'k', value: 'primary only' }])).rejects.toThrow(/reached 0 of 1 replicas within 200 ms/);
    });
  });

  describe('when Redis goes away', () => {
    it('fails writes at once with StoreError while it is down, and works again once it is back', async () => {
      const redis = await server();
      const store = storeOn(redis);
      await store.open();
      await store.write([{ type: 'put', key: 'before', value: '1' }]);

      await redis.kill('SIGKILL');
      const startedMs = performance.now();
      const error: unknown = await store.write([{ type: 'put', key: 'during', value: '1' }]).catch((reason: unknown) => reason);
      expect(error).toBeInstanceOf(StoreError);
      expect((error as StoreError).message).toMatch(/unreachable/);
      await expect(store.get('before')).rejects.toBeInstanceOf(StoreError);
      expect(performance.now() - startedMs).toBeLessThan(1_000);

      await redis.restart();
      await eventually(() => store.write([{ type: 'put', key: 'after', value: '1' }]));
      expect(await store.getMany(['before', 'during', 'after'])).toEqual(['1', undefined, '1']);
    });

    it('keeps every write acknowledged before a kill -9 of redis-server (appendfsync always)', async () => {
      const redis = await server();
      const prefix = freshPrefix();
      const store = storeOn(redis, { keyPrefix: prefix });
      await store.open();

      const acknowledged: string[] = [];
      const killAfter = 2_000;
      let killing: Promise<void> | undefined;
      // Sixteen writers write until the kill fails them: writes are in flight when it lands.
      await Promise.all(
        Array.from({ length: 16 }, async (_, writer) => {
          for (let round = 0; ; round += 1) {
            const key = `w${writer}/${round}`;
            const ops: StoreOp[] = [{ type: 'put', key, value: key }];
            try {
              await store.write(ops);
            } catch {
              return;
            }
            acknowledged.push(key);
            if (acknowledged.length >= killAfter) killing ??= redis.kill('SIGKILL');
          }
        }),
      );
      await killing;
      expect(acknowledged.length).toBeGreaterThanOrEqual(killAfter);

      await redis.restart();
      const reopened = storeOn(redis, { keyPrefix: prefix });
      await reopened.open();
      const values = await reopened.getMany(acknowledged);
      expect(acknowledged.filter((key, index) => values[index] !== key)).toEqual([]);
    });
  });
});

/** Retries `attempt` until it resolves (ioredis reconnects in the background), for up to 5 s. */
async function eventually(attempt: () => Promise<unknown>): Promise<void> {
  const deadline = performance.now() + 5_000;
  for (;;) {
    try {
      await attempt();
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
