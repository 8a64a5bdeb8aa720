/**
 * A device that acks, closes and reconnects at once (a phone app resuming) must get a working
 * connection every time. Kept in a file of its own: the failure it guards against depends on the
 * state of the process (it shows in a fresh worker and can hide behind earlier tests).
 */
import { afterEach, expect, test } from 'vitest';
import { Cleanup, RawClient, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

test('a device reconnecting right after acking and closing is never dropped by the cell', async () => {
  const cell = await cleanup.cell();
  const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
  const tabletToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'tablet' });
  for (let index = 1; index <= 40; index++) phone.send({ op: 'send', id: `s${index}`, conv: CONV, cmid: `m${index}`, body: `b${index}` });
  await phone.until(() => phone.all('sent').length === 40, { what: 'all sent' });

  const dropped: string[] = [];
  for (let round = 0; round < 40; round++) {
    const tablet = await RawClient.connect(cell.url, tabletToken);
    try {
      await tablet.until(() => tablet.all('synced').length > 0 || tablet.closeCode !== undefined, { what: `synced in round ${round}` });
      if (tablet.closeCode !== undefined) {
        dropped.push(`round ${round}: closed with ${tablet.closeCode} after ${JSON.stringify(tablet.frames.map((frame) => frame.t))}`);
        continue;
      }
      const pong = await tablet.request({ op: 'ping', id: `p${round}` });
      expect(pong.t).toBe('pong');
      tablet.send({ op: 'ack', conv: CONV, seq: Math.min(40, 2 * (round + 1)) });
    } finally {
      await tablet.close();
    }
  }
  // Nothing here is a reason to close a device: every connection must live until its client closes it.
  expect(dropped).toEqual([]);
});
