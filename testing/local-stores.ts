import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LevelStore } from '../platform/store/level-store.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { StoreUnderTest } from './store-contract.js';

/** The stores of one machine, opened and empty, for tests that run against both adapters. */
export const LOCAL_STORES: ReadonlyArray<{ name: string; open: () => Promise<StoreUnderTest> }> = [
  {
    name: 'MemoryStore',
    open: async () => {
      const store = new MemoryStore();
      await store.open();
      return { store, cleanup: () => store.close() };
    },
  },
  {
    name: 'LevelStore',
    open: async () => {
      const directory = await mkdtemp(join(tmpdir(), 'cellmesh-store-'));
      const store = new LevelStore({ directory });
      await store.open();
      return {
        store,
        cleanup: async () => {
          await store.close();
          await rm(directory, { recursive: true, force: true });
        },
      };
    },
  },
];
