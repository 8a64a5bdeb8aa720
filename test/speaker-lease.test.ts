import { describe, expect, it } from 'vitest';
import { RedisCoordination } from '../assembly/redis-coordination.js';
import { RedisSpeakerCoordination } from '../assembly/redis-speaker-coordination.js';
import { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { SpeakerLease } from '../cell/processes/speaker-lease.js';
import { ManualClock } from '../platform/manual-clock.js';
import { silentLogger } from '../platform/logger.js';
import { RedisStore } from '../platform/store/redis-store.js';
import { redisServerMissing } from '../testing/redis-server.js';
import { useRedisServer } from './redis-suite.js';

const missing = redisServerMissing();
const TTL_MS = 400;
const RENEW_MS = 100;

const realWait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Member {
  readonly clock: ManualClock;
  readonly coordinator: ProcessCoordinator;
  readonly lease: SpeakerLease;
  readonly lost: string[];
}

/** A process of a cell that owns no merchant: only its leases matter here. */
const NO_MERCHANTS = { hostMerchant: async () => undefined, dropMerchant: () => undefined, fence: () => () => undefined, whenMerchantIdle: async () => undefined, cursorsFlushed: async () => undefined };

describe.skipIf(missing !== undefined)(`the speaker lease over a real Redis${missing === undefined ? '' : ` (skipped: ${missing})`}`, () => {
  const server = useRedisServer();

  /** A process on its own virtual clock (its rounds run only when the test advances it); leases expire in Redis in real time. */
  async function member(id: string, prefix: string): Promise<Member> {
    const redis = server.client();
    const clock = new ManualClock();
    const timings = { clock, logger: silentLogger, leaseTtlMs: TTL_MS, renewIntervalMs: RENEW_MS };
    const coordinator = new ProcessCoordinator({ processId: id, coordination: new RedisCoordination(redis, prefix), ...timings });
    const lease = new SpeakerLease({ lease: coordinator, coordination: new RedisSpeakerCoordination(redis, prefix), ...timings });
    coordinator.endOnLeaseLoss(() => lease.hasSpoken());
    const lost: string[] = [];
    lease.onLost((reason) => lost.push(reason));
    await coordinator.register();
    await lease.start();
    await coordinator.startOwning({ ws: `ws://${id}.invalid/v1/ws`, http: `http://${id}.invalid` }, NO_MERCHANTS, () => []);
    return { clock, coordinator, lease, lost };
  }

  async function round(...members: Member[]): Promise<void> {
    for (const { clock } of members) clock.advance(RENEW_MS);
    await realWait(40);
  }

  it('gives the speaker lease to the first process; the other knows where it is, and takes it at its next round once it is released', async () => {
    const a = await member('a', 'release:');
    const b = await member('b', 'release:');
    expect([a.lease.isSpeaker(), b.lease.isSpeaker()]).toEqual([true, false]);
    await round(a, b);
    expect(b.lease.speaker()).toMatchObject({ id: 'a', ws: 'ws://a.invalid/v1/ws', http: 'http://a.invalid' });
    let taken = false;
    void b.lease.whenSpeaker().then(() => (taken = true));
    await a.lease.stop();
    await round(b);
    expect(taken).toBe(true);
    expect(b.lease.isSpeaker()).toBe(true);
    expect(b.lost).toEqual([]);
    // A keeps its process lease (and its merchants): it stopped speaking only.
    expect(a.coordinator.leaseToken()).toBeDefined();
    await b.lease.stop();
    await a.coordinator.stop();
    await b.coordinator.stop();
  });

  it('moves the lease off a speaker paused past its TTL; the paused one reports the loss when it resumes, never takes a new lease, and its writes are fenced off from the moment its lease ran out', async () => {
    const a = await member('a', 'pause:');
    const b = await member('b', 'pause:');
    const fence = (member: Member, id: string): { key: string; token: () => string | undefined } => ({ key: `pause:proc/${id}`, token: () => member.coordinator.fencingToken() });
    const storeOfA = new RedisStore({ url: server.url, keyPrefix: 'pause:store:', fence: fence(a, 'a') });
    const storeOfB = new RedisStore({ url: server.url, keyPrefix: 'pause:store:', fence: fence(b, 'b') });
    await storeOfA.open();
    await storeOfB.open();
    try {
      await storeOfA.write([{ type: 'put', key: 'k', value: 'a-1' }]);
      // A is paused (its clock stands still) while B keeps its rounds: A's leases run out in Redis.
      for (let index = 0; index < 15; index++) await round(b);
      expect(b.lease.isSpeaker()).toBe(true);
      // A, resumed, still holds its token in memory: the fence refuses its write all the same.
      await expect(storeOfA.write([{ type: 'put', key: 'k', value: 'a-late' }])).rejects.toThrow();
      await storeOfB.write([{ type: 'put', key: 'k', value: 'b-1' }]);
      a.clock.advance(TTL_MS);
      await realWait(40);
      expect(a.lost).toHaveLength(1);
      expect([a.lease.isSpeaker(), a.coordinator.fencingToken()]).toEqual([false, undefined]);
      // It never registers again (it spoke for the cell): its rounds stop.
      await round(a);
      expect(a.coordinator.fencingToken()).toBeUndefined();
      expect(await storeOfB.get('k')).toBe('b-1');
    } finally {
      await storeOfA.close();
      await storeOfB.close();
      await a.lease.stop();
      await b.lease.stop();
      await a.coordinator.stop();
      await b.coordinator.stop();
    }
  });
});
