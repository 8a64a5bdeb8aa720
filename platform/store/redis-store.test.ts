import { createConnection } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisDurabilityError } from './redis-durability.js';
import { RedisStore, type RedisStoreInit } from './redis-store.js';
import { StoreError, StoreFencedError, type StoreOp } from './store.js';
import { describeStoreContract } from '../../testing/store-contract.js';
import { redisServerMissing, startRedisServer, type RedisServer, type RedisServerOptions } from '../../testing/redis-server.js';
import { startTcpProxy, type TcpProxy } from '../../testing/tcp-proxy.js';

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

  it('keeps cells apart by key prefix on one Redis, under two keys per cell and a write ledger per store', async () => {
    const first = storeOn(shared, { keyPrefix: 'cellmesh:c1:' });
    const second = storeOn(shared, { keyPrefix: 'cellmesh:c2:' });
    await Promise.all([first.open(), second.open()]);
    await first.write([{ type: 'put', key: 'k', value: 'first' }]);
    expect(await second.get('k')).toBeUndefined();
    expect(await second.range({ gte: '', lt: '\uffff', limit: 10 })).toEqual([]);
    const client = clientOf(shared);
    await client.connect();
    const [index, values, ledger, ...others] = (await client.keys('cellmesh:c1:*')).sort();
    expect([index, values, others]).toEqual(['cellmesh:c1:index', 'cellmesh:c1:values', []]);
    // The store instance's write ledger, which expires a while after its last write.
    expect(ledger).toMatch(/^cellmesh:c1:w\/[0-9a-f-]{36}$/);
    expect(await client.pttl(ledger!)).toBeGreaterThan(0);
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

    it('refuses an eviction policy that may drop its keys: allkeys-* (messages) and volatile-* (its write ledgers expire)', async () => {
      const evicting = await server();
      const client = clientOf(evicting);
      await client.connect();
      for (const policy of ['allkeys-lru', 'volatile-lru']) {
        await client.config('SET', 'maxmemory-policy', policy);
        const error = await openFailure(storeOn(evicting));
        expect((error.cause as Error).message).toMatch(new RegExp(`maxmemory-policy is ${policy}: .*${policy.startsWith('allkeys') ? 'messages' : 'write ledgers'}`));
      }
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
      const store = storeOn(primary, { keyPrefix: prefix, waitReplicas: 1, waitTimeoutMs: 1_000 });
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
      // Applied on the primary all the same: the one rejection that may have been applied.
      const unreplicated: unknown = await store.write([{ type: 'put', key: 'k', value: 'primary only' }]).catch((error: unknown) => error);
      expect(unreplicated).toBeInstanceOf(StoreError);
      expect((unreplicated as StoreError).message).toMatch(/applied on the primary but not acknowledged: the write reached 0 of 1 replicas within 1000 ms/);
      expect(unreplicated).toMatchObject({ ambiguous: true });
    });
  });

  describe('when Redis goes away', () => {
    it('fails writes at once with StoreError while it is down, and works again once it is back', async () => {
      const redis = await server();
      // The first write may go out before the store sees its connection closed: it then tries
      // to settle it for this long.
      const store = storeOn(redis, { reconcileTimeoutMs: 300 });
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
      // Redis stays down: the writes in flight at the kill are ambiguous after 500 ms.
      const store = storeOn(redis, { keyPrefix: prefix, reconcileTimeoutMs: 500 });
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

  describe('when a reply is lost (the write may have applied)', () => {
    const proxies: TcpProxy[] = [];
    afterEach(async () => {
      await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
    });

    /** A store that reaches `redis` through a proxy that can lose bytes, and a direct client. */
    async function throughProxy(redis: RedisServer, init: Partial<RedisStoreInit> = {}): Promise<{ store: RedisStore; proxy: TcpProxy; client: Redis; prefix: string }> {
      const proxy = await startTcpProxy(redis.port);
      proxies.push(proxy);
      const prefix = freshPrefix();
      const store = storeOn(redis, { url: `redis://127.0.0.1:${proxy.port}`, keyPrefix: prefix, ...init });
      await store.open();
      const client = clientOf(redis);
      await client.connect();
      return { store, proxy, client, prefix };
    }

    it('resolves writes that applied though their replies were lost, in call order', async () => {
      const { store, proxy, client, prefix } = await throughProxy(shared);
      proxy.mode = 'dropReplies';
      const answered: string[] = [];
      const writes = ['a', 'b', 'c'].map((key) => store.write([{ type: 'put', key, value: key }]).then(() => answered.push(key)));
      await eventually(async () => {
        if ((await client.hlen(`${prefix}values`)) !== 3) throw new Error('Redis has not run the three writes yet');
      });
      // The connection dies with the three replies: the store learns from its ledger that they applied.
      proxy.mode = 'pass';
      proxy.cut();
      await Promise.all(writes);
      expect(answered).toEqual(['a', 'b', 'c']);
      await eventually(() => store.write([{ type: 'put', key: 'd', value: 'd' }]));
      expect(await store.getMany(['a', 'b', 'c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
    });

    it('rejects writes that never reached Redis, and a late copy of them applies nothing', async () => {
      const { store, proxy, prefix, client } = await throughProxy(shared);
      proxy.mode = 'dropRequests';
      const lost = [store.write([{ type: 'put', key: 'x', value: 'lost' }]), store.write([{ type: 'del', key: 'never' }, { type: 'put', key: 'y', value: 'lost' }])].map((write) =>
        write.then(
          () => undefined,
          (error: unknown) => error,
        ),
      );
      await eventually(async () => {
        const held = proxy.heldRequests().toString('latin1');
        if (held.split('EVAL').length < 3 || !held.endsWith('$1\r\ny\r\n$4\r\nlost\r\n')) throw new Error('the proxy has not held both writes yet');
      });
      proxy.mode = 'pass';
      proxy.cut();
      for (const error of await Promise.all(lost)) {
        expect(error).toBeInstanceOf(StoreError);
        expect(error).toMatchObject({ ambiguous: false });
        expect((error as Error).message).toMatch(/had not reached Redis and was given up: it will never apply/);
      }
      // The requests arrive after all (a proxy, a buffer that was late): Redis runs them, they apply nothing.
      expect(await sendRaw(shared.port, proxy.heldRequests(), 2)).toBe(':2\r\n:2\r\n');
      expect(await client.hlen(`${prefix}values`)).toBe(0);
      await eventually(() => store.write([{ type: 'put', key: 'z', value: 'after' }]));
      expect(await store.getMany(['x', 'y', 'z'])).toEqual([undefined, undefined, 'after']);
    });

    it('rejects as ambiguous a write it could not settle, and settles it before the next write applies', async () => {
      const { store, proxy, prefix, client } = await throughProxy(shared, { reconcileTimeoutMs: 300 });
      proxy.mode = 'dropReplies';
      const write = store.write([{ type: 'put', key: 'k', value: 'maybe' }]).catch((error: unknown) => error);
      await eventually(async () => {
        if ((await client.hlen(`${prefix}values`)) !== 1) throw new Error('Redis has not run the write yet');
      });
      // Replies stay lost on the fresh connections too: the store cannot learn the outcome.
      proxy.cut();
      const error = await write;
      expect(error).toBeInstanceOf(StoreError);
      expect(error).toMatchObject({ ambiguous: true });
      expect((error as Error).message).toMatch(/could not be settled within 300 ms .*: it may have been applied/);

      // The store's own reconnection hangs on its lost replies too: cut it once more.
      proxy.mode = 'pass';
      proxy.cut();
      await eventually(() => store.write([{ type: 'put', key: 'next', value: '1' }]));
      const ledger = (await client.keys(`${prefix}w/*`))[0]!;
      // Settled before `next` was sent: write 1 had applied, nothing was voided over it.
      expect(await client.hgetall(ledger)).toEqual({ a: '2', v: '1' });
      expect(await store.getMany(['k', 'next'])).toEqual(['maybe', '1']);
    });

    it('reports a fenced write whose reply was lost as refused, not applied', async () => {
      const fenced = 'lease:lost-reply';
      const { store, proxy, client, prefix } = await throughProxy(shared);
      await client.set(fenced, 'theirs');
      proxy.mode = 'dropReplies';
      const refused = store.writeFenced([{ type: 'put', key: 'stale', value: '1' }], { key: fenced, token: 'mine' }).catch((error: unknown) => error);
      const applied = store.write([{ type: 'put', key: 'fresh', value: '1' }]);
      await eventually(async () => {
        if ((await client.hlen(`${prefix}values`)) !== 1) throw new Error('Redis has not run the writes yet');
      });
      proxy.mode = 'pass';
      proxy.cut();
      expect(await refused).toBeInstanceOf(StoreFencedError);
      await applied;
      expect(await client.hkeys(`${prefix}values`)).toEqual(['fresh']);
    });

    it('answers every write as it turned out when redis-server is killed mid-write and restarted', async () => {
      const redis = await server();
      const prefix = freshPrefix();
      const store = storeOn(redis, { keyPrefix: prefix, reconcileTimeoutMs: 10_000 });
      await store.open();
      const resolved: string[] = [];
      const rejected: string[] = [];
      const ambiguous: string[] = [];
      let restarting: Promise<void> | undefined;
      let restarted = false;
      // Sixteen writers write until the restart is done (or a write of theirs fails): writes are
      // in flight when the kill lands, and settled once Redis is back.
      await Promise.all(
        Array.from({ length: 16 }, async (_, writer) => {
          for (let round = 0; !restarted; round += 1) {
            const key = `w${writer}/${round}`;
            try {
              await store.write([{ type: 'put', key, value: key }]);
              resolved.push(key);
              restarting ??= resolved.length >= 1_000 ? redis.kill('SIGKILL').then(async () => redis.restart()) : undefined;
              void restarting?.then(() => {
                restarted = true;
              });
            } catch (error) {
              (error instanceof StoreError && error.ambiguous ? ambiguous : rejected).push(key);
              return;
            }
          }
        }),
      );
      await restarting;
      expect(ambiguous).toEqual([]);
      expect(resolved.length).toBeGreaterThanOrEqual(1_000);
      const reopened = storeOn(redis, { keyPrefix: prefix });
      await reopened.open();
      const resolvedValues = await reopened.getMany(resolved);
      expect(resolved.filter((key, index) => resolvedValues[index] !== key)).toEqual([]);
      expect(await reopened.getMany(rejected)).toEqual(rejected.map(() => undefined));
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

/** Sends `bytes` to the Redis on `port` on a fresh connection and returns its first `replies` lines. */
async function sendRaw(port: number, bytes: Buffer, replies: number): Promise<string> {
  const socket = createConnection({ host: '127.0.0.1', port });
  try {
    let answer = '';
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => {
        answer += chunk.toString('utf8');
        if (answer.split('\r\n').length > replies) resolve();
      });
      socket.write(bytes);
    });
    return answer;
  } finally {
    socket.destroy();
  }
}
