import { Redis } from 'ioredis';

/**
 * The write ledger of one RedisStore instance: a Redis hash, `<keyPrefix>w/<instance id>`, that
 * lets the instance learn, after a lost reply, whether its write applied, and make sure that a
 * write it gave up can never apply later.
 *
 * The instance numbers its writes 1, 2, 3... (ordinals, in the order it sends them) and each
 * write script, atomically with its ops, reads and moves the ledger:
 *   - `a`: the last ordinal a write script ran for (applied, or refused by its fence);
 *   - `v`: ordinals up to this one were given up (voided) by a reconciliation;
 *   - `r<n>`: write n was refused by its fence (rare: the lease was lost), so that a later
 *     write moving `a` past n does not make n look applied.
 * A script carrying ordinal n runs only if n > a and n > v, so a late copy of a write (held in
 * a proxy, a socket buffer) never applies once a later write or a reconciliation went by.
 * Writes of one instance reach Redis in ordinal order (one connection, and no new write is sent
 * while an earlier one is unsettled), so the ordinals a script ran for are exactly those <= a.
 *
 * Why a hash and not one "last applied ordinal" key: a key that a later write moved past n does
 * not say n applied (n may have been refused by its fence: hence `r<n>`), and giving up n alone
 * would let a late copy of n+1, sent behind it on the same connection, still apply: a
 * reconciliation gives up every ordinal sent so far, and `v` apart from `a` keeps its answer the
 * same when it is run again after its own reply was lost.
 *
 * The hash expires LEDGER_TTL_MS after the instance's last write, so a crashed instance leaves
 * nothing behind for long; a copy of a write delayed longer than that is not guarded against.
 */
export const LEDGER_TTL_MS = 7 * 24 * 3600 * 1000;

/**
 * The ledger's part of the write script: KEYS[3] is the ledger, ARGV[1] the ordinal, ARGV[2]
 * the TTL. Leaves `return 2` when the ordinal was already passed or voided (nothing applied).
 */
export const LEDGER_CHECK = `
local ordinal = tonumber(ARGV[1])
local marks = redis.call('HMGET', KEYS[3], 'a', 'v')
if ordinal <= (tonumber(marks[1]) or 0) or ordinal <= (tonumber(marks[2]) or 0) then return 2 end
redis.call('HSET', KEYS[3], 'a', ordinal)
redis.call('PEXPIRE', KEYS[3], ARGV[2])`;

/** The ledger's record of a write refused by its fence (run just before `return 0`). */
export const LEDGER_REFUSED = `redis.call('HSET', KEYS[3], 'r' .. ARGV[1], 1)`;

/**
 * Settles ordinals low..high: voids those no script ran for (v := high), so none can apply any
 * more, and answers which ran. KEYS: the ledger; ARGV: low, high, TTL. Returns { a, refused
 * ordinals in low..min(high, a) }. Idempotent: run again, it answers the same.
 */
const RECONCILE_SCRIPT = `#!lua
local low, high = tonumber(ARGV[1]), tonumber(ARGV[2])
local marks = redis.call('HMGET', KEYS[1], 'a', 'v')
local processed = tonumber(marks[1]) or 0
if high > (tonumber(marks[2]) or 0) then redis.call('HSET', KEYS[1], 'v', high) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local refused = {}
for ordinal = low, math.min(high, processed) do
  if redis.call('HEXISTS', KEYS[1], 'r' .. ordinal) == 1 then refused[#refused + 1] = ordinal end
end
return { processed, refused }`;

/** What a reconciliation learnt of ordinals low..high. */
export interface LedgerReading {
  readonly low: number;
  readonly high: number;
  /** Ordinals up to this one ran (applied, unless refused); those above it never will. */
  readonly processed: number;
  readonly refused: ReadonlySet<number>;
  /** With replicas to wait for: whether they acknowledged everything up to the reconciliation. */
  readonly replicated: boolean;
}

export interface ReconcileInit {
  url: string;
  ledgerKey: string;
  low: number;
  high: number;
  waitReplicas: number;
  waitTimeoutMs: number;
  /** Tries again, a fresh connection each time, for this long; then throws the last error. */
  timeoutMs: number;
}

const RETRY_DELAY_MS = 100;

/**
 * Reconciles on a fresh connection (the store's own one may be the one that broke, and ioredis
 * would not resend on it anyway), trying again until `timeoutMs` has passed.
 */
export async function reconcileWrites(init: ReconcileInit): Promise<LedgerReading> {
  const deadline = performance.now() + init.timeoutMs;
  for (;;) {
    const remainingMs = Math.max(1, Math.round(deadline - performance.now()));
    try {
      return await reconcileOnce(init, remainingMs);
    } catch (error) {
      if (performance.now() + RETRY_DELAY_MS >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
    }
  }
}

async function reconcileOnce(init: ReconcileInit, timeoutMs: number): Promise<LedgerReading> {
  const client = new Redis(init.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs + (init.waitReplicas > 0 ? init.waitTimeoutMs : 0),
    connectionName: 'cellmesh-store-reconcile',
  });
  let lastError: Error | undefined;
  client.on('error', (error: Error) => {
    lastError = error;
  });
  try {
    await client.connect().catch((error: unknown) => {
      throw lastError ?? error;
    });
    const reply = (await client.call('EVAL', [RECONCILE_SCRIPT, 1, init.ledgerKey, init.low, init.high, LEDGER_TTL_MS])) as [number, number[]];
    const [processed, refused] = reply;
    let replicated = true;
    if (init.waitReplicas > 0 && processed >= init.low) {
      // WAIT counts this connection's writes, the script's own last: so it covers the writes before it.
      replicated = Number(await client.call('WAIT', init.waitReplicas, init.waitTimeoutMs)) >= init.waitReplicas;
    }
    return { low: init.low, high: init.high, processed, refused: new Set(refused), replicated };
  } finally {
    client.disconnect();
  }
}
