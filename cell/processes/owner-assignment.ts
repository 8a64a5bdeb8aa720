import { stringHash32 } from '../../platform/string-hash.js';
import { merchantKey, type MerchantRef } from './coordination-port.js';

/**
 * Which process should own each merchant: rendezvous hashing (each merchant goes to the process
 * that scores highest for it, so a process joining or leaving moves only its share) with bounded
 * load (no process takes more than ceil(merchants / processes)), so a few merchants still spread.
 * Every process computes the same answer from the same lists: merchants are taken in key order.
 */
export function assignOwners(merchants: readonly MerchantRef[], processIds: readonly string[]): Map<string, string> {
  const assigned = new Map<string, string>();
  if (processIds.length === 0) return assigned;
  const keys = [...new Set(merchants.map(merchantKey))].sort();
  const capacity = Math.ceil(keys.length / processIds.length);
  const load = new Map(processIds.map((id) => [id, 0]));
  for (const key of keys) {
    const ranked = [...processIds].sort((a, b) => score(key, b) - score(key, a) || (a < b ? -1 : 1));
    const owner = ranked.find((id) => (load.get(id) ?? 0) < capacity) ?? ranked[0]!;
    load.set(owner, (load.get(owner) ?? 0) + 1);
    assigned.set(key, owner);
  }
  return assigned;
}

/** The rendezvous score of `process` for the merchant `key`. */
function score(key: string, processId: string): number {
  return stringHash32(`${key}|${processId}`);
}
