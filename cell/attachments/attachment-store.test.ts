import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import type { Store, StoreOp } from '../../platform/store/index.js';
import { keys } from '../messaging/keys.js';
import { CellError } from '../protocol/errors.js';
import { AttachmentStore, CHUNK_BYTES, attachmentIdOf, messageAttachments } from './attachment-store.js';
import { LOCAL_STORES } from '../../testing/local-stores.js';

const TENANT = 'mall';
const CONV = 'm1:c1';

/** A store that counts its writes and their ops, to see what a put wrote. */
function counting(store: Store): { store: Store; writes: StoreOp[][] } {
  const writes: StoreOp[][] = [];
  const write = store.write.bind(store);
  store.write = (ops) => {
    writes.push([...ops]);
    return write(ops);
  };
  return { store, writes };
}


for (const { name, open } of LOCAL_STORES) {
  describe(`AttachmentStore on ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0)) await cleanup();
    });
    async function openAttachments(): Promise<{ attachments: AttachmentStore; store: Store; writes: StoreOp[][] }> {
      const opened = await open();
      cleanups.push(opened.cleanup);
      const { store, writes } = counting(opened.store);
      return { attachments: new AttachmentStore(store, new ManualClock()), store, writes };
    }

    it('stores bytes under their SHA-256, in chunks, in one write, and reads them back through the conversation', async () => {
      const { attachments, store, writes } = await openAttachments();
      const bytes = Buffer.alloc(CHUNK_BYTES * 2 + 17, 7);
      bytes[5] = 1;
      const id = await attachments.put(TENANT, CONV, bytes, { name: 'big.bin', type: 'application/octet-stream', from: 'c:c1' });
      expect(id).toBe(attachmentIdOf(bytes));
      expect(id).toMatch(/^[0-9a-f]{64}$/);
      expect(writes).toHaveLength(1);
      const chunks = await store.range({ ...keys.attachmentChunks(TENANT, id), limit: 10 });
      expect(chunks).toHaveLength(3);
      const read = await attachments.read(TENANT, CONV, id);
      expect(read.bytes.equals(bytes)).toBe(true);
      expect(read.reference).toMatchObject({ name: 'big.bin', type: 'application/octet-stream', bytes: bytes.byteLength, from: 'c:c1' });
    });

    it('writes nothing when the same bytes are uploaded again, and only a reference for another conversation', async () => {
      const { attachments, writes } = await openAttachments();
      const bytes = Buffer.from('hello, desk');
      const upload = { name: 'a.txt', type: 'text/plain', from: 'c:c1' };
      const first = await attachments.put(TENANT, CONV, bytes, upload);
      const again = await attachments.put(TENANT, CONV, bytes, upload);
      expect(again).toBe(first);
      expect(writes).toHaveLength(1);
      await attachments.put(TENANT, 'm2:c1', bytes, upload);
      expect(writes).toHaveLength(2);
      expect(writes[1]!.map((op) => op.key).sort()).toEqual([keys.attachmentReference(TENANT, 'm2:c1', first), keys.attachmentReferrer(TENANT, first, 'm2:c1')]);
    });

    it('refuses to read an attachment through a conversation it was not uploaded to, or in another tenant', async () => {
      const { attachments } = await openAttachments();
      const id = await attachments.put(TENANT, CONV, Buffer.from('secret'), { name: 's.txt', type: 'text/plain', from: 'c:c1' });
      await expect(attachments.read(TENANT, 'm1:c2', id)).rejects.toMatchObject({ code: 'ATTACHMENT_UNKNOWN' });
      await expect(attachments.read('market', CONV, id)).rejects.toBeInstanceOf(CellError);
    });

    it('gives a message the metadata of its attachments from the conversation’s references', async () => {
      const { attachments, store } = await openAttachments();
      const id = await attachments.put(TENANT, CONV, Buffer.from('x'), { name: 'x.txt', type: 'text/plain', from: 'c:c1' });
      const resolved = await messageAttachments(store, TENANT, CONV, [id]);
      expect(resolved).toEqual([{ id, name: 'x.txt', type: 'text/plain', bytes: 1 }]);
      const missing = 'f'.repeat(64);
      await expect(async () => messageAttachments(store, TENANT, CONV, [id, missing])).rejects.toMatchObject({ code: 'ATTACHMENT_UNKNOWN' });
    });
  });
}
