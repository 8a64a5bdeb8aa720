import { scan } from '../../platform/store/scan.js';
import type { Store } from '../../platform/store/store.js';
import { keys, lastField } from './keys.js';

/**
 * The conversations of a merchant this cell's store holds (its index `mc/`), with their
 * customers, page by page: what a cell walks when a merchant moves in or out.
 */
export async function* merchantConversations(store: Store, tenant: string, merchant: string): AsyncGenerator<{ conv: string; customer: string }> {
  for await (const [key] of scan(store, keys.merchantConversations(tenant, merchant))) {
    const conv = lastField(key);
    yield { conv, customer: conv.slice(merchant.length + 1) };
  }
}
