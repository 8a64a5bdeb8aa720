/**
 * The `Content-Disposition` of a served attachment: images open in place (`inline`), anything
 * else downloads (`attachment`), so a browser never renders an uploaded document as a page.
 * The name travels twice: an ASCII fallback in `filename` (quotes, backslashes and anything
 * outside printable ASCII replaced by `_`, so it cannot end the quoted string or inject a
 * header), and the exact name in `filename*` (RFC 6266 / RFC 8187, UTF-8, percent-encoded).
 */
export function contentDisposition(name: string, mediaType: string): string {
  const disposition = mediaType.startsWith('image/') ? 'inline' : 'attachment';
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  return `${disposition}; filename="${fallback}"; filename*=UTF-8''${encodeRfc8187(name)}`;
}

/** Percent-encodes everything but RFC 8187's attr-chars. */
function encodeRfc8187(value: string): string {
  return encodeURIComponent(value).replace(/['()*]/g, (character) => `%${character.charCodeAt(0).toString(16).toUpperCase()}`);
}
