import { z } from 'zod';
import { MAX_BODY_CHARS, clientMessageId } from './frames.js';

/** Bodies and query parameters of the HTTP API (docs/protocol.md, "HTTP API"). */
export const HttpSendBody = z.object({
  cmid: clientMessageId,
  body: z.string().min(1).max(MAX_BODY_CHARS),
});

export const HttpReadBody = z.object({
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});

const optionalPositiveInt = z
  .string()
  .optional()
  .transform((value, context) => {
    if (value === undefined || value === '') return undefined;
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed) || parsed < 0) {
      context.addIssue({ code: 'custom', message: 'must be a non-negative integer' });
      return z.NEVER;
    }
    return parsed;
  });

export const HttpHistoryQuery = z.object({
  before: optionalPositiveInt,
  limit: optionalPositiveInt.pipe(z.number().int().min(1).max(200).optional()),
});
