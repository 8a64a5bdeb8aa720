/**
 * A resend of a client message id with another body (issue 15, item 8), over real sockets: it is
 * answered IDEMPOTENCY_CONFLICT (409 over HTTP) whether the first message is being written,
 * cached, or only on disk after a restart; the second body is never stored; the same body is
 * still answered with the original seq. The SDK surfaces the code as a final error.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { connectNode } from '../client/index.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { LevelStore } from '../platform/store/index.js';
import { Cleanup, GatedStore, type RawClient, errorCodeOf, eventually, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

async function storedBodies(client: RawClient): Promise<Array<[number, string, string]>> {
  const answer = await client.request({ id: `h-${client.frames.length}`, op: 'history', conv: CONV, limit: 200 });
  if (answer.t !== 'history') throw new Error(`history answered ${JSON.stringify(answer)}`);
  return answer.messages.map((message) => [message.seq, message.cmid, message.body]);
}

function expectConflict(answer: ServerFrame, id: string): void {
  expect(answer).toMatchObject({ t: 'error', id, code: 'IDEMPOTENCY_CONFLICT' });
}

describe('a resend of a cmid with another body', () => {
  test('is IDEMPOTENCY_CONFLICT over WebSocket and 409 over HTTP; nothing of it is stored; the same body still gets the seq', async () => {
    const cell = await cleanup.cell();
    const token = await tokenFor({ user: 'c1', device: 'phone' });
    const phone = await cleanup.client(cell.url, token);
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    expect(await sendMessage(phone, CONV, 'c-1', 'hello')).toMatchObject({ seq: 1 });

    expectConflict(await phone.request({ id: 'changed', op: 'send', conv: CONV, cmid: 'c-1', body: 'hello, edited' }), 'changed');
    const http = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/${encodeURIComponent(CONV)}/messages`, {
      token,
      json: { cmid: 'c-1', body: 'over http, edited' },
    });
    expect([http.status, errorCodeOf(http)]).toEqual([409, 'IDEMPOTENCY_CONFLICT']);

    expect(await sendMessage(phone, CONV, 'c-1', 'hello', 'same-body')).toMatchObject({ id: 'same-body', seq: 1 });
    const sameOverHttp = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/${encodeURIComponent(CONV)}/messages`, { token, json: { cmid: 'c-1', body: 'hello' } });
    expect([sameOverHttp.status, sameOverHttp.body]).toEqual([200, expect.objectContaining({ seq: 1, duplicate: true })]);
    expect(await sendMessage(phone, CONV, 'c-2', 'next')).toMatchObject({ seq: 2 });
    expect(await storedBodies(phone)).toEqual([
      [1, 'c-1', 'hello'],
      [2, 'c-2', 'next'],
    ]);
    // The other party never heard of the refused bodies.
    await agent.until(() => agent.messages(CONV).length === 2, { what: 'both messages at the agent' });
    expect(agent.messages(CONV).map((message) => message.body)).toEqual(['hello', 'next']);
  });

  test('while the first is still being written, the conflicting resend is refused and the first is acked alone', async () => {
    const store = new GatedStore();
    const cell = await cleanup.cell({ storeInstance: store });
    // Runs before the cell's stop (cleanup goes newest first), which would wait for a held write.
    cleanup.add(() => store.release());
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    await sendMessage(phone, CONV, 'warm', 'loads the conversation');

    store.hold();
    phone.send({ op: 'send', id: 'first', conv: CONV, cmid: 'c-1', body: 'original' });
    await eventually(() => store.waiting === 1, 'the write held at the gate');
    expectConflict(await phone.request({ id: 'second', op: 'send', conv: CONV, cmid: 'c-1', body: 'rewritten' }), 'second');
    store.release();
    expect(await phone.next((frame) => frame.t === 'sent' && frame.id === 'first', { fromStart: true })).toMatchObject({ cmid: 'c-1', seq: 2 });
    expect(await storedBodies(phone)).toEqual([
      [1, 'warm', 'loads the conversation'],
      [2, 'c-1', 'original'],
    ]);
  });

  test('after a restart, with the first message only on disk, the conflict is still refused', async () => {
    const directory = await cleanup.tempDir();
    const first = await cleanup.cell({ storeInstance: new LevelStore({ directory }) });
    const phone = await cleanup.client(first.url, await tokenFor({ user: 'c1', device: 'phone' }));
    await sendMessage(phone, CONV, 'c-1', 'before the restart');
    await phone.close();
    await first.stop();

    const second = await cleanup.cell({ storeInstance: new LevelStore({ directory }) });
    const again = await cleanup.client(second.url, await tokenFor({ user: 'c1', device: 'phone' }));
    expectConflict(await again.request({ id: 'changed', op: 'send', conv: CONV, cmid: 'c-1', body: 'after the restart' }), 'changed');
    expect(await storedBodies(again)).toEqual([[1, 'c-1', 'before the restart']]);
  });

  test('the SDK rejects the send with IDEMPOTENCY_CONFLICT and does not retry it', async () => {
    const cell = await cleanup.cell();
    const client = await connectNode({ url: cell.url, token: await tokenFor({ user: 'c1', device: 'sdk' }), signal: AbortSignal.timeout(10_000) });
    cleanup.add(() => client.close());
    await expect(client.send(CONV, 'hello', { cmid: 'c-1' })).resolves.toMatchObject({ seq: 1 });
    await expect(client.send(CONV, 'hello, edited', { cmid: 'c-1' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    await expect(client.send(CONV, 'next')).resolves.toMatchObject({ seq: 2 });
  });
});
