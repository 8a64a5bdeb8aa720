import assert from 'node:assert/strict';

/**
 * Keys as bytes for backends that compare keys byte by byte (LevelDB, Redis lexicographic ranges).
 *
 * The Store port orders keys by UTF-16 code unit, as `<` on strings does. UTF-8 bytes order by
 * code point instead, and the two orders disagree above U+D7FF: UTF-8 puts U+E000..U+FFFF before
 * the supplementary characters (U+10000 and up, surrogate pairs in UTF-16), while UTF-16 puts
 * them after. So a key codec must not be plain UTF-8.
 *
 * This codec writes every UTF-16 code unit on its own with the UTF-8 bit layout (the scheme of
 * CESU-8): one byte below U+0080, two below U+0800, three otherwise, so a surrogate becomes
 * ED A0..ED BF xx. The encoding of one code unit is monotonic in the unit and no encoding is a
 * prefix of another, so comparing encoded keys byte by byte gives exactly the code-unit order.
 * It also round-trips lone surrogates, which UTF-8 would replace with U+FFFD. Keys without
 * surrogates (every ASCII key) are byte-identical to UTF-8, so they stay readable in tools.
 */

const surrogatePattern = /[\uD800-\uDFFF]/;

/** Encodes a key so that byte order equals the port's string order. */
export function encodeKey(key: string): Buffer {
  if (!surrogatePattern.test(key)) return Buffer.from(key, 'utf8');

  const bytes = Buffer.alloc(key.length * 3);
  let length = 0;
  for (let index = 0; index < key.length; index += 1) {
    const unit = key.charCodeAt(index);
    if (unit < 0x80) {
      bytes[length++] = unit;
    } else if (unit < 0x800) {
      bytes[length++] = 0xc0 | (unit >> 6);
      bytes[length++] = 0x80 | (unit & 0x3f);
    } else {
      bytes[length++] = 0xe0 | (unit >> 12);
      bytes[length++] = 0x80 | ((unit >> 6) & 0x3f);
      bytes[length++] = 0x80 | (unit & 0x3f);
    }
  }
  return bytes.subarray(0, length);
}

/** Decodes bytes written by `encodeKey`. */
export function decodeKey(bytes: Buffer): string {
  if (!containsEncodedSurrogate(bytes)) return bytes.toString('utf8');

  let key = '';
  let index = 0;
  while (index < bytes.length) {
    const lead = bytes[index]!;
    if (lead < 0x80) {
      key += String.fromCharCode(lead);
      index += 1;
    } else if (lead >= 0xc0 && lead < 0xe0) {
      key += String.fromCharCode(((lead & 0x1f) << 6) | continuation(bytes, index + 1));
      index += 2;
    } else {
      // Bytes come only from encodeKey; anything else means the database holds foreign data.
      assert(lead >= 0xe0 && lead < 0xf0, `key byte ${lead} at ${index} was not written by encodeKey`);
      key += String.fromCharCode(
        ((lead & 0x0f) << 12) | (continuation(bytes, index + 1) << 6) | continuation(bytes, index + 2),
      );
      index += 3;
    }
  }
  return key;
}

function continuation(bytes: Buffer, index: number): number {
  const byte = bytes[index];
  assert(byte !== undefined && (byte & 0xc0) === 0x80, `key byte at ${index} is not a continuation byte`);
  return byte & 0x3f;
}

/**
 * True when the bytes hold an encoded surrogate (ED followed by A0..BF), the one place where
 * this codec and UTF-8 differ; 0xED is never a continuation byte, so every hit is a lead byte.
 */
function containsEncodedSurrogate(bytes: Buffer): boolean {
  let index = bytes.indexOf(0xed);
  while (index !== -1) {
    if ((bytes[index + 1] ?? 0) >= 0xa0) return true;
    index = bytes.indexOf(0xed, index + 1);
  }
  return false;
}
