/**
 * Answers to a device's requests (a `history` page, an `inbox` page) are bounded in bytes as well
 * as in count, so that no legal request trips the backpressure limit (4008) of a device that
 * reads. Catch-up stops at half of `maxBackpressureBytes` (delivery.ts); an answer takes at most
 * a quarter, which leaves room for live frames on top of both.
 */
export function responseByteBudget(maxBackpressureBytes: number): number {
  return Math.floor(maxBackpressureBytes / 4);
}

/** UTF-8 bytes of `value` as JSON, and one for the comma that separates it in a list. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value), 'utf8') + 1;
}

/**
 * The longest run at the end of `items` (the newest of a history page) whose JSON fits in
 * `budgetBytes`; at least one item, so that paging always moves on.
 */
export function newestWithinBytes<Item>(items: readonly Item[], budgetBytes: number): Item[] {
  let bytes = 0;
  let start = items.length;
  while (start > 0) {
    bytes += jsonBytes(items[start - 1]);
    if (bytes > budgetBytes && start < items.length) break;
    start--;
  }
  return items.slice(start);
}
