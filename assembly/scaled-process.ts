import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { SiblingAccess } from '../cell/access/sibling-relay.js';
import { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { siblingAccessOf } from '../cell/processes/sibling-access.js';
import { CellWideCatalogue } from '../cell/processes/cell-wide-catalogue.js';
import { SpeakerLease } from '../cell/processes/speaker-lease.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Random } from '../platform/random.js';
import type { RedisFence } from '../platform/store/redis-store.js';
import type { ProcessesConfig } from './config.js';
import { cellSecretOf } from './cell-secret.js';
import { InternalChannel } from './internal-channel.js';
import { RedisCoordination } from './redis-coordination.js';
import { RedisCatalogueCoordination } from './redis-catalogue-coordination.js';
import { RedisSpeakerCoordination } from './redis-speaker-coordination.js';

/**
 * The speaker's side of a process of a cell in a mesh (docs/operations.md, "In a mesh: owners
 * spread, one speaker"): its bid for the speaker lease, and the internal channel to the others.
 */
export interface MeshProcess {
  readonly lease: SpeakerLease;
  /** The cell's secret, which every internal call carries. */
  readonly secret: string;
  readonly channel: InternalChannel;
  /** True when `processId` holds its lease with `token` now (the coordinator's last round, else Redis). */
  isLive(processId: string, token: number): Promise<boolean>;
}

/** One process of a cell of several processes on Redis, registered: its lease is held and renewed. */
export interface ScaledProcess {
  readonly coordinator: ProcessCoordinator;
  /** For the store: every write checks that the process's lease still holds its token. */
  readonly fence: RedisFence;
  /** For the access layer: which devices go to which sibling. */
  readonly siblings: SiblingAccess;
  /** For the catalogue: its changes run one at a time cell-wide, and every process follows them. */
  readonly catalogue: CellWideCatalogue;
  /** A cell in a mesh: the speaker lease and the channel; undefined for a cell without a mesh. */
  readonly mesh: MeshProcess | undefined;
  /** Closes the coordination's Redis connection (after the coordinator and the speaker lease stopped). */
  close(): void;
}

/**
 * `processes.id`, or the host name: a pod's name, unique among the pods. A process restarted
 * under the same id takes its merchants back at once (its earlier lease's claims are orphans as
 * soon as it registers again); under a new id they wait for the old lease to run out. Processes
 * of one cell on one machine need an id each.
 */
export function processIdOf(processes: ProcessesConfig): string {
  return processes.id ?? (hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64) || 'process');
}

/**
 * Connects to the cell's Redis and takes this process's lease before the store opens, so that
 * the store's first write is fenced already.
 */
export async function registerScaledProcess(init: { url: string; keyPrefix: string; processes: ProcessesConfig; clock: Clock; random: Random; logger: Logger; mesh: boolean }): Promise<ScaledProcess> {
  const processId = processIdOf(init.processes);
  const redis = await connectCoordinationRedis(init.url, processId);
  const coordination = new RedisCoordination(redis, init.keyPrefix);
  const coordinator = new ProcessCoordinator({
    processId,
    coordination,
    clock: init.clock,
    logger: init.logger,
    leaseTtlMs: init.processes.leaseTtlMs,
    renewIntervalMs: init.processes.renewIntervalMs,
    merchantsMove: init.mesh,
  });
  let mesh: MeshProcess | undefined;
  try {
    await coordinator.register();
    if (init.mesh) mesh = await registerMeshProcess(redis, init, coordinator);
  } catch (error) {
    await coordinator.stop();
    redis.disconnect();
    throw error;
  }
  const lease = mesh?.lease;
  return {
    coordinator,
    fence: { key: coordination.leaseKey(processId), token: () => coordinator.fencingToken() },
    siblings: siblingAccessOf(coordinator, lease === undefined ? undefined : () => (lease.isSpeaker() ? 'self' : lease.speaker())),
    mesh,
    catalogue: new CellWideCatalogue({
      processId,
      coordination: new RedisCatalogueCoordination(redis, init.keyPrefix),
      clock: init.clock,
      random: init.random,
      logger: init.logger,
      renewIntervalMs: init.processes.renewIntervalMs,
      leaseTtlMs: init.processes.leaseTtlMs,
      ownerIsLive: (merchant) => coordinator.ownerIsLive(merchant),
    }),
    close: () => redis.disconnect(),
  };
}

/**
 * The speaker lease on top of the process lease (its rounds start once the process serves: a
 * slow start must not cost a speaker lease the process could not renew yet), and the internal channel. A process that spoke for the cell ends when its
 * process lease is lost: it takes no new one (its writes stay fenced off), since another process
 * may speak already under the cell's mesh identity.
 */
async function registerMeshProcess(redis: Redis, init: { keyPrefix: string; processes: ProcessesConfig; clock: Clock; logger: Logger }, coordinator: ProcessCoordinator): Promise<MeshProcess> {
  const { processId } = coordinator;
  const secret = await cellSecretOf(redis, init.keyPrefix);
  const lease = new SpeakerLease({ lease: coordinator, coordination: new RedisSpeakerCoordination(redis, init.keyPrefix), clock: init.clock, logger: init.logger, leaseTtlMs: init.processes.leaseTtlMs, renewIntervalMs: init.processes.renewIntervalMs });
  coordinator.endOnLeaseLoss(() => lease.hasSpoken());
  const channel = new InternalChannel({ secret, processId, token: () => coordinator.leaseToken(), speaker: () => lease.speaker() });
  const leaseKey = (id: string): string => `${init.keyPrefix}proc/${id}`;
  return {
    lease,
    secret,
    channel,
    isLive: async (id, token) => coordinator.isLive(id, token) || (await redis.get(leaseKey(id))) === String(token),
  };
}

/** The connection a process's leases go over: commands fail fast while Redis is away (the lease rounds retry). */
export async function connectCoordinationRedis(url: string, processId: string): Promise<Redis> {
  const redis = new Redis(url, { connectionName: `cellmesh-process-${processId}`, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true, retryStrategy: (attempt) => Math.min(attempt * 100, 1_000) });
  // Without a listener ioredis prints every connection error; the lease rounds log their failures.
  let lastError: Error | undefined;
  redis.on('error', (error: Error) => (lastError = error));
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    throw lastError ?? error;
  }
  return redis;
}
