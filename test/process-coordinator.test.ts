import { describe, expect, it } from 'vitest';
import { RedisCoordination } from '../assembly/redis-coordination.js';
import { assignOwners } from '../cell/processes/owner-assignment.js';
import { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { ManualClock } from '../platform/manual-clock.js';
import { silentLogger } from '../platform/logger.js';
import { redisServerMissing } from '../testing/redis-server.js';
import { RecordingHost } from './recording-host.js';
import { useRedisServer } from './redis-suite.js';

const missing = redisServerMissing();
const TTL_MS = 400;
const RENEW_MS = 100;
const MERCHANTS = [
  { tenant: 'mall', merchant: 'm1' },
  { tenant: 'mall', merchant: 'm2' },
];

interface Member {
  readonly clock: ManualClock;
  readonly host: RecordingHost;
  readonly coordinator: ProcessCoordinator;
}

const realWait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(missing !== undefined)(`process leases and merchant owners over a real Redis${missing === undefined ? '' : ` (skipped: ${missing})`}`, () => {
  const server = useRedisServer();

  /** A process on its own virtual clock (its timers fire only when the test advances it); leases expire in Redis in real time. */
  async function member(id: string, prefix: string, merchants: () => ReadonlyArray<{ tenant: string; merchant: string }> = () => MERCHANTS): Promise<Member> {
    const redis = server.client();
    const clock = new ManualClock();
    const host = new RecordingHost();
    const coordinator = new ProcessCoordinator({ processId: id, coordination: new RedisCoordination(redis, prefix), clock, logger: silentLogger, leaseTtlMs: TTL_MS, renewIntervalMs: RENEW_MS });
    await coordinator.register();
    await coordinator.startOwning({ ws: `ws://${id}.invalid/v1/ws`, http: `http://${id}.invalid` }, host, merchants);
    return { clock, host, coordinator };
  }

  /** One renewal round of each member: its clock moves one interval, then its tick settles. */
  async function round(...members: Member[]): Promise<void> {
    for (const { clock } of members) clock.advance(RENEW_MS);
    await realWait(40);
  }

  /** Rounds until `condition` holds (a slow machine may need more than one per step), at most 30. */
  async function roundsUntil(condition: () => boolean, ...members: Member[]): Promise<void> {
    for (let step = 0; step < 30 && !condition(); step++) await round(...members);
    expect(condition()).toBe(true);
  }

  it('spreads the merchants over two processes only once the second has been live for a lease period, and each knows where the other is', async () => {
    const a = await member('proc-a', 'spread:');
    expect(a.coordinator.ownedMerchants()).toEqual(['mall/m1', 'mall/m2']);
    const b = await member('proc-b', 'spread:');
    // A owns both and is live: B claims nothing, and relays to A.
    expect(b.coordinator.ownedMerchants()).toEqual([]);
    expect(b.coordinator.placement('mall', 'm1')).toMatchObject({ here: false, owner: { id: 'proc-a', ws: 'ws://proc-a.invalid/v1/ws' } });
    // A sees B at its next round; it hands over only after B has been live for a lease period.
    await round(a, b);
    expect(a.coordinator.ownedMerchants()).toEqual(['mall/m1', 'mall/m2']);
    await roundsUntil(() => a.coordinator.ownedMerchants().length === 1 && b.coordinator.ownedMerchants().length === 1, a, b);
    const split = assignOwners(MERCHANTS, ['proc-a', 'proc-b']);
    expect(a.coordinator.ownedMerchants()).toEqual(MERCHANTS.map((m) => `${m.tenant}/${m.merchant}`).filter((key) => split.get(key) === 'proc-a'));
    expect(b.coordinator.ownedMerchants()).toEqual(MERCHANTS.map((m) => `${m.tenant}/${m.merchant}`).filter((key) => split.get(key) === 'proc-b'));
    expect(a.coordinator.ownedMerchants()).toHaveLength(1);
    expect([...a.host.hosted].sort()).toEqual(a.coordinator.ownedMerchants());
    expect([...b.host.hosted].sort()).toEqual(b.coordinator.ownedMerchants());
    const [ofB] = b.coordinator.ownedMerchants();
    const [tenant, merchant] = ofB!.split('/') as [string, string];
    // A learns of B's claim at its next round.
    await roundsUntil(() => a.coordinator.placement(tenant, merchant)?.here === false, a, b);
    expect(a.coordinator.placement(tenant, merchant)).toMatchObject({ here: false, owner: { id: 'proc-b' } });
    await a.coordinator.stop();
    await b.coordinator.stop();
  });

  it('a paused process loses its lease: a sibling takes its merchants, and when it resumes it drops them, re-registers with a higher token and claims nothing it does not own', async () => {
    const a = await member('proc-a', 'pause:');
    const b = await member('proc-b', 'pause:');
    await roundsUntil(() => a.coordinator.ownedMerchants().length === 1 && b.coordinator.ownedMerchants().length === 1, a, b);
    const ofA = a.coordinator.ownedMerchants();
    expect(ofA).toHaveLength(1);
    const tokenBefore = Number(a.coordinator.fencingToken());
    const droppedBefore = a.host.dropped.length;
    // A is paused (its clock stands still) past its lease, which expires in Redis.
    await realWait(TTL_MS + 100);
    await roundsUntil(() => b.coordinator.ownedMerchants().length === 2, b);
    expect(b.coordinator.ownedMerchants()).toEqual(['mall/m1', 'mall/m2']);
    // A resumes: its first renewal finds the lease gone.
    await roundsUntil(() => a.host.hosted.size === 0 && Number(a.coordinator.fencingToken()) > tokenBefore, a);
    expect(a.host.dropped.slice(droppedBefore)).toEqual(ofA);
    expect(a.host.hosted.size).toBe(0);
    expect(Number(a.coordinator.fencingToken())).toBeGreaterThan(tokenBefore);
    // Re-registered, it is a new process: B hands its share back once it has been live a lease period.
    await roundsUntil(() => a.coordinator.ownedMerchants().length === 1 && b.coordinator.ownedMerchants().length === 1, a, b);
    expect(a.coordinator.ownedMerchants()).toEqual(ofA);
    expect(b.coordinator.ownedMerchants()).toHaveLength(1);
    await a.coordinator.stop();
    await b.coordinator.stop();
  });

  it('says so when a second process registers under the same id', async () => {
    const errors: string[] = [];
    const redis = server.client();
    const clock = new ManualClock();
    const logger = { ...silentLogger, error: (_fields: object, message?: string) => errors.push(message ?? '') };
    const first = new ProcessCoordinator({ processId: 'twin', coordination: new RedisCoordination(redis, 'twins:'), clock, logger, leaseTtlMs: TTL_MS, renewIntervalMs: RENEW_MS });
    await first.register();
    const second = await member('twin', 'twins:');
    for (let step = 0; step < 30 && errors.length === 0; step++) {
      clock.advance(RENEW_MS);
      await realWait(40);
    }
    expect(errors).toEqual(['another process registered under the id twin: give each process of the cell its own processes.id (--process-id)']);
    await first.stop();
    await second.coordinator.stop();
  });

  it('a process that stops hands its merchants over at once', async () => {
    const a = await member('proc-a', 'stop:');
    const b = await member('proc-b', 'stop:');
    await a.coordinator.stop();
    expect(a.host.hosted.size).toBe(0);
    await roundsUntil(() => b.coordinator.ownedMerchants().length === 2, b);
    expect(b.coordinator.ownedMerchants()).toEqual(['mall/m1', 'mall/m2']);
    await b.coordinator.stop();
  });
  it('hands a merchant pinned to a process (a move out at the speaker) to it, back once unpinned, and lets go of a merchant that left the list', async () => {
    const listed = [...MERCHANTS];
    const a = await member('a', 'pin:', () => listed);
    const b = await member('b', 'pin:', () => listed);
    await roundsUntil(() => a.host.hosted.size === 1 && b.host.hosted.size === 1, a, b);
    const atB = [...b.host.hosted][0]!;
    const [tenant, merchant] = atB.split('/') as [string, string];
    let release: (() => Promise<void>) | undefined;
    void a.coordinator.acquire(tenant, merchant, 5_000).then((unpin) => (release = unpin));
    await roundsUntil(() => release !== undefined, a, b);
    expect([a.host.hosted.has(atB), b.host.hosted.has(atB)]).toEqual([true, false]);
    await release!();
    await roundsUntil(() => b.host.hosted.has(atB) && !a.host.hosted.has(atB), a, b);
    // Moved out of the cell: no process holds it, nor an owner record.
    listed.splice(listed.findIndex((ref) => `${ref.tenant}/${ref.merchant}` === atB), 1);
    const redis = server.client();
    await roundsUntil(() => !b.coordinator.ownedMerchants().includes(atB), a, b);
    await round(a, b);
    expect(await redis.get(`pin:owner/${atB}`)).toBeNull();
    expect(a.coordinator.ownedMerchants()).not.toContain(atB);
    await a.coordinator.stop();
    await b.coordinator.stop();
  });
});
