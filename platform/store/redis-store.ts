import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Redis, ReplyError } from 'ioredis';
import { decodeKey, encodeKey } from './key-codec.js';
import { checkRedisDurability, RedisDurabilityError, type RedisDurabilityProblem } from './redis-durability.js';
import { StoreError, StoreFencedError, type RangeQuery, type Store, type StoreOp } from './store.js';
import { StoreGuard, assertValidOps, assertValidRange } from './store-guard.js';
import { LEDGER_CHECK, LEDGER_REFUSED, LEDGER_TTL_MS, reconcileWrites, type LedgerReading } from './redis-write-ledger.js';

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
  /** Prepended to the store's Redis keys, so cells can share a Redis: `cellmesh:<cell id>:`. */
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
  /**
   * How long a write whose reply was lost (connection closed, timeout) tries to learn, on fresh
   * connections, whether it applied, before it fails as ambiguous; default commandTimeoutMs.
   */
  reconcileTimeoutMs?: number | undefined;
}

const DEFAULTS = {
  waitTimeoutMs: 1_000,
  commandTimeoutMs: 10_000,
  maxInFlightOps: 65_536,
  /** Reconnection attempts back off 100 ms a try, up to this, for as long as Redis is away. */
  reconnectDelayMsMax: 1_000,
} as const;

/**
 * Applies a write, all or nothing. KEYS: index (sorted set), values (hash), the instance's write
 * ledger (redis-write-ledger.ts), and the fence key when fenced; ARGV: the write's ordinal, the
 * ledger's TTL, the fence token when fenced, then 'p' key value or 'd' key per op. The `#!lua`
 * shebang makes Redis refuse the whole script up front when it is out of memory, so a write is
 * never cut halfway (Redis does not roll a script back). Returns 1 when applied, 0 when fenced
 * off, 2 when the ledger had given the ordinal up (a late copy): nothing applied.
 */
const WRITE_SCRIPT = `#!lua
${LEDGER_CHECK}
local at = 3
if #KEYS == 4 then
  if redis.call('GET', KEYS[4]) ~= ARGV[3] then
    ${LEDGER_REFUSED}
    return 0
  end
  at = 4
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

/** A write sent to Redis under its ordinal, and its replies (EVAL, then WAIT when waited). */
interface SentWrite {
  readonly ordinal: number;
  readonly replies: Promise<[PromiseSettledResult<unknown>, PromiseSettledResult<unknown>]>;
}

const INCLUSIVE = Buffer.from('[');
const EXCLUSIVE = Buffer.from('(');

/**
 * The Store of a cell on Redis, through ioredis.
 *
 * Layout, under `keyPrefix`: a sorted set `index` whose members are the keys (all with score
 * 0, so ZRANGE BYLEX walks them in byte order), a hash `values` from key to value, and the
 * write ledger of this instance, `w/<instance id>` (redis-write-ledger.ts). Keys are
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
 * Failures: reads and writes called while the connection is down fail at once with StoreError
 * (nothing sent), while ioredis reconnects in the background; the store works again once Redis
 * is back. A write whose reply is lost (its connection closed, or commandTimeoutMs passed) may
 * have been applied: it is settled through the instance's write ledger (redis-write-ledger.ts)
 * on a fresh connection, for up to reconcileTimeoutMs, and answered as it turned out: resolved
 * when applied, rejected when not (and then voided: a late copy of it can never apply). Writes
 * behind it are answered after it and none is sent until it is settled. Only when Redis stays
 * out of reach that long does it reject with `ambiguous: true`; so does a write applied but not
 * acknowledged by `waitReplicas` replicas (a later write that is acknowledged implies it is
 * replicated too, WAIT counting everything before it). Redis Cluster is not supported (the
 * keys would need one hash slot).
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
  /** This instance's write ledger (redis-write-ledger.ts); its writes are numbered from 1. */
  private readonly ledgerKey: string;
  private readonly reconcileTimeoutMs: number;
  private lastOrdinal = 0;
  /** Ordinals sent whose outcome is unknown (replies lost): no write is sent until settled. */
  private unsettled: { low: number; high: number } | undefined;
  private reconciliation: Promise<LedgerReading> | undefined;
  /**
   * What reconciliations learnt, kept until their writes are answered. Only the first reading
   * that covers an ordinal is exact: it was taken before any later ordinal was sent.
   */
  private readings: LedgerReading[] = [];
  /** The last reconciliation failed: unanswered writes up to this ordinal are ambiguous. */
  private failedThrough: number | undefined;
  private reconcileFailures = 0;
  /** Writes waiting to be sent once settled, and the last of them (they are sent in order). */
  private deferredSends = 0;
  private sendChain: Promise<void> = Promise.resolve();
  private previousAnswer: Promise<void> = Promise.resolve();

  constructor(private readonly init: RedisStoreInit) {
    this.name = `Redis store at ${describeUrl(init.url)} (prefix ${init.keyPrefix})`;
    this.guard = new StoreGuard(this.name);
    this.indexKey = `${init.keyPrefix}index`;
    this.valuesKey = `${init.keyPrefix}values`;
    this.waitReplicas = init.waitReplicas ?? 0;
    this.waitTimeoutMs = init.waitTimeoutMs ?? DEFAULTS.waitTimeoutMs;
    this.maxInFlightOps = init.maxInFlightOps ?? DEFAULTS.maxInFlightOps;
    this.ledgerKey = `${init.keyPrefix}w/${randomUUID()}`;
    this.reconcileTimeoutMs = init.reconcileTimeoutMs ?? init.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs;
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
    // Everything up to the EVAL runs synchronously in this call (unless an earlier write is
    // being settled), so writes reach Redis in call order; each is answered after the one before.
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
        const sending = this.unsettled === undefined && this.deferredSends === 0 ? this.trySend(ops, held) : this.sendOnceSettled(ops, held);
        const answer = this.answer(this.previousAnswer, sending, held);
        this.previousAnswer = answer.then(noop, noop);
        await answer;
      } finally {
        this.inFlightOps -= ops.length;
      }
    });
  }

  /** Sends the write now: its EVAL and, with replicas, its WAIT, pipelined on the connection. */
  private send(ops: readonly StoreOp[], fence: HeldFence | undefined): SentWrite {
    const client = this.redis();
    // Not connected: refused before anything is sent, so nothing is applied (ioredis keeps no
    // offline queue either).
    if (client.status !== 'ready') throw this.failure('write', new Error(`the connection is ${client.status}`));
    this.lastOrdinal += 1;
    const ordinal = this.lastOrdinal;
    // One array, never spread into arguments: a large write would overflow the call stack.
    const args: Array<string | Buffer | number> = [WRITE_SCRIPT, fence === undefined ? 3 : 4, this.indexKey, this.valuesKey, this.ledgerKey];
    if (fence !== undefined) args.push(fence.key);
    args.push(ordinal, LEDGER_TTL_MS);
    if (fence !== undefined) args.push(fence.token);
    for (const op of ops) {
      if (op.type === 'put') args.push('p', encodeKey(op.key), op.value);
      else args.push('d', encodeKey(op.key));
    }
    const applied = client.call('EVAL', args);
    const waited = this.waitReplicas > 0 ? client.call('WAIT', this.waitReplicas, this.waitTimeoutMs) : undefined;
    return { ordinal, replies: Promise.allSettled([applied, waited]) };
  }

  /** send(), its failure (nothing sent) as a rejected promise, answered in turn like the others. */
  private trySend(ops: readonly StoreOp[], fence: HeldFence | undefined): SentWrite | Promise<SentWrite> {
    try {
      return this.send(ops, fence);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * A write called while an earlier one is unsettled waits, unsent, for the reconciliation
   * (its ordinal must not reach Redis before the unsettled ones are voided or found applied).
   * If that reconciliation fails, the write is refused unsent: nothing applied.
   */
  private sendOnceSettled(ops: readonly StoreOp[], fence: HeldFence | undefined): Promise<SentWrite> {
    this.deferredSends += 1;
    const failuresAtCall = this.reconcileFailures;
    const previous = this.sendChain;
    const sending = (async () => {
      try {
        await previous;
        while (this.unsettled !== undefined) {
          // One try per write: a failure seen since the call refuses it (no second wait).
          if (this.reconcileFailures > failuresAtCall && this.reconciliation === undefined) {
            throw new StoreError(`${this.name}: write refused (not sent): an earlier write is still unsettled, Redis could not be reached to settle it`);
          }
          await this.reconcileUnsettled().catch((error: unknown) => {
            throw new StoreError(`${this.name}: write refused (not sent): an earlier write is still unsettled`, { cause: error });
          });
        }
        return this.send(ops, fence);
      } finally {
        this.deferredSends -= 1;
      }
    })();
    this.sendChain = sending.then(noop, noop);
    return sending;
  }

  /** The write's answer, given after the previous write's (writes are answered in call order). */
  private async answer(previous: Promise<void>, sending: SentWrite | Promise<SentWrite>, fence: HeldFence | undefined): Promise<void> {
    let sent: SentWrite;
    try {
      sent = sending instanceof Promise ? await sending : sending;
    } catch (error) {
      await previous;
      throw error;
    }
    const [appliedOutcome, waitedOutcome] = await sent.replies;
    const definite = appliedOutcome.status === 'fulfilled' || appliedOutcome.reason instanceof ReplyError;
    // Stop sending at once: a later write must not reach Redis before this one is settled.
    if (!definite) this.markUnsettled(sent.ordinal);
    await previous;
    // Every write before this one is answered now (ordinals go in call order).
    if (this.readings.length > 0) this.readings = this.readings.filter((reading) => reading.high >= sent.ordinal);
    if (appliedOutcome.status === 'rejected') {
      // Redis's own answer (out of memory, ...) is definite: the script did not run.
      if (definite) throw this.failure('write', appliedOutcome.reason);
      return this.settleUnanswered(sent.ordinal, fence, appliedOutcome.reason);
    }
    if (appliedOutcome.value === 0) throw this.fencedOff(fence);
    if (appliedOutcome.value === 2) throw new StoreError(`${this.name}: write ${sent.ordinal} refused: the store had already given it up`);
    if (waitedOutcome.status === 'rejected') {
      throw this.notReplicated(`Redis did not answer its WAIT (${errorMessage(waitedOutcome.reason)})`, waitedOutcome.reason);
    }
    const reached = Number(waitedOutcome.value ?? this.waitReplicas);
    if (reached < this.waitReplicas) {
      throw this.notReplicated(`the write reached ${reached} of ${this.waitReplicas} replicas within ${this.waitTimeoutMs} ms (WAIT)`);
    }
  }

  /** A write whose reply never came (connection lost, timeout): the ledger says what became of it. */
  private async settleUnanswered(ordinal: number, fence: HeldFence | undefined, reason: unknown): Promise<void> {
    let reading: LedgerReading | undefined;
    // Until a reading covers it: a reconciliation under way may have started on a narrower range.
    while ((reading = this.readingOf(ordinal)) === undefined) {
      if (this.failedThrough !== undefined && ordinal <= this.failedThrough && this.reconciliation === undefined) {
        throw this.failure('write', reason, ' and could not be settled since: it may have been applied', true);
      }
      try {
        await this.reconcileUnsettled();
      } catch (error) {
        throw this.failure('write', reason, ` and could not be settled within ${this.reconcileTimeoutMs} ms (${errorMessage(error)}): it may have been applied`, true);
      }
    }
    if (ordinal > reading.processed) {
      throw this.failure('write', reason, '; it had not reached Redis and was given up: it will never apply');
    }
    if (reading.refused.has(ordinal)) throw this.fencedOff(fence);
    if (!reading.replicated) throw this.notReplicated(`the write (its reply lost) reached fewer than ${this.waitReplicas} replicas within ${this.waitTimeoutMs} ms (WAIT)`);
  }

  /** Ordinals from `ordinal` to the last one sent are unsettled: no write is sent until they are. */
  private markUnsettled(ordinal: number): void {
    if (this.readingOf(ordinal) !== undefined) return;
    const low = Math.min(ordinal, this.unsettled?.low ?? ordinal);
    this.unsettled = { low, high: Math.max(this.lastOrdinal, this.unsettled?.high ?? 0) };
  }

  private readingOf(ordinal: number): LedgerReading | undefined {
    return this.readings.find((reading) => reading.low <= ordinal && ordinal <= reading.high);
  }

  /** Settles the unsettled ordinals on a fresh connection; one reconciliation at a time. */
  private reconcileUnsettled(): Promise<LedgerReading> {
    if (this.reconciliation !== undefined) return this.reconciliation;
    const range = this.unsettled;
    assert(range !== undefined, 'reconcileUnsettled() with nothing unsettled');
    const reconciliation = reconcileWrites({
      url: this.init.url,
      ledgerKey: this.ledgerKey,
      low: range.low,
      high: range.high,
      waitReplicas: this.waitReplicas,
      waitTimeoutMs: this.waitTimeoutMs,
      timeoutMs: this.reconcileTimeoutMs,
    }).then(
      (reading) => {
        this.readings.push(reading);
        this.failedThrough = undefined;
        if (this.unsettled !== undefined && this.unsettled.low >= reading.low && this.unsettled.high <= reading.high) this.unsettled = undefined;
        return reading;
      },
      (error: unknown) => {
        this.reconcileFailures += 1;
        this.failedThrough = range.high;
        throw error;
      },
    );
    this.reconciliation = reconciliation;
    const forget = (): void => {
      if (this.reconciliation === reconciliation) this.reconciliation = undefined;
    };
    reconciliation.then(forget, forget);
    return reconciliation;
  }

  private fencedOff(fence: HeldFence | undefined): StoreFencedError {
    return new StoreFencedError(`${this.name}: write refused: the fence ${fence?.key} no longer holds this process's token`);
  }

  /** Applied on the primary, not acknowledged by enough replicas: a failover may lose it. */
  private notReplicated(why: string, cause?: unknown): StoreError {
    return new StoreError(`${this.name}: write applied on the primary but not acknowledged: ${why}; a failover may lose it`, { cause, ambiguous: true });
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
  private failure(operation: string, error: unknown, outcome = '', ambiguous = false): StoreError {
    const message = errorMessage(error);
    const connection = this.lastConnectionError === undefined ? '' : `; last connection error: ${this.lastConnectionError.message}`;
    const reason = error instanceof ReplyError ? `Redis answered ${message}` : `Redis is unreachable (${message}${connection})`;
    return new StoreError(`${this.name}: ${operation} failed: ${reason}${outcome}`, { cause: error, ambiguous });
  }

  private redis(): Redis {
    assert(this.client !== undefined, 'RedisStore used before open()');
    return this.client;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function noop(): void {}

/** `host:port/db` of a Redis URL, without its credentials. */
function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '6379'}${parsed.pathname.length > 1 ? parsed.pathname : ''}`;
  } catch {
    return 'an unparsable URL';
  }
}
