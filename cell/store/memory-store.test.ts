import { MemoryStore } from './memory-store.js';
import { describeStoreContract } from './store-contract.js';

describeStoreContract('MemoryStore', async () => ({
  store: new MemoryStore(),
  cleanup: async () => {},
}));
