import type { Store } from './store.js';

/** Entries read per page by `scan`. */
const DEFAULT_PAGE = 512;

/**
 * Every entry of a key range, ascending, read page by page so that a large range never sits in
 * memory at once (a merchant's conversations, a desk's records, a move's copy).
 */
export async function* scan(store: Store, range: { gte: string; lt: string }, pageSize = DEFAULT_PAGE): AsyncGenerator<[key: string, value: string]> {
  let gte = range.gte;
  for (;;) {
    const page = await store.range({ gte, lt: range.lt, limit: pageSize });
    yield* page;
    if (page.length < pageSize) return;
    // The smallest key after the last one read.
    gte = `${page[page.length - 1]![0]}\u0000`;
  }
}

/** Every entry of a key range, collected (for ranges known to be small enough to hold). */
export async function readAll(store: Store, range: { gte: string; lt: string }): Promise<Array<[key: string, value: string]>> {
  const entries: Array<[string, string]> = [];
  for await (const entry of scan(store, range)) entries.push(entry);
  return entries;
}

/** Deletes every entry of a key range, a page per write. */
export async function deleteRange(store: Store, range: { gte: string; lt: string }, pageSize = DEFAULT_PAGE): Promise<number> {
  let deleted = 0;
  for (;;) {
    // Each page starts at the range's beginning again: the previous page is gone.
    const page = await store.range({ gte: range.gte, lt: range.lt, limit: pageSize });
    if (page.length === 0) return deleted;
    await store.write(page.map(([key]) => ({ type: 'del' as const, key })));
    deleted += page.length;
  }
}
