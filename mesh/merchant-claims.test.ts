import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../platform/store/memory-store.js';
import type { StoreOp } from '../platform/store/store.js';
import { MerchantClaimsStore } from './merchant-claims.js';

const TENANTS = [{ id: 'mall', origins: [], merchants: [{ id: 'home' }] }];

/** A memory store whose next write can be made to fail, as a disk refusing it would. */
class RefusingStore extends MemoryStore {
  refuseNextWrite = false;

  override write(ops: readonly StoreOp[]): Promise<void> {
    if (this.refuseNextWrite) {
      this.refuseNextWrite = false;
      return Promise.reject(new Error('the disk refused the write'));
    }
    return super.write(ops);
  }
}

describe('MerchantClaimsStore', () => {
  it('keeps a claim whose write failed out of memory, out of later writes and out of the next start', async () => {
    const store = new RefusingStore();
    await store.open();
    const claims = new MerchantClaimsStore(store);
    await claims.load();
    store.refuseNextWrite = true;
    await expect(claims.record('mall', 'failed', 3, { hosted: true })).rejects.toThrow('refused');
    expect(claims.hosted(TENANTS).map((claim) => claim.merchant)).toEqual(['home']);
    // Another merchant's claim, written after, does not carry the failed one to disk.
    await claims.record('mall', 'moved-in', 2, { hosted: true });
    const restarted = new MerchantClaimsStore(store);
    await restarted.load();
    expect(restarted.hosted(TENANTS).map((claim) => `${claim.merchant}@${claim.epoch}`)).toEqual(['home@0', 'moved-in@2']);
    await store.close();
  });

  it('serializes concurrent records so that none overwrites another', async () => {
    const store = new MemoryStore();
    await store.open();
    const claims = new MerchantClaimsStore(store);
    await claims.load();
    await Promise.all(['a', 'b', 'c'].map((merchant, index) => claims.record('mall', merchant, index + 1, { hosted: true })));
    const restarted = new MerchantClaimsStore(store);
    await restarted.load();
    expect(restarted.hosted(TENANTS).map((claim) => claim.merchant).sort()).toEqual(['a', 'b', 'c', 'home']);
    await store.close();
  });
});
