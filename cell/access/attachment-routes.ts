import { z } from 'zod';
import type { Clock } from '../../platform/clock.js';
import { AttachmentStore, UploadRateLimiter, checkUpload, contentDisposition, notAcrossCells, sniffMediaType, tooLarge, type UploadRate } from '../attachments/index.js';
import type { CellCore } from '../cell-core.js';
import { principalKey, partyId } from '../messaging/principal.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { attachmentId } from '../protocol/frames.js';
import { attachmentsConfigOf, type AttachmentsConfig, type TenantConfig } from '../settings.js';
import { parseWith, type HttpRequestData } from './http-router.js';
import type { Identity } from './tokens.js';
import { conversationParameter, type RouteModule } from './uws-server.js';

export interface AttachmentRoutesOptions {
  core: CellCore;
  /** The cell's attachments, over the core's store; the cell's AttachmentSweeper shares it. */
  attachments: AttachmentStore;
  clock: Clock;
  /** A tenant's settings as they are now (the admin API changes them at runtime); undefined when not served. */
  tenantOf: (tenant: string) => Pick<TenantConfig, 'attachments'> | undefined;
  /** Uploads per identity (default DEFAULT_UPLOAD_RATE). */
  uploadRate?: UploadRate | undefined;
}

/**
 * Pages of any origin may read the answers: a widget on a merchant's site uploads to a cell of
 * another origin. Safe without an allowlist, since nothing is answered without a token and no
 * cookie is ever used.
 */
const ANSWER_HEADERS = { 'access-control-allow-origin': '*' };

/** A served attachment never changes (its id is its hash); only the browser of a party may keep it. */
const CACHE_CONTROL = 'private, max-age=31536000, immutable';

const FileName = z
  .string({ error: 'give the file name as the query parameter `name`' })
  .min(1)
  .max(255)
  .refine((name) => !/[\u0000-\u001f\u007f/\\]/.test(name), 'must not contain control characters, / or \\');

/**
 * The attachment routes (docs/protocol.md, "Attachments"): a party of a conversation uploads a
 * file's raw bytes to it, and its parties read them back. Conversations hosted on another cell
 * answer ATTACHMENT_CROSS_CELL.
 */
export function attachmentRoutes(options: AttachmentRoutesOptions): RouteModule {
  const { core, clock, attachments } = options;
  const limiter = new UploadRateLimiter(options.uploadRate);
  const configOf = (identity: Identity): AttachmentsConfig => attachmentsConfigOf(options.tenantOf(identity.tenant) ?? {});

  /** The conversation of the request, once `identity` is known to be one of its parties here. */
  const partyConversation = async (identity: Identity, request: HttpRequestData): Promise<string> => {
    const conv = conversationParameter(request.parameters[0]);
    const { home } = await core.authorizeParty(identity, conv);
    if (home !== undefined) throw notAcrossCells(conv, home);
    return conv;
  };

  return (router) => {
    router.handle(
      'post',
      '/v1/conversations/:conv/attachments',
      async (request) => {
        const identity = core.authenticate(tokenOf(request));
        const conv = await partyConversation(identity, request);
        const name = parseWith(FileName, request.query.get('name') ?? undefined);
        const waitMs = limiter.take(principalKey(identity), clock.now());
        if (waitMs > 0) throw new CellError(ErrorCode.RateLimited, `too many uploads: retry in ${waitMs} ms`, { retryAfterMs: waitMs });
        const type = await sniffMediaType(request.bytes);
        checkUpload(configOf(identity), request.bytes.byteLength, type);
        const id = await attachments.put(identity.tenant, conv, request.bytes, { name, type, from: partyId(identity) });
        return { status: 201, body: { id, type, bytes: request.bytes.byteLength, name } };
      },
      {
        // Decided from the token before the body is read: a body over the tenant's limit is never buffered.
        maxBodyBytes: (request) => configOf(core.authenticate(tokenOf(request))).maxBytes,
        bodyTooLarge: tooLarge,
        answerHeaders: ANSWER_HEADERS,
      },
    );
    router.handle('get', '/v1/conversations/:conv/attachments/:id', async (request) => {
      const identity = core.authenticate(tokenOf(request));
      const conv = await partyConversation(identity, request);
      const id = parseWith(attachmentId, request.parameters[1]);
      const { reference, bytes } = await attachments.read(identity.tenant, conv, id);
      return {
        status: 200,
        raw: bytes,
        // Plain text was sniffed as valid UTF-8: say so, or a browser guesses another charset.
        contentType: reference.type === 'text/plain' ? 'text/plain; charset=utf-8' : reference.type,
        headers: {
          'x-content-type-options': 'nosniff',
          'content-disposition': contentDisposition(reference.name, reference.type),
          'content-security-policy': "default-src 'none'; sandbox",
          'cache-control': CACHE_CONTROL,
        },
      };
    }, { answerHeaders: ANSWER_HEADERS });
  };
}

/**
 * The bearer token, or `?token=`: an `<img>` cannot send a header, and a page's upload with one
 * would need a CORS preflight, which a request with only safelisted headers does not.
 */
function tokenOf(request: HttpRequestData): string | undefined {
  return request.token || request.query.get('token') || undefined;
}
