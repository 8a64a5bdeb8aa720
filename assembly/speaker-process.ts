import { SpeakerLease } from '../cell/processes/speaker-lease.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { RedisFence } from '../platform/store/redis-store.js';
import { redisKeyPrefixOf, type CellConfig, type ProcessesConfig } from './config.js';
import { RedisSpeakerCoordination } from './redis-speaker-coordination.js';
import { connectCoordinationRedis, processIdOf } from './scaled-process.js';
import { CellStartError } from './start-errors.js';

/** One process of a cell on Redis in a mesh, registered: its lease is held, and maybe the speaker's. */
export interface SpeakerProcess {
  readonly lease: SpeakerLease;
  /** For the store: every write checks that the process's lease still holds its token. */
  readonly fence: RedisFence;
  /** Releases the leases, then closes the coordination's Redis connection. */
  close(): Promise<void>;
}

/**
 * Connects to the cell's Redis, takes this process's lease and tries for the speaker's, before
 * any store opens: a speaker's first write is fenced already.
 */
export async function registerSpeakerProcess(init: { url: string; keyPrefix: string; processes: ProcessesConfig; clock: Clock; logger: Logger }): Promise<SpeakerProcess> {
  const processId = processIdOf(init.processes);
  const redis = await connectCoordinationRedis(init.url, processId);
  const coordination = new RedisSpeakerCoordination(redis, init.keyPrefix);
  const lease = new SpeakerLease({ processId, coordination, clock: init.clock, logger: init.logger, leaseTtlMs: init.processes.leaseTtlMs, renewIntervalMs: init.processes.renewIntervalMs });
  try {
    await lease.register();
  } catch (error) {
    redis.disconnect();
    throw error;
  }
  return {
    lease,
    fence: { key: coordination.leaseKey(processId), token: () => lease.fencingToken() },
    close: async () => {
      await lease.stop();
      redis.disconnect();
    },
  };
}

/**
 * The leases of this process when the cell is on Redis in a mesh (registered, the speaker's
 * taken if no other process holds it); undefined for any other cell.
 */
export async function registerMeshProcess(config: CellConfig, clock: Clock, logger: Logger): Promise<SpeakerProcess | undefined> {
  if (config.store.kind !== 'redis' || config.mesh === undefined) return undefined;
  const { redis } = config.store;
  try {
    return await registerSpeakerProcess({ url: redis.url, keyPrefix: redisKeyPrefixOf(config, redis), processes: config.processes, clock, logger });
  } catch (error) {
    throw new CellStartError('store.redis.url', `cannot open the Redis store at ${new URL(redis.url).host}: taking this process's lease failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}
