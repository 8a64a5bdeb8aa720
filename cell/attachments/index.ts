/** Images and files in conversations: stored content-addressed, sniffed, limited per tenant (docs/desk.md, "Attachments"). */
export { AttachmentSweeper, type AttachmentSweeperInit, type SweepResult } from './attachment-sweeper.js';
export { AttachmentStore, CHUNK_BYTES, appendWithAttachments, attachmentIdOf, messageAttachments, type AttachmentMeta, type AttachmentReference } from './attachment-store.js';
export { contentDisposition } from './content-disposition.js';
export { UNKNOWN_MEDIA_TYPE, sniffMediaType } from './sniff.js';
export { checkUpload, notAcrossCells, tooLarge } from './upload-policy.js';
export { DEFAULT_UPLOAD_RATE, UploadRateLimiter, type UploadRate } from './upload-rate-limiter.js';
