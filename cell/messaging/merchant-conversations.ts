import type { Store } from '../../platform/store/store.js';
import { keys, lastField } from './keys.js';

/** Conversations read per page. */
const PAGE = 512;

/**
 * The conversations of a merchant this cell's store holds (its index `mc/`), with their
 * customers, page by page: what a cell walks when a merchant moves in or out.
 */
export async function* merchantConversations(store: Store, tenant: string, merchant: string): AsyncGenerator<{ conv: string; customer: string }> {
  const range = keys.merchantConversations(tenant, merchant);
  let gte = range.gte;
  for (;;) {
    const page = await store.range({ gte, lt: range.lt, limit: PAGE });
    for (const [key] of page) {
      const conv = lastField(key);
      yield { conv, customer: conv.slice(merchant.length + 1) };
    }
    if (page.length < PAGE) return;
    gte = `${page[page.length - 1]![0]}\u0000`;
  }
}
