/**
 * The catalogue of a cell of several processes over a real Redis (cell/processes/cell-wide-catalogue.ts):
 * changes one at a time cell-wide, a version every process follows, and the owners' rounds that
 * let removed merchants go and claim new ones. test/scaled-cell.test.ts runs it in real processes.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RedisCatalogueCoordination } from '../assembly/redis-catalogue-coordination.js';
import { RedisCoordination } from '../assembly/redis-coordination.js';
import { CellWideCatalogue } from '../cell/processes/cell-wide-catalogue.js';
import type { MerchantRef } from '../cell/processes/coordination-port.js';
import { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { SystemClock } from '../platform/clock.js';
import { ManualClock } from '../platform/manual-clock.js';
import { silentLogger } from '../platform/logger.js';
import { SeededRandom } from '../platform/random.js';
import { redisServerMissing } from '../testing/redis-server.js';
import { RecordingHost } from './recording-host.js';
import { useRedisServer } from './redis-suite.js';

const missing = redisServerMissing();
const TTL_MS = 400;
const RENEW_MS = 100;

const realWait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(missing !== undefined)(`the catalogue of a cell of several processes over a real Redis${missing === undefined ? '' : ` (skipped: ${missing})`}`, () => {
  const server = useRedisServer();

  const redis = (): Redis => server.client();

  function cellWide(prefix: string, processId: string, ownerIsLive: (merchant: MerchantRef) => Promise<boolean> = async () => false): CellWideCatalogue {
    return new CellWideCatalogue({
      processId,
      coordination: new RedisCatalogueCoordination(redis(), prefix),
      clock: new SystemClock(),
      random: new SeededRandom(processId.length),
      logger: silentLogger,
      renewIntervalMs: RENEW_MS,
      leaseTtlMs: TTL_MS,
      ownerIsLive,
    });
  }

  it('runs the changes of two processes one after the other, never interleaved', async () => {
    const first = cellWide('one-at-a-time:', 'p1');
    const second = cellWide('one-at-a-time:', 'p2');
    const steps: string[] = [];
    const change = (name: string) => async (): Promise<void> => {
      steps.push(`${name} starts`);
      await realWait(60);
      steps.push(`${name} ends`);
    };
    await Promise.all([first.exclusive(change('a')), second.exclusive(change('b')), first.exclusive(change('c'))]);
    expect(steps).toHaveLength(6);
    for (let index = 0; index < 6; index += 2) expect(steps[index + 1]).toBe(steps[index]!.replace('starts', 'ends'));
    // The lock is free again, also after a change that failed.
    await expect(second.exclusive(async () => Promise.reject(new Error('refused')))).rejects.toThrow('refused');
    expect(await first.exclusive(async () => 'taken')).toBe('taken');
  });

  it('follows the store when the version moved, and again next round when the catalogue was busy', async () => {
    const changer = cellWide('follow:', 'p1');
    const follower = cellWide('follow:', 'p2');
    let follows = 0;
    let busy = false;
    const follow = async (): Promise<boolean> => {
      if (busy) return false;
      follows++;
      return true;
    };
    await follower.followRound(follow);
    await follower.followRound(follow);
    expect(follows).toBe(1);
    await changer.changed();
    busy = true;
    await follower.followRound(follow);
    expect(follows).toBe(1);
    busy = false;
    await follower.followRound(follow);
    await follower.followRound(follow);
    expect(follows).toBe(2);
  });

  it("waits for a removed merchant's owner to let it go, within a bound", async () => {
    let owned = 3;
    const catalogue = cellWide('let-go:', 'p1', async () => owned-- > 0);
    const startedMs = Date.now();
    await catalogue.merchantLetGo('mall', 'm1');
    expect(owned).toBe(-1);
    const stuck = cellWide('let-go:', 'p1', async () => true);
    await stuck.merchantLetGo('mall', 'm1');
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(TTL_MS + 2 * RENEW_MS);
  });

  it('a round follows the catalogue first, then lets a removed merchant go (its owner record deleted) and claims a new one', async () => {
    const clock = new ManualClock();
    const host = new RecordingHost();
    const coordinator = new ProcessCoordinator({ processId: 'p1', coordination: new RedisCoordination(redis(), 'rounds:'), clock, logger: silentLogger, leaseTtlMs: TTL_MS, renewIntervalMs: RENEW_MS });
    await coordinator.register();
    let merchants: MerchantRef[] = [
      { tenant: 'mall', merchant: 'm1' },
      { tenant: 'mall', merchant: 'm2' },
    ];
    let next: MerchantRef[] | undefined;
    // The catalogue changes when it is followed, as TenantCatalogue.followStore does.
    const follow = async (): Promise<void> => {
      if (next !== undefined) merchants = next;
      next = undefined;
    };
    await coordinator.startOwning({ ws: 'ws://p1.invalid/v1/ws', http: 'http://p1.invalid' }, host, () => merchants, follow);
    expect([...host.hosted].sort()).toEqual(['mall/m1', 'mall/m2']);
    next = [
      { tenant: 'mall', merchant: 'm2' },
      { tenant: 'mall', merchant: 'm3' },
    ];
    clock.advance(RENEW_MS);
    for (let step = 0; step < 30 && host.dropped.length === 0; step++) await realWait(20);
    expect([...host.hosted].sort()).toEqual(['mall/m2']);
    expect(host.dropped).toEqual(['mall/m1']);
    // A merchant listed lately is claimed once it has been listed for a lease period (coordinator's grace), round by round.
    for (let round = 0; round < 2 * Math.ceil(TTL_MS / RENEW_MS) && !host.hosted.has('mall/m3'); round++) {
      clock.advance(RENEW_MS);
      await realWait(40);
    }
    expect([...host.hosted].sort()).toEqual(['mall/m2', 'mall/m3']);
    expect(await coordinator.ownerIsLive({ tenant: 'mall', merchant: 'm1' })).toBe(false);
    expect(await coordinator.ownerIsLive({ tenant: 'mall', merchant: 'm3' })).toBe(true);
    expect(coordinator.liveSiblings()).toEqual([]);
    await coordinator.stop();
  });
});
