/** The storage of a cell: the Store port and its adapters. */
export { StoreError, type RangeQuery, type Store, type StoreOp } from './store.js';
export { MemoryStore } from './memory-store.js';
export { LevelStore, isLockedByAnotherProcess, type LevelStoreInit } from './level-store.js';
export type { GroupCommitStats } from './group-commit.js';
