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

/** FNV-1a of `merchant|process`, then a murmur finaliser so that close strings score far apart. */
function score(key: string, processId: string): number {
  let hash = 0x811c9dc5;
  const text = `${key}|${processId}`;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}
