import { fileTypeFromBuffer } from 'file-type';

/** What bytes that are no known format and not plain text are served as. */
export const UNKNOWN_MEDIA_TYPE = 'application/octet-stream';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The media type of `bytes`, judged from the bytes alone (magic numbers, by file-type), never
 * from what the uploader declared: a PNG named `report.pdf` is image/png. Bytes that match no
 * known format are text/plain when they are valid UTF-8 without NUL, otherwise
 * application/octet-stream.
 */
export async function sniffMediaType(bytes: Uint8Array): Promise<string> {
  const detected = await fileTypeFromBuffer(bytes);
  if (detected !== undefined) return detected.mime;
  return isPlainText(bytes) ? 'text/plain' : UNKNOWN_MEDIA_TYPE;
}

function isPlainText(bytes: Uint8Array): boolean {
  if (bytes.includes(0)) return false;
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
