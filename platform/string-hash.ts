/**
 * A 32-bit hash of a string for rendezvous hashing: FNV-1a over its UTF-16 code units, then
 * murmur3's finaliser, so that strings that differ in one character score far apart. Not for
 * security: anyone can compute it.
 */
export function stringHash32(text: string): number {
  let hash = 0x811c9dc5;
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
