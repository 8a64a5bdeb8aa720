import { LevelStore, MemoryStore, RedisDurabilityError, RedisStore, describeDurabilityProblems, isLockedByAnotherProcess, type Store } from '../platform/store/index.js';
import type { Logger } from '../platform/logger.js';
import type { RedisFence } from '../platform/store/redis-store.js';
import { redisKeyPrefixOf, type CellConfig } from './config.js';
import { CellStartError } from './start-errors.js';

/**
 * The store a cell process's config names, not yet open. A Redis store of a cell of several
 * processes is fenced by the process's lease (assembly/scaled-process.ts).
 */
export function storeFromConfig(config: CellConfig, fence?: RedisFence): Store {
  const store = config.store;
  switch (store.kind) {
    case 'level':
      return new LevelStore({ directory: store.directory, sync: store.sync, minFlushIntervalMs: store.minFlushIntervalMs });
    case 'memory':
      return new MemoryStore();
    case 'redis':
      return new RedisStore({
        url: store.redis.url,
        keyPrefix: redisKeyPrefixOf(config, store.redis),
        acceptWeakDurability: store.redis.acceptWeakDurability,
        waitReplicas: store.redis.waitReplicas,
        waitTimeoutMs: store.redis.waitTimeoutMs,
        fence,
      });
  }
}

/**
 * Why the store did not open, in words: a LevelDB directory that cannot be opened (held by
 * another cell, not writable), a Redis that cannot be reached or cannot keep the durable ack,
 * is a CellStartError naming the setting to change, not a stack trace.
 */
export function storeOpenError(config: CellConfig, error: unknown): Error {
  const store = config.store;
  switch (store.kind) {
    case 'level':
      if (isLockedByAnotherProcess(error)) {
        return new CellStartError('store.directory', `${store.directory} is locked by another process (another cell uses this directory)`, { cause: error });
      }
      return new CellStartError('store.directory', `cannot open the LevelDB store at ${store.directory}: ${deepestMessage(error)}`, { cause: error });
    case 'redis': {
      const refusal = causeOfType(error, RedisDurabilityError);
      if (refusal !== undefined) {
        return new CellStartError('store.redis', refusal.message, { cause: error });
      }
      return new CellStartError('store.redis.url', `cannot open the Redis store at ${redisAddressOf(store.redis.url)}: ${deepestMessage(error)}`, { cause: error });
    }
    case 'memory':
      return error instanceof Error ? error : new Error(String(error));
  }
}

/** Warns, at start, of what a Redis opened with acceptWeakDurability gives up. */
export function warnOfWeakDurability(store: Store, logger: Logger): void {
  if (!(store instanceof RedisStore)) return;
  const problems = store.durabilityProblems();
  if (problems.length === 0) return;
  logger.warn(
    { problems: problems.map((problem) => problem.setting) },
    `store.redis.acceptWeakDurability: this Redis cannot keep the durable ack, acknowledged messages may be lost: ${describeDurabilityProblems(problems)}`,
  );
}

/** The message of the innermost cause: the OS's, LevelDB's or Redis's own words. */
function deepestMessage(error: unknown): string {
  let current = error;
  for (let depth = 0; depth < 8 && current instanceof Error && current.cause instanceof Error; depth++) current = current.cause;
  return current instanceof Error ? current.message : String(current);
}

function causeOfType<T extends Error>(error: unknown, type: new (...args: never[]) => T): T | undefined {
  let current = error;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    if (current instanceof type) return current;
    current = current.cause;
  }
  return undefined;
}

/** `host:port` of a Redis URL, never its password. */
function redisAddressOf(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || '6379'}`;
}
