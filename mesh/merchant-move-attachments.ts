import { keys, lastField, prefixRange } from '../cell/messaging/keys.js';
import { scan } from '../platform/store/scan.js';
import type { Store } from '../platform/store/store.js';

/**
 * What of the tenant's attachments a merchant's move carries (keys.ts, `fa/`, `fx/`, `fb/`):
 * its conversations' references, their index entries, and the content they reference, which
 * is stored once per tenant and may be shared with other merchants' conversations. The target
 * accepts content only for attachments its merchant's conversations reference.
 */

/** The merchant's references and index entries, then the content they reference, each content's chunks before its meta. */
export async function* merchantAttachmentEntries(store: Store, tenant: string, merchant: string): AsyncGenerator<[string, string]> {
  const ids = new Set<string>();
  for await (const entry of scan(store, prefixRange(`fa/${tenant}/${merchant}:`))) {
    ids.add(lastField(entry[0]));
    yield entry;
  }
  for (const id of ids) yield* scan(store, referrersOfMerchant(tenant, id, merchant));
  for (const id of ids) {
    const meta = await store.get(keys.attachmentBlob(tenant, id));
    if (meta === undefined) continue;
    yield* scan(store, keys.attachmentChunks(tenant, id));
    // Last: a meta stands for complete content (AttachmentStore.put writes no content it has), so
    // a move that fails midway must not leave one without all its chunks.
    yield [keys.attachmentBlob(tenant, id), meta];
  }
}

/** Whether `key` is a reference or index entry of the merchant's conversations. */
export function isMerchantAttachmentReference(key: string, tenant: string, merchant: string): boolean {
  return key.startsWith(`fa/${tenant}/${merchant}:`) || (key.startsWith(`fx/${tenant}/`) && lastField(key).startsWith(`${merchant}:`));
}

/** The attachment whose content `key` holds (meta or chunk) in `tenant`, or undefined for any other key. */
export function attachmentContentId(key: string, tenant: string): string | undefined {
  const prefix = `fb/${tenant}/`;
  if (!key.startsWith(prefix)) return undefined;
  const id = key.slice(prefix.length).split('/')[0]!;
  return /^[0-9a-f]{64}$/.test(id) ? id : undefined;
}

/**
 * Target side: whether every attachment in `ids` is referenced by one of the merchant's
 * conversations, through an index entry in this page of the move or stored here by an earlier one.
 */
export async function referencedByMerchant(store: Store, tenant: string, merchant: string, ids: ReadonlySet<string>, page: ReadonlyArray<[string, string]>): Promise<boolean> {
  for (const id of ids) {
    const range = referrersOfMerchant(tenant, id, merchant);
    if (page.some(([key]) => key >= range.gte && key < range.lt)) continue;
    if ((await store.range({ ...range, limit: 1 })).length === 0) return false;
  }
  return true;
}

function referrersOfMerchant(tenant: string, id: string, merchant: string): { gte: string; lt: string } {
  return prefixRange(`${keys.attachmentReferrers(tenant, id).gte}${merchant}:`);
}
