import type { Redis } from 'ioredis';
import type { ProcessAddress, ProcessRecord } from '../cell/processes/coordination-port.js';
import type { SpeakerCoordination } from '../cell/processes/speaker-lease.js';
import { RedisCoordination } from './redis-coordination.js';

/**
 * The speaker lease of a cell in a mesh, in the cell's Redis (cell/processes/speaker-lease.ts),
 * beside the process leases of assembly/redis-coordination.ts. Keys, under the cell's prefix:
 *
 *     <prefix>speaker                    "<process id> <token>": the speaker, expiring (PX) with its lease
 *
 * The process leases, their tokens and addresses are those of RedisCoordination. The speaker
 * lease is renewed in the same script as the speaker's own lease, with the same TTL, and taken
 * only when the process it names no longer holds its lease with its token: so the old speaker's
 * writes are refused by the store's fence before a new speaker's first write.
 */
export class RedisSpeakerCoordination implements SpeakerCoordination {
  private readonly processes: RedisCoordination;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.processes = new RedisCoordination(redis, prefix);
  }

  /** The key whose value the store's fence compares with the token on every write. */
  leaseKey(processId: string): string {
    return this.processes.leaseKey(processId);
  }

  register(processId: string, ttlMs: number): Promise<number> {
    return this.processes.register(processId, ttlMs);
  }

  async renew(processId: string, token: number, speaking: boolean, address: ProcessAddress | undefined, ttlMs: number): Promise<boolean> {
    const published = address === undefined ? '' : `${token} ${address.ws} ${address.http}`;
    const renewed = await this.redis.eval(RENEW, 3, this.leaseKey(processId), `${this.prefix}addr/${processId}`, this.speakerKey(), String(token), ttlMs, published, speaking ? `${processId} ${token}` : '');
    return renewed === 1;
  }

  async takeSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean> {
    return (await this.redis.eval(TAKE, 2, this.speakerKey(), this.leaseKey(processId), String(token), `${processId} ${token}`, ttlMs, `${this.prefix}proc/`)) === 1;
  }

  async release(processId: string, token: number): Promise<void> {
    await this.redis.eval(RELEASE, 3, this.speakerKey(), this.leaseKey(processId), `${this.prefix}addr/${processId}`, `${processId} ${token}`, String(token));
  }

  async speaker(): Promise<ProcessRecord | undefined> {
    const holder = await this.redis.get(this.speakerKey());
    const [id, token] = (holder ?? '').split(' ');
    if (id === undefined || id === '' || token === undefined) return undefined;
    const [lease, published] = await this.redis.mget(this.leaseKey(id), `${this.prefix}addr/${id}`);
    const [addressToken, ws, http] = (published ?? '').split(' ');
    // Not live as that lease, or not listening yet.
    if (lease !== token || addressToken !== token || ws === undefined || http === undefined) return undefined;
    return { id, token: Number(token), ws, http };
  }

  private speakerKey(): string {
    return `${this.prefix}speaker`;
  }
}

// KEYS: own lease, own address, speaker; ARGV: token, ttl, address ('' keeps it), speaker value ('' for a standby).
const RENEW = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
if ARGV[4] ~= '' then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return 1`;

// KEYS: speaker, own lease; ARGV: token, speaker value, ttl, lease key prefix.
const TAKE = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] then return 1 end
if current then
  local holder, token = string.match(current, '^(%S+) (%d+)$')
  if holder and redis.call('GET', ARGV[4] .. holder) == token then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`;

// KEYS: speaker, own lease, own address; ARGV: speaker value, token.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2], KEYS[3]) end
return 0`;
