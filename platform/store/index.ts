/** The storage of a cell: the Store port and its adapters. */
export { StoreError, StoreFencedError, type RangeQuery, type Store, type StoreOp } from './store.js';
export { MemoryStore } from './memory-store.js';
export { LevelStore, isLockedByAnotherProcess, type LevelStoreInit } from './level-store.js';
export type { GroupCommitStats } from './group-commit.js';
export { RedisStore, type RedisFence, type RedisStoreInit } from './redis-store.js';
export { checkRedisDurability, describeDurabilityProblems, RedisDurabilityError, type RedisDurabilityProblem } from './redis-durability.js';
