import { z } from 'zod';
import { BODY_OR_ATTACHMENTS, IDENTIFIER_PATTERN, MAX_BODY_CHARS, clientMessageId, hasBodyOrAttachments, messageAttachmentIds } from './frames.js';

/** Bodies and query parameters of the HTTP API (docs/protocol.md, "HTTP API"). */
export const HttpSendBody = z
  .object({
    cmid: clientMessageId,
    body: z.string().max(MAX_BODY_CHARS),
    attachments: messageAttachmentIds.optional(),
  })
  .refine(hasBodyOrAttachments, { message: BODY_OR_ATTACHMENTS, path: ['body'] });

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

const identifier = z.string().regex(IDENTIFIER_PATTERN, 'must be 1-64 characters of [A-Za-z0-9_.-]');

/**
 * A route request (`GET /v1/route`, `GET /v1/connect`): the merchant a device wants. `customer`
 * and `group` are reserved for placement by customer or agent group; they are validated and do
 * not change the answer yet.
 */
export const HttpRouteQuery = z.object({ tenant: identifier, merchant: identifier, customer: identifier.optional(), group: identifier.optional() });

export const HttpLocateQuery = z.object({ tenant: identifier, user: identifier });

/** Body of the admin API's block and unblock calls. */
export const HttpCellList = z.object({ cells: z.array(identifier).min(1).max(1024) });

export const HttpCapacityBody = z.object({ maxDevices: z.number().int().min(0).max(100_000_000) });

/** A signed placement, as `cellmesh operator place` makes it (mesh/claim-proof.ts, SignedPlacement). */
export const HttpPlaceBody = z.object({
  tenant: identifier,
  merchant: identifier,
  cell: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'must be a cell id'),
  epoch: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  key: z.string().min(1).max(128),
  signature: z.base64().max(128),
});

export const HttpMoveBody = z.object({ tenant: identifier, merchant: identifier, to: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'must be a cell id') });
