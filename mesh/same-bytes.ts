/**
 * True when `a` and `b` hold the same bytes. Topic validators and handlers receive separate
 * copies of one message, so the decoders that remember their last message (heartbeats, records)
 * recognise it by content rather than by identity.
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) if (a[index] !== b[index]) return false;
  return true;
}
