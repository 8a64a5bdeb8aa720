import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { SiblingAccess } from '../cell/access/sibling-relay.js';
import { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import { siblingAccessOf } from '../cell/processes/sibling-access.js';
import { CellWideCatalogue } from '../cell/processes/cell-wide-catalogue.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Random } from '../platform/random.js';
import type { RedisFence } from '../platform/store/redis-store.js';
import type { ProcessesConfig } from './config.js';
import { RedisCoordination } from './redis-coordination.js';
import { RedisCatalogueCoordination } from './redis-catalogue-coordination.js';

/** One process of a cell of several processes on Redis, registered: its lease is held and renewed. */
export interface ScaledProcess {
  readonly coordinator: ProcessCoordinator;
  /** For the store: every write checks that the process's lease still holds its token. */
  readonly fence: RedisFence;
  /** For the access layer: which devices go to which sibling. */
  readonly siblings: SiblingAccess;
  /** For the catalogue: its changes run one at a time cell-wide, and every process follows them. */
  readonly catalogue: CellWideCatalogue;
  /** Closes the coordination's Redis connection (after the coordinator stopped). */
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
export async function registerScaledProcess(init: { url: string; keyPrefix: string; processes: ProcessesConfig; clock: Clock; random: Random; logger: Logger }): Promise<ScaledProcess> {
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
  });
  try {
    await coordinator.register();
  } catch (error) {
    redis.disconnect();
    throw error;
  }
  return {
    coordinator,
    fence: { key: coordination.leaseKey(processId), token: () => coordinator.fencingToken() },
    siblings: siblingAccessOf(coordinator),
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
