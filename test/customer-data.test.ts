/**
 * The export and erasure of one customer (docs/desk.md, "Retention, export and erasure") over
 * real uWS and LevelDB on a standalone cell: every conversation of the customer exported a page
 * at a time with its cursors and desk records; erased with its devices closed, other customers
 * untouched, recorded in the audit log; bad input refused.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { EXPORT_PAGE_MESSAGES, type ExportPage } from '../cell/customer-data.js';
import type { ErasureAnswer } from '../cell/customer-erasure.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { silentLogger } from '../platform/logger.js';
import { ADMIN_TOKEN, Cleanup, RawClient, SECRET, errorCodeOf, eventually, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function startDataCell(directory: string): Promise<{ cell: RunningCell; url: string; admin: string }> {
  const config = parseCellConfig({
    cell: { id: 'data-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    admin: { token: ADMIN_TOKEN },
    limits: { ratePerSecond: 10_000, rateBurst: 10_000 },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1', agents: [{ id: 'ann', capacity: 5 }] }, { id: 'm2' }] }],
  });
  const cell = await startCell({ config, logger: silentLogger });
  cleanup.add(() => cell.stop());
  const url = `http://127.0.0.1:${cell.port}`;
  return { cell, url, admin: `${url}/v1/admin/tenants/mall` };
}

const admin = (method: string, url: string): ReturnType<typeof httpRequest> => httpRequest(method, url, { token: ADMIN_TOKEN });

async function connect(url: string, user: string, merchant?: string): Promise<RawClient> {
  const client = await RawClient.connect(url, await tokenFor({ user, ...(merchant === undefined ? {} : { merchant }) }));
  cleanup.add(() => client.close());
  return client;
}

/** Sends `count` messages without waiting between them, then waits for the last one's `sent`. */
async function sendMany(client: RawClient, conv: string, prefix: string, count: number): Promise<void> {
  const last = client.next((frame) => frame.t === 'sent' && frame.cmid === `${prefix}${count}`, { timeoutMs: 30_000 });
  for (let index = 1; index <= count; index++) client.send({ op: 'send', conv, cmid: `${prefix}${index}`, body: `${prefix} ${index}` });
  await last;
}

async function exportAll(base: string): Promise<ExportPage[]> {
  const pages: ExportPage[] = [];
  let after: string | undefined;
  do {
    const answer = await admin('GET', `${base}/export${after === undefined ? '' : `?after=${encodeURIComponent(after)}`}`);
    expect(answer.status).toBe(200);
    const page = answer.body as ExportPage;
    pages.push(page);
    after = page.next;
  } while (after !== undefined && pages.length < 20);
  return pages;
}

describe('export and erasure of one customer', () => {
  test('exports every conversation with cursors, consultation records and ratings, a page at a time', async () => {
    const { url, admin: base } = await startDataCell(await cleanup.tempDir());
    const ann = await connect(url, 'ann', 'm1');
    ann.autoAck();
    const cathy = await connect(url, 'cathy');
    cathy.autoAck();
    const assigned = cathy.next((frame: ServerFrame) => frame.t === 'consultation' && frame.state === 'assigned');
    await sendMessage(cathy, 'm1:cathy', 'hello', 'a question');
    await assigned;
    await sendMessage(ann, 'm1:cathy', 'answer', 'an answer');
    // The rating needs the close durable: its system message says so.
    const closedMessage = cathy.next((frame: ServerFrame) => frame.t === 'msg' && frame.event?.type === 'closed');
    expect(await ann.request({ id: 'close', op: 'close', conv: 'm1:cathy' })).toEqual({ t: 'ok', id: 'close' });
    await closedMessage;
    expect(await cathy.request({ id: 'rate', op: 'rate', conv: 'm1:cathy', score: 4, comment: 'quick' })).toEqual({ t: 'ok', id: 'rate' });
    await sendMany(cathy, 'm2:cathy', 'bulk', EXPORT_PAGE_MESSAGES + 20);
    expect(await cathy.request({ id: 'read', op: 'read', conv: 'm1:cathy', seq: 2 })).toMatchObject({ t: 'ok' });

    // Delivery cursors are written a little after the acks (coalesced).
    let pages: ExportPage[] = [];
    await eventually(async () => {
      pages = await exportAll(`${base}/customers/cathy`);
      return Object.keys(pages[0]!.conversations[0]!.deliveryCursors ?? {}).length > 0;
    }, 'a delivery cursor of cathy written');
    expect(pages.length).toBe(2);
    const [first, second] = pages as [ExportPage, ExportPage];
    expect(first.conversations.map((conversation) => conversation.conv)).toEqual(['m1:cathy', 'm2:cathy']);
    const withDesk = first.conversations[0]!;
    expect(withDesk).toMatchObject({ merchant: 'm1', hostedHere: true, readCursors: { 'c:cathy': expect.any(Number) as number, 'a:m1:ann': 3 } });
    expect(withDesk.messages.map((message) => message.cmid)).toContain('answer');
    expect(withDesk.lastConsultation).toMatchObject({ agent: 'ann', rated: true });
    expect(withDesk.ratings).toMatchObject([{ customer: 'cathy', agent: 'ann', score: 4, comment: 'quick' }]);
    expect(withDesk.deliveryCursors).toMatchObject({ d1: expect.any(Number) as number });
    const bulk = [...first.conversations[1]!.messages, ...second.conversations.flatMap((conversation) => conversation.messages)];
    expect(bulk.map((message) => message.seq)).toEqual(Array.from({ length: EXPORT_PAGE_MESSAGES + 20 }, (_, index) => index + 1));
    // A conversation continued on the next page carries its records on its first page only.
    expect(second.conversations[0]).not.toHaveProperty('readCursors');
    expect(second.next).toBeUndefined();
  });

  test('erases everything of the customer: its devices closed, other customers untouched, recorded; a new conversation starts afresh', async () => {
    const { url, admin: base } = await startDataCell(await cleanup.tempDir());
    const ann = await connect(url, 'ann', 'm1');
    ann.autoAck();
    const cathy = await connect(url, 'cathy');
    cathy.autoAck();
    const dave = await connect(url, 'dave');
    await sendMessage(cathy, 'm1:cathy', 'c1', 'first');
    await sendMessage(cathy, 'm2:cathy', 'c2', 'second');
    await sendMessage(dave, 'm1:dave', 'd1', 'unrelated');
    const cathyToken = await tokenFor({ user: 'cathy', device: 'web' });
    const uploaded = await fetch(`${url}/v1/conversations/m2:cathy/attachments?name=note.txt`, { method: 'POST', headers: { authorization: `Bearer ${cathyToken}`, 'content-type': 'text/plain' }, body: 'my address' });
    expect(uploaded.status).toBe(201);
    const { id } = (await uploaded.json()) as { id: string };
    expect(await cathy.request({ id: 'f', op: 'send', conv: 'm2:cathy', cmid: 'file', body: '', attachments: [id] })).toMatchObject({ t: 'sent' });
    const before = (await exportAll(`${base}/customers/cathy`))[0]!.conversations.find((conversation) => conversation.conv === 'm2:cathy');
    expect(before?.attachments).toMatchObject([{ id, name: 'note.txt', type: 'text/plain', bytes: 10, from: 'c:cathy' }]);
    await ann.until(() => ann.messages('m1:cathy').length > 0, { what: "cathy's message at ann" });

    const erased = await admin('DELETE', `${base}/customers/cathy`);
    expect(erased.status).toBe(200);
    const answer = erased.body as ErasureAnswer;
    expect(answer).toMatchObject({ tenant: 'mall', customer: 'cathy', devicesClosed: 1, cellsAsked: [], cellsFailed: [] });
    // One idempotency record per message, the desk's system messages included.
    expect(answer.deleted).toMatchObject({ conversations: 2, idempotencyRecords: answer.deleted.messages, deskRecords: 1, attachments: 1 });
    const download = await httpRequest('GET', `${url}/v1/conversations/m2:cathy/attachments/${id}`, { token: cathyToken });
    expect([download.status, errorCodeOf(download)]).toEqual([404, 'ATTACHMENT_UNKNOWN']);
    // The customer's message, and the desk's system messages of its consultation.
    expect(answer.deleted.messages).toBeGreaterThanOrEqual(3);
    await cathy.whenClosed();
    expect(cathy.closeCode).toBe(4403);
    // Ann followed the conversation: her device is sent to reconnect, with nothing of it left.
    await ann.whenClosed();
    expect(ann.closeCode).toBe(1001);

    expect((await exportAll(`${base}/customers/cathy`))[0]!.conversations).toEqual([]);
    const daveExport = await exportAll(`${base}/customers/dave`);
    expect(daveExport[0]!.conversations.map((conversation) => [conversation.conv, conversation.messages.length])).toEqual([['m1:dave', expect.any(Number)]]);
    const audit = await admin('GET', `${url}/v1/admin/audit?action=customer.erase`);
    expect(audit.body).toMatchObject({ entries: [{ actor: 'admin', tenant: 'mall', target: 'cathy', outcome: 'ok', details: { devicesClosed: 1 } }] });

    // Her consultation was closed before the erasure: ann no longer holds the conversation.
    const annAgain = await connect(url, 'ann', 'm1');
    expect(await annAgain.request({ id: 'h', op: 'history', conv: 'm1:cathy' })).toMatchObject({ t: 'error', code: 'NOT_ASSIGNED' });
    const back = await connect(url, 'cathy');
    expect((await sendMessage(back, 'm1:cathy', 'c1', 'first again')).seq).toBe(1);
    // Erasing again finds nothing more to delete.
    const again = await admin('DELETE', `${base}/customers/nobody`);
    expect(again.body).toMatchObject({ deleted: { conversations: 0, messages: 0 }, devicesClosed: 0 });
  });

  test('refuses bad input with its code, and records failed changes', async () => {
    const { url, admin: base } = await startDataCell(await cleanup.tempDir());
    const rows: Array<{ name: string; method: string; url: string; token?: string; rawBody?: string; status: number; code: string }> = [
      { name: 'export of a tenant not served', method: 'GET', url: `${url}/v1/admin/tenants/nowhere/customers/c1/export`, status: 404, code: 'TENANT_UNKNOWN' },
      { name: 'export with a bad position', method: 'GET', url: `${base}/customers/c1/export?after=nope`, status: 400, code: 'BAD_FRAME' },
      { name: 'export with an unknown parameter', method: 'GET', url: `${base}/customers/c1/export?limit=5`, status: 400, code: 'BAD_FRAME' },
      { name: 'export of a customer id with bad characters', method: 'GET', url: `${base}/customers/c%201/export`, status: 400, code: 'BAD_FRAME' },
      { name: 'erasure with a wrong admin token', method: 'DELETE', url: `${base}/customers/c1`, token: 'wrong', status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'erasure of a customer id with bad characters', method: 'DELETE', url: `${base}/customers/c%3A1`, status: 400, code: 'BAD_FRAME' },
      { name: 'block at a merchant not hosted', method: 'PUT', url: `${base}/merchants/m77/blocks/c1`, rawBody: '{}', status: 404, code: 'MERCHANT_NOT_HOSTED' },
      { name: 'block with bad JSON', method: 'PUT', url: `${base}/merchants/m1/blocks/c1`, rawBody: '{"reason":', status: 400, code: 'BAD_JSON' },
      { name: 'block with an unknown field', method: 'PUT', url: `${base}/merchants/m1/blocks/c1`, rawBody: '{"until":1}', status: 400, code: 'BAD_FRAME' },
      { name: 'block with a reason over 1000 characters', method: 'PUT', url: `${base}/merchants/m1/blocks/c1`, rawBody: JSON.stringify({ reason: 'x'.repeat(1001) }), status: 400, code: 'BAD_FRAME' },
      { name: 'blocks with limit 0', method: 'GET', url: `${base}/merchants/m1/blocks?limit=0`, status: 400, code: 'BAD_FRAME' },
      { name: 'blocks after a bad customer id', method: 'GET', url: `${base}/merchants/m1/blocks?after=a%20b`, status: 400, code: 'BAD_FRAME' },
      { name: 'unblock of a customer not blocked', method: 'DELETE', url: `${base}/merchants/m1/blocks/c1`, status: 404, code: 'NOT_FOUND' },
      { name: 'read of a block that is none', method: 'GET', url: `${base}/merchants/m1/blocks/c1`, status: 404, code: 'NOT_FOUND' },
    ];
    const problems: string[] = [];
    for (const row of rows) {
      const answer = await httpRequest(row.method, row.url, { token: row.token ?? ADMIN_TOKEN, ...(row.rawBody === undefined ? {} : { rawBody: row.rawBody }) });
      if (answer.status !== row.status || errorCodeOf(answer) !== row.code) problems.push(`${row.name}: expected ${row.status} ${row.code}, got ${answer.status} ${answer.text.slice(0, 200)}`);
    }
    expect(problems).toEqual([]);
    const failed = await admin('GET', `${url}/v1/admin/audit?action=customer.block`);
    expect((failed.body as { entries: Array<{ outcome: string; error: { code: string } }> }).entries.map((entry) => [entry.outcome, entry.error.code])).toEqual([
      ['failed', 'BAD_FRAME'],
      ['failed', 'BAD_FRAME'],
      ['failed', 'BAD_JSON'],
      ['failed', 'MERCHANT_NOT_HOSTED'],
    ]);
  });
});
