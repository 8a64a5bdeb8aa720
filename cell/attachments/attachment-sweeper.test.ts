import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../platform/logger.js';
import { ManualClock } from '../../platform/manual-clock.js';
import type { Store } from '../../platform/store/index.js';
import { TrackedStore, whenStoresIdle } from '../../testing/tracked-store.js';
import { TenantConfig } from '../settings.js';
import { AttachmentStore } from './attachment-store.js';
import { AttachmentSweeper } from './attachment-sweeper.js';
import { LOCAL_STORES } from '../../testing/local-stores.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const SECRET = 'sweeper-secret-0123456789abcdef-0123456';
const tenants = [
  TenantConfig.parse({ id: 'mall', secret: SECRET, retention: { attachmentsDays: 30 } }),
  TenantConfig.parse({ id: 'market', secret: SECRET }),
];
const upload = (name: string) => ({ name, type: 'text/plain', from: 'c:c1' });


for (const { name, open } of LOCAL_STORES) {
  describe(`AttachmentSweeper on ${name}`, () => {
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });
    async function world(options: { tracked?: boolean } = {}): Promise<{ clock: ManualClock; store: Store; attachments: AttachmentStore; sweeper: AttachmentSweeper }> {
      const opened = await open();
      cleanups.push(opened.cleanup);
      const store = options.tracked === true ? new TrackedStore(opened.store) : opened.store;
      const clock = new ManualClock();
      const attachments = new AttachmentStore(store, clock);
      const sweeper = new AttachmentSweeper({ attachments, store, clock, logger: silentLogger, tenants, firstSweepAfterMs: 1_000, intervalMs: DAY_MS, pageKeys: 2 });
      cleanups.push(() => sweeper.stop());
      return { clock, store, attachments, sweeper };
    }

    it('deletes references past the tenant’s retention, and contents no conversation references any more', async () => {
      const { clock, store, attachments, sweeper } = await world();
      const old = await attachments.put('mall', 'm1:c1', Buffer.from('old'), upload('old.txt'));
      const shared = await attachments.put('mall', 'm1:c1', Buffer.from('shared'), upload('shared.txt'));
      const otherTenant = await attachments.put('market', 'm9:c1', Buffer.from('old'), upload('old.txt'));
      clock.advance(20 * DAY_MS);
      await attachments.put('mall', 'm1:c2', Buffer.from('shared'), upload('shared.txt'));
      const recent = await attachments.put('mall', 'm1:c1', Buffer.from('recent'), upload('recent.txt'));
      clock.advance(11 * DAY_MS);

      expect(await sweeper.sweep()).toEqual({ references: 2, contents: 1 });
      await expect(attachments.read('mall', 'm1:c1', old)).rejects.toMatchObject({ code: 'ATTACHMENT_UNKNOWN' });
      expect(await store.range({ gte: `fb/mall/${old}`, lt: `fb/mall/${old}\x7f`, limit: 10 })).toEqual([]);
      await expect(attachments.read('mall', 'm1:c1', shared)).rejects.toMatchObject({ code: 'ATTACHMENT_UNKNOWN' });
      expect((await attachments.read('mall', 'm1:c2', shared)).bytes.toString()).toBe('shared');
      expect((await attachments.read('mall', 'm1:c1', recent)).bytes.toString()).toBe('recent');
      // A tenant without retention keeps everything, even the same content.
      expect((await attachments.read('market', 'm9:c1', otherTenant)).bytes.toString()).toBe('old');
      expect(await sweeper.sweep()).toEqual({ references: 0, contents: 0 });
    });

    it('sweeps on its clock: first after start, then every interval, and not after stop', async () => {
      const { clock, store, attachments, sweeper } = await world({ tracked: true });
      const id = await attachments.put('mall', 'm1:c1', Buffer.from('x'), upload('x.txt'));
      const state = (): Promise<string> => attachments.reference('mall', 'm1:c1', id).then(() => 'kept', (error: { code: string }) => error.code);
      sweeper.start();
      // Day by day: each sweep finds the upload younger than 30 days, until the day after.
      const kept: string[] = [];
      for (let day = 1; day <= 31; day++) {
        clock.advance(DAY_MS);
        await whenStoresIdle([store as TrackedStore]);
        kept.push(await state());
      }
      expect(kept.lastIndexOf('kept')).toBe(29);
      expect(kept.at(-1)).toBe('ATTACHMENT_UNKNOWN');
      await sweeper.stop();
      const later = await attachments.put('mall', 'm1:c1', Buffer.from('y'), upload('y.txt'));
      clock.advance(62 * DAY_MS);
      await whenStoresIdle([store as TrackedStore]);
      expect((await attachments.read('mall', 'm1:c1', later)).bytes.toString()).toBe('y');
    });

    it('never drops content that an upload racing with the deletion references', async () => {
      const { clock, attachments } = await world();
      const id = await attachments.put('mall', 'm1:c1', Buffer.from('raced'), upload('a.txt'));
      clock.advance(DAY_MS);
      const [dropped] = await Promise.all([attachments.forget('mall', 'm1:c1', id), attachments.put('mall', 'm1:c2', Buffer.from('raced'), upload('b.txt'))]);
      expect(dropped).toBe(true);
      expect((await attachments.read('mall', 'm1:c2', id)).bytes.toString()).toBe('raced');
    });
  });
}
