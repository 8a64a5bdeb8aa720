import type { Redis } from 'ioredis';
import type { ProcessRecord } from '../cell/processes/coordination-port.js';
import type { SpeakerCoordination } from '../cell/processes/speaker-lease.js';

/**
 * The speaker lease of a cell in a mesh, in the cell's Redis (cell/processes/speaker-lease.ts),
 * beside the process leases of assembly/redis-coordination.ts. Keys, under the cell's prefix:
 *
 *     <prefix>speaker                    "<process id> <token>": the speaker, expiring (PX)
 *
 * The speaker lease stands on the speaker's process lease (`<prefix>proc/<id>` holding the same
 * token): it is renewed only while that holds, and taken only when the process it names no
 * longer holds its lease with its token, so the old speaker's writes are refused by the store's
 * fence before a new speaker's first write.
 */
export class RedisSpeakerCoordination implements SpeakerCoordination {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async takeSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean> {
    return (await this.redis.eval(TAKE, 2, this.speakerKey(), this.leaseKey(processId), String(token), `${processId} ${token}`, ttlMs, `${this.prefix}proc/`)) === 1;
  }

  async renewSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean> {
    return (await this.redis.eval(RENEW, 2, this.speakerKey(), this.leaseKey(processId), String(token), `${processId} ${token}`, ttlMs)) === 1;
  }

  async releaseSpeaker(processId: string, token: number): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.speakerKey(), `${processId} ${token}`);
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

  private leaseKey(processId: string): string {
    return `${this.prefix}proc/${processId}`;
  }

  private speakerKey(): string {
    return `${this.prefix}speaker`;
  }
}

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

// KEYS: speaker, own lease; ARGV: token, speaker value, ttl.
const RENEW = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

// KEYS: speaker; ARGV: speaker value.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`;
