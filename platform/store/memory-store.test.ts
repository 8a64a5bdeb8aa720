import { expect, it } from 'vitest';
import { MemoryStore } from './memory-store.js';
import { describeStoreContract } from '../../testing/store-contract.js';

describeStoreContract('MemoryStore', async () => ({
  store: new MemoryStore(),
  cleanup: async () => {},
}));

it('keeps data per instance: two memory stores (two simulated cells) never share keys', async () => {
  const first = new MemoryStore();
  const second = new MemoryStore();
  await Promise.all([first.open(), second.open()]);
  await first.write([{ type: 'put', key: 'k', value: 'first' }]);
  expect(await second.get('k')).toBeUndefined();
  expect(await first.get('k')).toBe('first');
  await Promise.all([first.close(), second.close()]);
});
