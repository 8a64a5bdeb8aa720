import assert from 'node:assert/strict';
import { Redis, ReplyError } from 'ioredis';
import { decodeKey, encodeKey } from './key-codec.js';
import { checkRedisDurability, RedisDurabilityError, type RedisDurabilityProblem } from './redis-durability.js';
import { StoreError, StoreFencedError, type RangeQuery, type Store, type StoreOp } from './store.js';
import { StoreGuard, assertValidOps, assertValidRange } from './store-guard.js';

/**
 * A fence: a Redis key that holds the token of the process allowed to write (the lease of the
 * owner of a merchant). A fenced write applies only if the key holds `token`, checked inside
 * the same script that applies it, so a stale owner can never overwrite its successor.
 */
export interface RedisFence {
  /** The full Redis key of the fence, used as given: keyPrefix is NOT prepended. */
  readonly key: string;
  /** The token this process holds now; undefined when it holds none (its writes are refused). */
  token(): string | undefined;
}

export interface RedisStoreInit {
  /** `redis://[user:password@]host:port[/db]` */
  url: string;
  /** Prepended to the store's two Redis keys, so cells can share a Redis: `cellmesh:<cell id>:`. */
  keyPrefix: string;
  /** When set, every write() is fenced by it (see RedisFence); writeFenced() takes its own. */
  fence?: RedisFence | undefined;
  /** Replicas each write waits for (WAIT) before it resolves; default 0. */
  waitReplicas?: number | undefined;
  /** How long a write waits for its replicas before it fails; default 1000 ms. */
  waitTimeoutMs?: number | undefined;
  /**
   * Open even when the server cannot keep the durable ack (appendfsync everysec, no AOF, CONFIG
   * disabled...): `durabilityProblems()` then says what is given up. Default false: open() fails.
   */
  acceptWeakDurability?: boolean | undefined;
  /** A command without a reply within this time fails (a hung server); default 10 000 ms. */
  commandTimeoutMs?: number | undefined;
  /** Most ops sent and not yet acknowledged; a write past it fails at once. Default 65 536. */
  maxInFlightOps?: number | undefined;
}

const DEFAULTS = {
  waitTimeoutMs: 1_000,
  commandTimeoutMs: 10_000,
  maxInFlightOps: 65_536,
  /** Reconnection attempts back off 100 ms a try, up to this, for as long as Redis is away. */
  reconnectDelayMsMax: 1_000,
} as const;

/**
 * Applies a write, all or nothing. KEYS: index (sorted set), values (hash), and the fence key
 * when fenced; ARGV: the fence token when fenced, then 'p' key value or 'd' key per op. The
 * `#!lua` shebang makes Redis refuse the whole script up front when it is out of memory, so a
 * write is never cut halfway (Redis does not roll a script back). Returns 0 when fenced off.
 */
const WRITE_SCRIPT = `#!lua
local at = 1
if #KEYS == 3 then
  if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
  at = 2
end
while at <= #ARGV do
  local key = ARGV[at + 1]
  if ARGV[at] == 'p' then
    redis.call('ZADD', KEYS[1], 0, key)
    redis.call('HSET', KEYS[2], key, ARGV[at + 2])
    at = at + 3
  else
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', KEYS[2], key)
    at = at + 2
  end
end
return 1`;

/**
 * Reads a key range and its values in one atomic step. KEYS: index, values; ARGV: lower and
 * upper lexicographic bounds (as ZRANGE BYLEX takes them), limit, '1' for descending. Returns
 * key, value, key, value... HMGET goes by slices: Lua's unpack() has a bounded stack.
 */
const RANGE_SCRIPT = `#!lua flags=no-writes
local keys
if ARGV[4] == '1' then
  keys = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[3])
else
  keys = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, ARGV[3])
end
local entries = {}
for first = 1, #keys, 1000 do
  local last = math.min(first + 999, #keys)
  local values = redis.call('HMGET', KEYS[2], unpack(keys, first, last))
  for index = first, last do
    entries[#entries + 1] = keys[index]
    entries[#entries + 1] = values[index - first + 1]
  end
end
return entries`;

/** A fence with the token the write goes under. */
interface HeldFence {
  readonly key: string;
  readonly token: string;
}

const INCLUSIVE = Buffer.from('[');
const EXCLUSIVE = Buffer.from('(');

/**
 * The Store of a cell on Redis, through ioredis.
 *
 * Layout, under `keyPrefix`: a sorted set `index` whose members are the keys (all with score
 * 0, so ZRANGE BYLEX walks them in byte order) and a hash `values` from key to value. Keys are
 * written with key-codec.ts, whose bytes sort exactly as the port's UTF-16 code units do
 * (plain UTF-8 would put U+E000..U+FFFF before the astral characters) and which keeps lone
 * surrogates. Each key is held twice (member and field): see docs/operations.md for sizing.
 *
 * Durability: each write is one Lua script (atomic) on one connection, so Redis applies writes
 * in call order and ioredis resolves them in that order. With `appendfsync always` Redis
 * fsyncs its AOF before it replies, and a write resolves only on that reply (and, with
 * `waitReplicas`, once WAIT confirms the replicas hold it); open() checks the server's settings
 * (redis-durability.ts). Writes pipelined together share Redis's fsync, so no group commit is
 * needed here.
 *
 * Failures: nothing waits for a lost connection. Commands sent to a server that went away fail
 * with StoreError, and so does every call while ioredis reconnects in the background; the store
 * works again once Redis is back. A write that failed in flight may or may not have been
 * applied, like any unacknowledged write. Redis Cluster is not supported (the two keys would
 * need one hash slot).
 */
export class RedisStore implements Store {
  private readonly name: string;
  private readonly guard: StoreGuard;
  private readonly indexKey: string;
  private readonly valuesKey: string;
  private readonly waitReplicas: number;
  private readonly waitTimeoutMs: number;
  private readonly maxInFlightOps: number;
  private inFlightOps = 0;
  private lastConnectionError: Error | undefined;
  private problems: readonly RedisDurabilityProblem[] = [];
  private client: Redis | undefined;

  constructor(private readonly init: RedisStoreInit) {
    this.name = `Redis store at ${describeUrl(init.url)} (prefix ${init.keyPrefix})`;
    this.guard = new StoreGuard(this.name);
    this.indexKey = `${init.keyPrefix}index`;
    this.valuesKey = `${init.keyPrefix}values`;
    this.waitReplicas = init.waitReplicas ?? 0;
    this.waitTimeoutMs = init.waitTimeoutMs ?? DEFAULTS.waitTimeoutMs;
    this.maxInFlightOps = init.maxInFlightOps ?? DEFAULTS.maxInFlightOps;
    assert(Number.isSafeInteger(this.waitReplicas) && this.waitReplicas >= 0, 'waitReplicas must be a whole number');
  }

  /** What the server gives up of the durable ack, when opened with acceptWeakDurability. */
  durabilityProblems(): readonly RedisDurabilityProblem[] {
    return this.problems;
  }

  open(): Promise<void> {
    return this.guard.open(async () => {
      const client = new Redis(this.init.url, {
        lazyConnect: true,
        // Fail fast instead of queueing: no offline queue, no retry of a command, no resend
        // after a reconnect (a resent write could land after writes called later).
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        commandTimeout: (this.init.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs) + (this.waitReplicas > 0 ? this.waitTimeoutMs : 0),
        retryStrategy: (attempt) => Math.min(attempt * 100, DEFAULTS.reconnectDelayMsMax),
        connectionName: 'cellmesh-store',
      });
      // Without a listener ioredis prints every connection error; keep the last for messages.
      client.on('error', (error: Error) => {
        this.lastConnectionError = error;
      });
      this.client = client;
      try {
        // ioredis rejects with "Connection is closed."; the socket's own error says why.
        await client.connect().catch((error: unknown) => {
          throw this.lastConnectionError ?? error;
        });
        const problems = await checkRedisDurability(client, { waitReplicas: this.waitReplicas });
        if (problems.length > 0 && this.init.acceptWeakDurability !== true) throw new RedisDurabilityError(problems, describeUrl(this.init.url));
        this.problems = problems;
      } catch (error) {
        client.disconnect();
        throw error;
      }
    });
  }

  close(): Promise<void> {
    // The guard has waited for every operation under way: nothing is left to answer.
    return this.guard.close(async () => this.client?.disconnect());
  }

  get(key: string): Promise<string | undefined> {
    return this.guard.run('get', async () => {
      const value = await this.command('get', this.redis().hget(this.valuesKey, encodeKey(key)));
      return value ?? undefined;
    });
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.guard.run('getMany', async () => {
      if (keys.length === 0) return [];
      const values = await this.command('getMany', this.redis().call('HMGET', [this.valuesKey, ...keys.map(encodeKey)]));
      return (values as Array<string | null>).map((value) => value ?? undefined);
    });
  }

  /** Atomic and durable; fenced by the `fence` option when set. */
  write(ops: readonly StoreOp[]): Promise<void> {
    const fence = this.init.fence;
    return this.apply(ops, fence === undefined ? undefined : { key: fence.key, token: fence.token() });
  }

  /**
   * write() under a fence of its own (one lease per merchant): applied only if the Redis key
   * `fence.key` (not prefixed) holds `fence.token`, else rejected with StoreFencedError.
   */
  writeFenced(ops: readonly StoreOp[], fence: { key: string; token: string | undefined }): Promise<void> {
    return this.apply(ops, fence);
  }

  range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    return this.guard.run('range', async () => {
      assertValidRange(query);
      const lower = Buffer.concat([INCLUSIVE, encodeKey(query.gte)]);
      const upper = Buffer.concat([EXCLUSIVE, encodeKey(query.lt)]);
      const reverse = query.reverse === true ? '1' : '0';
      const reply = await this.command(
        'range',
        this.redis().callBuffer('EVAL', RANGE_SCRIPT, 2, this.indexKey, this.valuesKey, lower, upper, query.limit, reverse),
      );
      const flat = reply as Buffer[];
      const entries: Array<[string, string]> = [];
      for (let index = 0; index < flat.length; index += 2) entries.push([decodeKey(flat[index]!), flat[index + 1]!.toString('utf8')]);
      return entries;
    });
  }

  private apply(ops: readonly StoreOp[], fence: { key: string; token: string | undefined } | undefined): Promise<void> {
    // Everything up to the EVAL runs synchronously in this call, so writes reach Redis, and
    // resolve, in call order.
    return this.guard.run('write', async () => {
      assertValidOps(ops);
      let held: HeldFence | undefined;
      if (fence !== undefined) {
        if (fence.token === undefined) throw new StoreFencedError(`${this.name}: write refused: this process holds no token for the fence ${fence.key}`);
        held = { key: fence.key, token: fence.token };
      }
      if (this.inFlightOps > 0 && this.inFlightOps + ops.length > this.maxInFlightOps) {
        throw new StoreError(`${this.name}: write queue full (${this.inFlightOps} ops not yet acknowledged)`);
      }
      this.inFlightOps += ops.length;
      try {
        const applied = this.sendWrite(ops, held);
        const waited = this.waitReplicas > 0 ? this.redis().call('WAIT', this.waitReplicas, this.waitTimeoutMs) : undefined;
        const [appliedOutcome, waitedOutcome] = await Promise.allSettled([applied, waited]);
        if (appliedOutcome.status === 'rejected') throw this.failure('write', appliedOutcome.reason);
        if (appliedOutcome.value === 0) {
          throw new StoreFencedError(`${this.name}: write refused: the fence ${held?.key} no longer holds this process's token`);
        }
        if (waitedOutcome.status === 'rejected') throw this.failure('write', waitedOutcome.reason);
        const reached = Number(waitedOutcome.value ?? this.waitReplicas);
        if (reached < this.waitReplicas) {
          throw new StoreError(`${this.name}: the write reached ${reached} of ${this.waitReplicas} replicas within ${this.waitTimeoutMs} ms (WAIT): not acknowledged`);
        }
      } finally {
        this.inFlightOps -= ops.length;
      }
    });
  }

  private sendWrite(ops: readonly StoreOp[], fence: HeldFence | undefined): Promise<unknown> {
    // One array, never spread into arguments: a large write would overflow the call stack.
    const args: Array<string | Buffer | number> =
      fence === undefined ? [WRITE_SCRIPT, 2, this.indexKey, this.valuesKey] : [WRITE_SCRIPT, 3, this.indexKey, this.valuesKey, fence.key, fence.token];
    for (const op of ops) {
      if (op.type === 'put') args.push('p', encodeKey(op.key), op.value);
      else args.push('d', encodeKey(op.key));
    }
    return this.redis().call('EVAL', args);
  }

  /** The command's reply, or a StoreError that says why Redis did not give one. */
  private async command<T>(operation: string, reply: Promise<T>): Promise<T> {
    try {
      return await reply;
    } catch (error) {
      throw this.failure(operation, error);
    }
  }

  /**
   * A reply error is Redis's own answer (out of memory, a key of the wrong type); anything else
   * means no answer came: the connection is down or closing, or the command timed out.
   */
  private failure(operation: string, error: unknown): StoreError {
    const message = error instanceof Error ? error.message : String(error);
    const connection = this.lastConnectionError === undefined ? '' : `; last connection error: ${this.lastConnectionError.message}`;
    const reason = error instanceof ReplyError ? `Redis answered ${message}` : `Redis is unreachable (${message}${connection})`;
    return new StoreError(`${this.name}: ${operation} failed: ${reason}`, { cause: error });
  }

  private redis(): Redis {
    assert(this.client !== undefined, 'RedisStore used before open()');
    return this.client;
  }
}

/** `host:port/db` of a Redis URL, without its credentials. */
function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '6379'}${parsed.pathname.length > 1 ? parsed.pathname : ''}`;
  } catch {
    return 'an unparsable URL';
  }
}
