import type { Redis } from 'ioredis';

/**
 * Whether a Redis can keep the Store port's durable ack: a write acknowledged to the cell
 * survives a `kill -9` of Redis (and of the machine, short of the disk).
 *
 * That needs, on the server the cell writes to:
 * - `appendonly yes` and `appendfsync always`: Redis appends every write to its AOF and fsyncs
 *   it before replying (`everysec` loses up to a second of acknowledged writes, `no` more);
 * - an eviction policy that never drops our keys (`noeviction` or a `volatile-*` one: the
 *   store's keys have no expiry), since an evicted message is a lost message;
 * - when the server has replicas that a failover could promote, writes that wait for them
 *   (`WAIT`, store.redis.waitReplicas), or the promoted replica may lack acknowledged writes;
 *   and at least that many replicas connected, or every write would fail;
 * - and of course a primary: a replica refuses writes, or drops them at its next resync.
 */
export interface RedisDurabilityProblem {
  /** The Redis setting or the cell option at fault. */
  readonly setting: string;
  /** What was found, in words. */
  readonly found: string;
  /** How to fix it. */
  readonly fix: string;
}

export interface RedisDurabilityOptions {
  /** Replicas each write waits for with WAIT (store.redis.waitReplicas). */
  readonly waitReplicas: number;
}

const WEAK_FLAG = 'store.redis.acceptWeakDurability: true';

/** The problems that keep `client`'s server from holding the durable ack; empty when none. */
export async function checkRedisDurability(client: Redis, options: RedisDurabilityOptions): Promise<RedisDurabilityProblem[]> {
  const problems: RedisDurabilityProblem[] = [];
  const config = await readConfig(client, ['appendonly', 'appendfsync', 'maxmemory-policy']);
  if (config === undefined) {
    problems.push({
      setting: 'CONFIG',
      found: 'CONFIG GET is disabled on this Redis (renamed or not permitted, as managed services do), so appendonly and appendfsync cannot be checked',
      fix: `make sure the server runs with appendonly yes and appendfsync always, then set ${WEAK_FLAG} to start without the check`,
    });
  } else {
    if (config.get('appendonly') !== 'yes') {
      problems.push({
        setting: 'appendonly',
        found: `appendonly is ${config.get('appendonly') ?? 'unset'}: acknowledged writes live only in memory until the next snapshot`,
        fix: 'run Redis with appendonly yes and appendfsync always (redis.conf, or CONFIG SET appendonly yes)',
      });
    }
    const appendfsync = config.get('appendfsync');
    if (appendfsync !== 'always') {
      problems.push({
        setting: 'appendfsync',
        found: `appendfsync is ${appendfsync ?? 'unset'}: Redis replies before the write is on disk, so a crash loses ${appendfsync === 'everysec' ? 'up to a second of acknowledged writes' : 'acknowledged writes'}`,
        fix: 'run Redis with appendfsync always (redis.conf, or CONFIG SET appendfsync always)',
      });
    }
    const eviction = config.get('maxmemory-policy');
    if (eviction !== undefined && eviction.startsWith('allkeys-')) {
      problems.push({
        setting: 'maxmemory-policy',
        found: `maxmemory-policy is ${eviction}: when memory runs out Redis deletes keys, the cell's messages among them`,
        fix: 'run Redis with maxmemory-policy noeviction (writes then fail when memory is full, and are not acknowledged)',
      });
    }
  }
  const { role, replicas } = await replication(client);
  if (role !== 'master') {
    problems.push({
      setting: 'replicaof',
      found: `this Redis is a replica (role ${role}): it refuses writes, or loses them at its next synchronisation`,
      fix: 'point store.redis.url at the primary',
    });
  }
  if (replicas > 0 && options.waitReplicas === 0) {
    problems.push({
      setting: 'store.redis.waitReplicas',
      found: `this Redis has ${replicas} replica(s) but writes do not wait for them: a failover to one may lose acknowledged writes`,
      fix: 'set store.redis.waitReplicas to the number of replicas a write must reach before it is acknowledged',
    });
  }
  if (options.waitReplicas > replicas) {
    problems.push({
      setting: 'store.redis.waitReplicas',
      found: `writes wait for ${options.waitReplicas} replica(s) but ${replicas} are connected: every write would fail`,
      fix: `connect the replicas, or lower store.redis.waitReplicas to ${replicas}`,
    });
  }
  return problems;
}

/** The problems as one message, each with its fix, for a refusal at start or a warning. */
export function describeDurabilityProblems(problems: readonly RedisDurabilityProblem[]): string {
  return problems.map((problem) => `${problem.found}; fix: ${problem.fix}`).join('. ');
}

/** The refusal to open a store on a Redis that cannot keep the durable ack. */
export class RedisDurabilityError extends Error {
  /** `server` names the Redis (host:port, never its password). */
  constructor(
    readonly problems: readonly RedisDurabilityProblem[],
    server: string,
  ) {
    super(
      `the Redis at ${server} cannot keep the durable ack: ${describeDurabilityProblems(problems)}. ` +
        `To run anyway, knowing that acknowledged messages may be lost, set ${WEAK_FLAG}`,
    );
    this.name = 'RedisDurabilityError';
  }
}

/** CONFIG GET of `names`, or undefined when the server refuses CONFIG (renamed, ACL). */
async function readConfig(client: Redis, names: readonly string[]): Promise<Map<string, string> | undefined> {
  let reply: unknown;
  try {
    reply = await client.call('CONFIG', 'GET', ...names);
  } catch (error) {
    if (isRefusedCommand(error)) return undefined;
    throw error;
  }
  const pairs = reply as string[];
  const config = new Map<string, string>();
  for (let index = 0; index + 1 < pairs.length; index += 2) config.set(pairs[index]!, pairs[index + 1]!);
  return config;
}

async function replication(client: Redis): Promise<{ role: string; replicas: number }> {
  const info = String(await client.call('INFO', 'replication'));
  const role = /^role:(\w+)/m.exec(info)?.[1] ?? 'unknown';
  const replicas = /^connected_slaves:(\d+)/m.exec(info)?.[1];
  return { role, replicas: replicas === undefined ? 0 : Number(replicas) };
}

function isRefusedCommand(error: unknown): boolean {
  const message = error instanceof Error ? error.message : '';
  return /unknown command|NOPERM|no permissions/i.test(message);
}
