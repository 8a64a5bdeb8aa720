import type { AttachmentsConfig } from '../settings.js';
import { CellError, ErrorCode } from '../protocol/errors.js';

/** Attachments of a conversation hosted on cell `home`: not carried across cells yet. */
export function notAcrossCells(conv: string, home?: string): CellError {
  const where = home === undefined ? 'another cell' : `cell ${home}`;
  return new CellError(ErrorCode.AttachmentCrossCell, `conversation ${conv} is hosted on ${where}; attachments are not sent or served across cells yet`);
}

/** An upload over its tenant's limit of `maxBytes` is refused (413). */
export function tooLarge(maxBytes: number): CellError {
  return new CellError(ErrorCode.AttachmentTooLarge, `an attachment may have at most ${maxBytes} bytes`, { maxBytes });
}

/** Throws ATTACHMENT_TOO_LARGE or ATTACHMENT_TYPE_REFUSED unless the tenant accepts the upload; BAD_FRAME when empty. */
export function checkUpload(config: AttachmentsConfig, byteCount: number, sniffedType: string): void {
  if (byteCount === 0) throw new CellError(ErrorCode.BadFrame, 'an attachment needs at least one byte (send the file as the request body)');
  if (byteCount > config.maxBytes) throw tooLarge(config.maxBytes);
  if (!config.types.includes(sniffedType)) {
    throw new CellError(ErrorCode.AttachmentTypeRefused, `files of type ${sniffedType} are not accepted here; accepted: ${config.types.join(', ')}`, {
      type: sniffedType,
    });
  }
}
