import { createHash } from 'node:crypto';
import type { Clock } from '../../platform/clock.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import { keys } from '../messaging/keys.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { MessageAttachment } from '../protocol/frames.js';
import type { AppendRequest, AppendResult } from '../messaging/conversation-log.js';
import { KeyedSerializer, SerializerFullError } from '../messaging/keyed-serializer.js';

/** Bytes per stored chunk: values stay far below what every store adapter takes comfortably. */
export const CHUNK_BYTES = 256 * 1024;
/** Uploads and deletions waiting for one another, over all contents. */
const MAX_WAITING_CHANGES = 4_096;
/** Chunks of the largest content a tenant may accept (AttachmentsConfig.maxBytes, 100 MiB). */
const MAX_CHUNKS = Math.ceil((100 * 1024 * 1024) / CHUNK_BYTES);

/** An attachment's content, stored once per tenant whatever the conversations that reference it. */
export interface AttachmentMeta {
  /** Media type sniffed from the bytes. */
  type: string;
  bytes: number;
  chunks: number;
  createdAtMs: number;
}

/** An attachment uploaded to one conversation: what lets its parties read it. */
export interface AttachmentReference {
  /** The file name the uploader gave. */
  name: string;
  type: string;
  bytes: number;
  /** The uploader's party id (principal.ts). */
  from: string;
  /** When it was uploaded to this conversation (retention counts from here). */
  createdAtMs: number;
}

/** The id of an attachment: the SHA-256 of its bytes, lower-case hex. */
export function attachmentIdOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Attachments in the cell's store, content-addressed (keys.ts, `fb/`, `fa/`, `fx/`). The bytes
 * of one content are stored once per tenant; each conversation they were uploaded to has a
 * reference entry, and only through a reference can they be read, so an id alone (a hash,
 * guessable for a known file) opens nothing.
 */
export class AttachmentStore {
  /**
   * Changes of one content (an upload referencing it, a deletion that may drop it) one at a
   * time: otherwise a deletion could find no reference and drop the content while an upload,
   * having seen it stored, adds a reference to it.
   */
  private readonly changes = new KeyedSerializer(MAX_WAITING_CHANGES);

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /**
   * Stores `bytes` as uploaded to `conv` by party `from`: the content (unless stored already),
   * the reference and its index entry, in one atomic write; writes nothing when both are
   * stored as they are. Resolves with the attachment's id.
   */
  async put(tenant: string, conv: string, bytes: Uint8Array, upload: { name: string; type: string; from: string }): Promise<string> {
    const id = attachmentIdOf(bytes);
    await this.changeOf(tenant, id, () => this.putInTurn(tenant, conv, id, bytes, upload));
    return id;
  }

  /**
   * Deletes the reference of `conv` to attachment `id`, and its content when no other
   * conversation references it any more; resolves with whether the content went too.
   */
  forget(tenant: string, conv: string, id: string): Promise<boolean> {
    return this.changeOf(tenant, id, async () => {
      await this.store.write([
        { type: 'del', key: keys.attachmentReference(tenant, conv, id) },
        { type: 'del', key: keys.attachmentReferrer(tenant, id, conv) },
      ]);
      const referrers = await this.store.range({ ...keys.attachmentReferrers(tenant, id), limit: 1 });
      if (referrers.length > 0) return false;
      // Also chunks that a move failing midway left without their meta.
      const chunks = await this.store.range({ ...keys.attachmentChunks(tenant, id), limit: MAX_CHUNKS });
      await this.store.write([{ type: 'del', key: keys.attachmentBlob(tenant, id) }, ...chunks.map(([key]): StoreOp => ({ type: 'del', key }))]);
      return true;
    });
  }

  private async changeOf<T>(tenant: string, id: string, change: () => Promise<T>): Promise<T> {
    try {
      return await this.changes.run(`${tenant}/${id}`, change);
    } catch (error) {
      if (error instanceof SerializerFullError) throw new CellError(ErrorCode.StoreUnavailable, 'too many attachment changes are waiting for the store; retry');
      throw error;
    }
  }

  private async putInTurn(tenant: string, conv: string, id: string, bytes: Uint8Array, upload: { name: string; type: string; from: string }): Promise<void> {
    const [meta, referenced] = await this.store.getMany([keys.attachmentBlob(tenant, id), keys.attachmentReference(tenant, conv, id)]);
    const ops: StoreOp[] = [];
    const nowMs = this.clock.now();
    if (meta === undefined) ops.push(...contentOps(tenant, id, bytes, upload.type, nowMs));
    const stored = referenced === undefined ? undefined : (JSON.parse(referenced) as AttachmentReference);
    if (stored === undefined || stored.name !== upload.name || stored.from !== upload.from) {
      const reference: AttachmentReference = { name: upload.name, type: upload.type, bytes: bytes.byteLength, from: upload.from, createdAtMs: nowMs };
      ops.push(
        { type: 'put', key: keys.attachmentReference(tenant, conv, id), value: JSON.stringify(reference) },
        { type: 'put', key: keys.attachmentReferrer(tenant, id, conv), value: '' },
      );
    }
    if (ops.length > 0) await this.store.write(ops);
  }

  /** The reference of attachment `id` in `conv`; ATTACHMENT_UNKNOWN when it was not uploaded there. */
  async reference(tenant: string, conv: string, id: string): Promise<AttachmentReference> {
    const value = await this.store.get(keys.attachmentReference(tenant, conv, id));
    if (value === undefined) throw unknownAttachment(conv, id);
    return JSON.parse(value) as AttachmentReference;
  }

  /** The bytes of attachment `id` as referenced from `conv`, with its reference. */
  async read(tenant: string, conv: string, id: string): Promise<{ reference: AttachmentReference; bytes: Buffer }> {
    const reference = await this.reference(tenant, conv, id);
    const metaValue = await this.store.get(keys.attachmentBlob(tenant, id));
    // A reference is written with or after its content and deleted before it: a missing content is a bug or a lost store.
    if (metaValue === undefined) throw new Error(`attachment ${id} of ${conv} is referenced but its content is missing`);
    const meta = JSON.parse(metaValue) as AttachmentMeta;
    const chunks = await this.store.range({ ...keys.attachmentChunks(tenant, id), limit: meta.chunks + 1 });
    const bytes = Buffer.concat(chunks.map(([, value]) => Buffer.from(value, 'base64')));
    if (chunks.length !== meta.chunks || bytes.byteLength !== meta.bytes) {
      throw new Error(`attachment ${id} has ${chunks.length} chunks of ${bytes.byteLength} bytes stored, not ${meta.chunks} of ${meta.bytes}`);
    }
    return { reference, bytes };
  }
}

/**
 * What a message carries for the attachments `ids` of `conv`, from their reference entries;
 * ATTACHMENT_UNKNOWN names the first that was not uploaded to `conv`. Synchronous when the store
 * answers locally (memory, LevelDB), so a send is queued in the turn it arrived and a device's
 * messages keep their order; a remote store (Redis) answers with a promise.
 */
export function messageAttachments(store: Store, tenant: string, conv: string, ids: readonly string[]): MessageAttachment[] | Promise<MessageAttachment[]> {
  const referenceKeys = ids.map((id) => keys.attachmentReference(tenant, conv, id));
  const toAttachments = (values: Array<string | undefined>): MessageAttachment[] =>
    values.map((value, index) => {
      const id = ids[index]!;
      if (value === undefined) throw unknownAttachment(conv, id);
      const { name, type, bytes } = JSON.parse(value) as AttachmentReference;
      return { id, name, type, bytes };
    });
  const local = store.getManySync?.(referenceKeys);
  return local === undefined ? store.getMany(referenceKeys).then(toAttachments) : toAttachments(local);
}

/**
 * Appends `request` with the metadata of the attachments `ids` of its conversation (none: as it
 * is), through `append`; synchronously when the store answers locally (messageAttachments).
 */
export function appendWithAttachments(
  store: Store,
  request: AppendRequest,
  ids: readonly string[] | undefined,
  append: (request: AppendRequest) => Promise<AppendResult>,
): Promise<AppendResult> {
  if (ids === undefined) return append(request);
  const attachments = messageAttachments(store, request.tenant, request.conv, ids);
  return attachments instanceof Promise ? attachments.then((resolved) => append({ ...request, attachments: resolved })) : append({ ...request, attachments });
}

function contentOps(tenant: string, id: string, bytes: Uint8Array, type: string, nowMs: number): StoreOp[] {
  const chunks = Math.ceil(bytes.byteLength / CHUNK_BYTES);
  const meta: AttachmentMeta = { type, bytes: bytes.byteLength, chunks, createdAtMs: nowMs };
  const ops: StoreOp[] = [{ type: 'put', key: keys.attachmentBlob(tenant, id), value: JSON.stringify(meta) }];
  for (let index = 0; index < chunks; index++) {
    const chunk = bytes.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES);
    ops.push({ type: 'put', key: keys.attachmentChunk(tenant, id, index), value: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('base64') });
  }
  return ops;
}

function unknownAttachment(conv: string, id: string): CellError {
  return new CellError(ErrorCode.AttachmentUnknown, `attachment ${id} was not uploaded to conversation ${conv}`);
}
