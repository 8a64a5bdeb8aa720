/**
 * The retention of conversations (docs/operations.md, "Retention") on a cell over real uWS and
 * LevelDB, with a virtual clock: messages older than the tenant's `conversationDays` are deleted
 * with their idempotency records, the newest of each conversation stays; history starts at the
 * first message kept and says there is no more; devices sync from there, also one whose cursor
 * lies among the deleted messages.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import type { ChatMessage, ServerFrame } from '../cell/protocol/frames.js';
import { ManualClock } from '../platform/manual-clock.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, Cleanup, RawClient, SECRET, eventually, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const DAY_MS = 24 * 60 * 60 * 1000;

async function startRetentionCell(directory: string, clock: ManualClock): Promise<{ cell: RunningCell; url: string }> {
  const config = parseCellConfig({
    cell: { id: 'retention-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    admin: { token: ADMIN_TOKEN },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }], retention: { conversationDays: 30 } }],
  });
  const cell = await startCell({ config, logger: silentLogger, clock });
  cleanup.add(() => cell.stop());
  return { cell, url: `http://127.0.0.1:${cell.port}` };
}

async function connect(url: string, user: string, device: string): Promise<RawClient> {
  const client = await RawClient.connect(url, await tokenFor({ user, device, ttlSeconds: 90 * 24 * 3600 }));
  cleanup.add(() => client.close());
  return client;
}

describe('retention of conversations', () => {
  test('deletes messages past the retention but the newest; history and sync start at the first kept', async () => {
    const clock = new ManualClock(Date.now());
    const { url } = await startRetentionCell(await cleanup.tempDir(), clock);
    const phone = await connect(url, 'cathy', 'phone');
    for (let index = 1; index <= 2; index++) await sendMessage(phone, 'm1:cathy', `old${index}`, `old ${index}`);
    const fileToken = await tokenFor({ user: 'cathy', device: 'web', ttlSeconds: 90 * 24 * 3600 });
    const uploaded = await fetch(`${url}/v1/conversations/m1:cathy/attachments?name=old.txt`, { method: 'POST', headers: { authorization: `Bearer ${fileToken}`, 'content-type': 'text/plain' }, body: 'an old file' });
    const { id } = (await uploaded.json()) as { id: string };
    expect(await phone.request({ id: 'f', op: 'send', conv: 'm1:cathy', cmid: 'old3', body: 'old 3', attachments: [id] })).toMatchObject({ t: 'sent', seq: 3 });
    const dora = await connect(url, 'dora', 'laptop');
    for (let index = 1; index <= 2; index++) await sendMessage(dora, 'm1:dora', `d${index}`, `dora ${index}`);
    // The phone has acked seq 1 only, and its cursor is written.
    phone.send({ op: 'ack', conv: 'm1:cathy', seq: 1 });
    await phone.close();
    clock.advance(10_000);

    clock.advance(31 * DAY_MS);
    const tablet = await connect(url, 'cathy', 'tablet');
    await sendMessage(tablet, 'm1:cathy', 'new', 'a month later');
    // The sweeper runs every minute of virtual time.
    const conversation = `${url}/v1/conversations/m1:cathy/messages`;
    const token = await tokenFor({ user: 'cathy', device: 'web', ttlSeconds: 90 * 24 * 3600 });
    let history: { messages: ChatMessage[]; hasMore: boolean } = { messages: [], hasMore: true };
    await eventually(async () => {
      clock.advance(60_000);
      history = (await httpRequest('GET', conversation, { token })).body as typeof history;
      return history.messages.length === 1;
    }, 'the old messages of cathy deleted');
    expect(history).toMatchObject({ messages: [{ seq: 4, cmid: 'new' }], hasMore: false });
    await eventually(async () => {
      clock.advance(60_000);
      const dorasHistory = (await httpRequest('GET', `${url}/v1/conversations/m1:dora/messages`, { token: await tokenFor({ user: 'dora', ttlSeconds: 90 * 24 * 3600 }) })).body as typeof history;
      // Dora's conversation is all old: its newest message stays, and holds its head.
      return dorasHistory.messages.length === 1 && dorasHistory.messages[0]!.seq === 2;
    }, 'the old messages of dora deleted but her newest');

    // The old message's attachment went with it.
    const download = await httpRequest('GET', `${url}/v1/conversations/m1:cathy/attachments/${id}`, { token: fileToken });
    expect(download.status).toBe(404);
    // A page asked below the first kept message is empty and says so.
    const below = (await httpRequest('GET', `${conversation}?before=4`, { token })).body;
    expect(below).toEqual({ conv: 'm1:cathy', messages: [], hasMore: false });

    // The phone's cursor (1) lies among the deleted messages: it goes on from the first kept.
    const phoneAgain = await connect(url, 'cathy', 'phone');
    await phoneAgain.until(() => phoneAgain.frames.some((frame: ServerFrame) => frame.t === 'synced'), { what: 'synced' });
    expect(phoneAgain.messages('m1:cathy').map((message) => message.seq)).toEqual([4]);
    // A device that never connected gets what is kept, and the conversation goes on from its head.
    const fresh = await connect(url, 'cathy', 'watch');
    await fresh.until(() => fresh.frames.some((frame: ServerFrame) => frame.t === 'synced'), { what: 'synced' });
    expect(fresh.messages('m1:cathy').map((message) => message.seq)).toEqual([4]);
    expect((await sendMessage(fresh, 'm1:cathy', 'after', 'after the sweep')).seq).toBe(5);
    // The idempotency records went with the messages: a resend that old is a new message.
    expect((await sendMessage(fresh, 'm1:cathy', 'old1', 'old 1')).seq).toBe(6);
  });
});
