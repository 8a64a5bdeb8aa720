import type { Redis } from 'ioredis';
import { merchantKey, type MerchantRef, type OwnerRecord, type ProcessAddress, type ProcessCoordination, type ProcessRecord } from '../cell/processes/coordination-port.js';

/**
 * The processes of a cell coordinating through its Redis (cell/processes/coordination-port.ts).
 * Keys, under the cell's key prefix:
 *
 *     <prefix>fence                      the counter fencing tokens are taken from (INCR)
 *     <prefix>proc/<process id>          a process's lease: its token, expiring (PX)
 *     <prefix>addr/<process id>          "<token> <ws url> <http url>", expiring with the lease
 *     <prefix>owner/<tenant>/<merchant>  "<process id> <token>": the merchant's owner
 *     <prefix>pin/<tenant>/<merchant>    "<process id>": the process the merchant goes to (a move out), expiring
 *
 * Every step that reads and writes is one Lua script, so two processes never both win.
 */
export class RedisCoordination implements ProcessCoordination {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** The key whose value the store's fence compares with the token on every write. */
  leaseKey(processId: string): string {
    return `${this.prefix}proc/${processId}`;
  }

  async register(processId: string, ttlMs: number): Promise<number> {
    const token = await this.redis.eval(REGISTER, 2, `${this.prefix}fence`, this.leaseKey(processId), ttlMs);
    return Number(token);
  }

  async renew(processId: string, token: number, address: ProcessAddress | undefined, ttlMs: number): Promise<'renewed' | 'expired' | 'replaced'> {
    const published = address === undefined ? '' : `${token} ${address.ws} ${address.http}`;
    const answer = await this.redis.eval(RENEW, 2, this.leaseKey(processId), `${this.prefix}addr/${processId}`, String(token), ttlMs, published);
    return answer === 1 ? 'renewed' : answer === 0 ? 'expired' : 'replaced';
  }

  async unregister(processId: string, token: number): Promise<void> {
    await this.redis.eval(UNREGISTER, 2, this.leaseKey(processId), `${this.prefix}addr/${processId}`, String(token));
  }

  async liveProcesses(): Promise<ProcessRecord[]> {
    const leasePrefix = `${this.prefix}proc/`;
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await this.redis.scan(cursor, 'MATCH', `${globEscaped(leasePrefix)}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    if (keys.length === 0) return [];
    const ids = keys.map((key) => key.slice(leasePrefix.length));
    const values = await this.redis.mget(...ids.map((id) => `${this.prefix}addr/${id}`));
    const tokens = await this.redis.mget(...keys);
    const live: ProcessRecord[] = [];
    for (const [index, id] of ids.entries()) {
      const [token, ws, http] = (values[index] ?? '').split(' ');
      // An address of an earlier lease of the same id, or none yet: not reachable as this lease.
      if (token === undefined || token !== tokens[index] || ws === undefined || http === undefined) continue;
      live.push({ id, token: Number(token), ws, http });
    }
    return live;
  }

  async owners(merchants: readonly MerchantRef[]): Promise<Array<OwnerRecord | undefined>> {
    if (merchants.length === 0) return [];
    const values = await this.redis.mget(...merchants.map((merchant) => this.ownerKey(merchant)));
    return values.map((value) => {
      const [processId, token] = (value ?? '').split(' ');
      return processId === undefined || processId === '' || token === undefined ? undefined : { processId, token: Number(token) };
    });
  }

  async claim(merchant: MerchantRef, self: OwnerRecord): Promise<boolean> {
    const claimed = await this.redis.eval(CLAIM, 2, this.ownerKey(merchant), this.leaseKey(self.processId), String(self.token), `${self.processId} ${self.token}`, `${this.prefix}proc/`);
    return claimed === 1;
  }

  async release(merchant: MerchantRef, self: OwnerRecord): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.ownerKey(merchant), `${self.processId} ${self.token}`);
  }

  async pins(merchants: readonly MerchantRef[]): Promise<Array<string | undefined>> {
    if (merchants.length === 0) return [];
    const values = await this.redis.mget(...merchants.map((merchant) => this.pinKey(merchant)));
    return values.map((value) => (value === null || value === '' ? undefined : value));
  }

  async pin(merchant: MerchantRef, processId: string, ttlMs: number): Promise<void> {
    await this.redis.set(this.pinKey(merchant), processId, 'PX', ttlMs);
  }

  async unpin(merchant: MerchantRef, processId: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.pinKey(merchant), processId);
  }

  private pinKey(merchant: MerchantRef): string {
    return `${this.prefix}pin/${merchantKey(merchant)}`;
  }

  private ownerKey(merchant: MerchantRef): string {
    return `${this.prefix}owner/${merchantKey(merchant)}`;
  }
}

/** SCAN's MATCH is a glob: a prefix with `*`, `?`, `[` or `\` must match literally. */
function globEscaped(text: string): string {
  return text.replace(/[*?[\]\\]/g, (character) => `\\${character}`);
}

const REGISTER = `
local token = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return token`;

const RENEW = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current ~= ARGV[1] then return 2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
return 1`;

const UNREGISTER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 0`;

// KEYS: owner key, claimer's lease; ARGV: claimer's token, owner value, lease key prefix.
const CLAIM = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] then return 1 end
if current then
  local owner, token = string.match(current, '^(%S+) (%d+)$')
  if owner and redis.call('GET', ARGV[3] .. owner) == token then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`;
