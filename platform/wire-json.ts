import type { z } from 'zod';

/**
 * JSON over the wire (mesh messages, requests, stored entries): UTF-8 bytes in and out, parsed
 * against a schema, never throwing on bad input: a peer's malformed message is answered or
 * dropped, never a crash.
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export type DecodeFailure = 'too-large' | 'malformed';

/** Decodes bytes against `schema`, refusing more than `maxBytes` before parsing; says why it failed. */
export function decodeJsonResult<T>(bytes: Uint8Array, schema: z.ZodType<T>, maxBytes: number): { ok: true; value: T } | { ok: false; reason: DecodeFailure } {
  if (bytes.byteLength > maxBytes) return { ok: false, reason: 'too-large' };
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  const value = parseJson(schema, text);
  return value === undefined ? { ok: false, reason: 'malformed' } : { ok: true, value };
}

/** Decodes bytes against `schema`; undefined when too large, not UTF-8, not JSON or not of the schema. */
export function decodeJson<T>(schema: z.ZodType<T>, bytes: Uint8Array, maxBytes = Number.POSITIVE_INFINITY): T | undefined {
  const result = decodeJsonResult(bytes, schema, maxBytes);
  return result.ok ? result.value : undefined;
}

/** Parses text against `schema`; undefined when it is not JSON or not of the schema. */
export function parseJson<T>(schema: z.ZodType<T>, text: string): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}
