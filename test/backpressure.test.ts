/**
 * A device that stops reading must not hold up anyone: the cell closes it (4008) once more than
 * `maxBackpressureBytes` wait for it, the other devices get every message in order meanwhile,
 * and the slow device resyncs everything after its cursor when it comes back.
 */
import type { Socket } from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { metricValue } from '../platform/prometheus-text.js';
import {
  Cleanup,
  deliveryProblems,
  eventually,
  fetchMetrics,
  hasAll,
  httpRequest,
  sendMessage,
  tokenFor,
} from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

/** The net.Socket under a ws client. */
function tcpOf(client: { socket: unknown }): Socket {
  return (client.socket as { _socket: Socket })._socket;
}

test('a device that does not read is closed with 4008; the others get everything; it resyncs after its cursor', async () => {
  const cell = await cleanup.cell({ limits: { maxBackpressureBytes: 65_536, deliveryWindow: 10_000 } });
  const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
  const slowToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'slow' });
  const slow = await cleanup.client(cell.url, slowToken);
  const fast = await cleanup.client(cell.url, await tokenFor({ user: 'a2', merchant: 'm1', device: 'fast' }));
  fast.autoAck();

  // The slow device first takes and acks a few small messages: its cursor is at 5.
  for (let index = 1; index <= 5; index++) await sendMessage(phone, CONV, `small-${index}`, `small ${index}`);
  await slow.until(() => slow.messages(CONV).length === 5);
  slow.send({ op: 'ack', conv: CONV, seq: 5 });
  await eventually(async () => {
    const answer = await httpRequest('GET', `${cell.httpUrl}/v1/inbox`, { token: slowToken });
    return (answer.body as { conversations: Array<{ deliveredSeq: number }> }).conversations[0]?.deliveredSeq === 5;
  }, 'the slow device cursor 5 to be stored');

  // Now it stops reading: its TCP socket is paused, so the kernel buffers fill and uWS queues.
  tcpOf(slow).pause();
  const body = 'x'.repeat(15_000);
  let total = 5;
  let closes = 0;
  // One at a time, so that a device that reads keeps up (a burst far above maxBackpressureBytes
  // in one tick is another matter, tested below). Bounded: the kernel buffers on loopback hold
  // a few MB; 1000 × 15 KB is far beyond that.
  for (let chunk = 0; chunk < 50 && closes === 0; chunk++) {
    for (let index = 0; index < 20; index++) {
      total++;
      await sendMessage(phone, CONV, `big-${total}`, `${body} ${total}`);
    }
    closes = metricValue(await fetchMetrics(cell.httpUrl), 'cellmesh_backpressure_closes_total') ?? 0;
  }
  expect(closes).toBeGreaterThanOrEqual(1);
  // The cell let go of it: the slow device no longer counts as connected.
  await eventually(async () => {
    const answer = await httpRequest('GET', `${cell.httpUrl}/v1/presence?users=a1`, { token: slowToken });
    return (answer.body as { users: Array<{ devices: unknown[] }> }).users[0]?.devices.length === 0;
  }, 'the slow device to leave presence');

  // Messages while it is away.
  for (let index = 0; index < 10; index++) {
    total++;
    await sendMessage(phone, CONV, `while-away-${total}`, `while away ${total}`);
  }

  // The other agent got every message, in order, throughout.
  await fast.until(() => hasAll(fast, CONV, total), { what: 'the fast agent to have everything', timeoutMs: 20_000 });
  expect(deliveryProblems(fast, CONV, total)).toEqual([]);
  expect(fast.closeCode).toBeUndefined();

  // Reading again, the slow device finds a prefix of the conversation, in order, then the 4008 close.
  tcpOf(slow).resume();
  await slow.whenClosed();
  expect(slow.closeCode).toBe(4008);
  const seen = slow.messages(CONV).map((message) => message.seq);
  expect(seen).toEqual(Array.from({ length: seen.length }, (_, index) => index + 1));
  expect(seen.length).toBeLessThan(total);

  // Back with the same device id: exactly what lies after its cursor (6..total), then synced.
  const back = await cleanup.client(cell.url, slowToken);
  back.autoAck();
  await back.until(() => back.all('synced').length > 0 || back.closeCode !== undefined, { what: 'the slow device to resync', timeoutMs: 20_000 });
  expect(back.closeCode, 'the resyncing device was closed').toBeUndefined();
  const resynced = back.messages(CONV);
  expect(resynced.map((message) => message.seq)).toEqual(Array.from({ length: total - 5 }, (_, index) => index + 6));
  expect(resynced.at(-1)?.body).toBe(`while away ${total}`);
  expect(back.closeCode).toBeUndefined();
});

test('a device catching up a page of large messages is not closed as too slow', async () => {
  // Defaults: maxBackpressureBytes 1 MiB, syncPageSize 100, deliveryWindow 256.
  const cell = await cleanup.cell();
  const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
  const deskToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
  // 100 messages of 15 KB (1.5 MB) arrive while the agent's desk is offline...
  const body = 'y'.repeat(15_000);
  for (let index = 1; index <= 100; index++) phone.send({ op: 'send', id: `s${index}`, conv: CONV, cmid: `m${index}`, body: `${body} ${index}` });
  await phone.until(() => phone.all('sent').length === 100, { what: 'all acked' });

  // ...and it comes online, reading as fast as loopback allows.
  const closeCodes: number[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const desk = await cleanup.client(cell.url, deskToken);
    desk.autoAck();
    await desk.until(() => desk.all('synced').length > 0 || desk.closeCode !== undefined, { what: 'synced or closed', timeoutMs: 20_000 });
    if (desk.closeCode === undefined) {
      expect(deliveryProblems(desk, CONV, 100)).toEqual([]);
      break;
    }
    closeCodes.push(desk.closeCode);
  }
  // A reading device is never "too slow": a catch-up page pushed in one go must not close it.
  expect(closeCodes).toEqual([]);
});

test('history of large messages is answered in pages bounded by bytes, never closed as too slow', async () => {
  // Defaults: maxBackpressureBytes 1 MiB, so an answer holds at most 256 KiB of messages.
  const cell = await cleanup.cell();
  const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
  const total = 100;
  // The longest bodies a send may carry, of characters that take 3 bytes each in UTF-8: 4.8 MB.
  const body = '€'.repeat(16_384 - 8);
  for (let first = 1; first <= total; first += 20) {
    for (let index = first; index < first + 20; index++) phone.send({ op: 'send', id: `s${index}`, conv: CONV, cmid: `m${index}`, body: `${body} ${String(index).padStart(3, '0')}` });
    await phone.until(() => phone.all('sent').length === first + 19, { what: `sends up to ${first + 19}` });
  }

  const reader = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'reader' }));
  reader.autoAck();
  await reader.until(() => reader.all('synced').length > 0, { what: 'synced', timeoutMs: 20_000 });
  const seqs: number[] = [];
  let before: number | undefined;
  for (let pageNumber = 0; pageNumber < total; pageNumber++) {
    const page = await reader.request({ id: `h${pageNumber}`, op: 'history', conv: CONV, limit: 200, ...(before === undefined ? {} : { before }) });
    if (page.t !== 'history') throw new Error(`history answered ${JSON.stringify(page).slice(0, 300)}`);
    expect(Buffer.byteLength(JSON.stringify(page.messages))).toBeLessThanOrEqual(256 * 1024);
    expect(page.messages.length).toBeGreaterThan(0);
    seqs.unshift(...page.messages.map((message) => message.seq));
    if (!page.hasMore) break;
    before = page.messages[0]!.seq;
  }
  expect(reader.closeCode).toBeUndefined();
  expect(seqs).toEqual(Array.from({ length: total }, (_, index) => index + 1));

  // The same bound over HTTP.
  const answer = await httpRequest('GET', `${cell.httpUrl}/v1/conversations/${CONV}/messages?limit=200`, { token: await tokenFor({ user: 'c1', device: 'web' }) });
  const page = answer.body as { messages: Array<{ seq: number }>; hasMore: boolean };
  expect(page.hasMore).toBe(true);
  expect(page.messages.at(-1)?.seq).toBe(total);
  expect(Buffer.byteLength(JSON.stringify(page.messages))).toBeLessThanOrEqual(256 * 1024);
}, 60_000);

test('an inbox of many conversations is answered in pages bounded by bytes, never closed as too slow', async () => {
  // The smallest backpressure limit (64 KiB): an answer holds at most 16 KiB; the summaries of
  // 600 conversations take about 83 KB.
  const cell = await cleanup.cell({ limits: { maxBackpressureBytes: 65_536 } });
  const total = 600;
  const customers = Array.from({ length: total }, (_, index) => `c${String(index).padStart(3, '0')}`);
  for (let first = 0; first < total; first += 50) {
    await Promise.all(
      customers.slice(first, first + 50).map(async (customer) => {
        const answer = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/m1:${customer}/messages`, {
          token: await tokenFor({ user: customer, device: 'web' }),
          json: { cmid: 'hello', body: `hello from ${customer}` },
        });
        expect(answer.status).toBe(201);
      }),
    );
  }

  const deskToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
  const desk = await cleanup.client(cell.url, deskToken);
  desk.autoAck();
  await desk.until(() => desk.all('synced').length > 0, { what: 'synced', timeoutMs: 20_000 });
  const listed: string[] = [];
  let after: string | undefined;
  for (let pageNumber = 0; pageNumber < total; pageNumber++) {
    const page = await desk.request({ id: `i${pageNumber}`, op: 'inbox', ...(after === undefined ? {} : { after }) });
    if (page.t !== 'inbox') throw new Error(`inbox answered ${JSON.stringify(page).slice(0, 300)}`);
    expect(Buffer.byteLength(JSON.stringify(page.conversations))).toBeLessThanOrEqual(16 * 1024);
    expect(page.conversations.length).toBeGreaterThan(0);
    listed.push(...page.conversations.map((conversation) => conversation.conv));
    if (!page.hasMore) break;
    after = page.conversations.at(-1)!.conv;
  }
  expect(desk.closeCode).toBeUndefined();
  expect(listed).toEqual(customers.map((customer) => `m1:${customer}`));

  // The same pages over HTTP.
  const httpListed: string[] = [];
  let query = '';
  for (let pageNumber = 0; pageNumber < total; pageNumber++) {
    const answer = await httpRequest('GET', `${cell.httpUrl}/v1/inbox${query}`, { token: deskToken });
    const page = answer.body as { conversations: Array<{ conv: string }>; hasMore: boolean };
    httpListed.push(...page.conversations.map((conversation) => conversation.conv));
    if (!page.hasMore) break;
    query = `?after=${encodeURIComponent(page.conversations.at(-1)!.conv)}`;
  }
  expect(httpListed).toEqual(listed);
}, 60_000);
