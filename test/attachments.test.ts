/**
 * Images and files in conversations over a real cell (uWS, LevelDB): uploads sniffed and limited
 * per tenant, served only to the conversation's parties, referenced from messages, and kept
 * across a restart (docs/desk.md, "Attachments").
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { keys } from '../cell/messaging/keys.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { silentLogger } from '../platform/logger.js';
import { connectNode, type ChatMessage } from '../client/index.js';
import { LevelStore } from '../platform/store/index.js';
import { Cleanup, OTHER_SECRET, OTHER_TENANT, SECRET, TENANT, errorCodeOf, eventually, tokenFor } from './harness.js';

const CONV = 'm1:c1';
/** The tenant's limit in these tests: small, so an upload over it is quick to make. */
const MAX_BYTES = 64 * 1024;
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010806000000' + '1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082',
  'hex',
);
const PDF = Buffer.from('%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n', 'latin1');
const TEXT = Buffer.from('Order #1234: the parcel arrived damaged.\n');
const EXE = Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff', 'latin1'), Buffer.alloc(64)]);

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Cell {
  running: RunningCell;
  store: LevelStore;
  httpUrl: string;
  wsUrl: string;
}

async function startAttachmentCell(directory: string): Promise<Cell> {
  const config = parseCellConfig({
    cell: { id: 'attachments-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    tenants: [
      { id: TENANT, secret: SECRET, merchants: [{ id: 'm1' }, { id: 'm2' }], attachments: { maxBytes: MAX_BYTES } },
      { id: OTHER_TENANT, secret: OTHER_SECRET, merchants: [{ id: 'm9' }] },
    ],
    limits: { ratePerSecond: 10_000, rateBurst: 10_000 },
  });
  const store = new LevelStore({ directory });
  const running = await startCell({ config, logger: silentLogger, store });
  cleanup.add(() => running.stop());
  return { running, store, httpUrl: `http://127.0.0.1:${running.port}`, wsUrl: `ws://127.0.0.1:${running.port}` };
}

async function newCell(): Promise<Cell> {
  return startAttachmentCell(await cleanup.tempDir('cellmesh-attachments-'));
}

const customer = (user = 'c1'): Promise<string> => tokenFor({ user });
const agent = (merchant = 'm1', user = 'a1'): Promise<string> => tokenFor({ user, merchant });

interface Answer {
  status: number;
  body: unknown;
  headers: Headers;
  bytes: Buffer;
}

async function request(method: string, url: string, options: { token?: string; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
  const body = typeof options.body === 'string' || options.body === undefined ? options.body : new Uint8Array(options.body);
  const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }), signal: AbortSignal.timeout(10_000) });
  const bytes = Buffer.from(await response.arrayBuffer());
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, headers: response.headers, bytes };
}

function upload(cell: Cell, token: string, bytes: Buffer, name: string, options: { conv?: string; contentType?: string } = {}): Promise<Answer> {
  const conv = encodeURIComponent(options.conv ?? CONV);
  return request('POST', `${cell.httpUrl}/v1/conversations/${conv}/attachments?name=${encodeURIComponent(name)}`, {
    token,
    body: bytes,
    headers: { 'content-type': options.contentType ?? 'application/octet-stream' },
  });
}

function download(cell: Cell, id: string, options: { token?: string; queryToken?: string; conv?: string } = {}): Promise<Answer> {
  const query = options.queryToken === undefined ? '' : `?token=${encodeURIComponent(options.queryToken)}`;
  const conv = encodeURIComponent(options.conv ?? CONV);
  return request('GET', `${cell.httpUrl}/v1/conversations/${conv}/attachments/${id}${query}`, options.token === undefined ? {} : { token: options.token });
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** Sends only the head of a request announcing `contentLength` bytes, and reads the answer. */
function answerToHeadOnly(cell: Cell, path: string, token: string, contentLength: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(cell.running.port, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (text.includes('\r\n\r\n') && text.includes('}')) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('error', reject);
    socket.setTimeout(5_000, () => {
      socket.destroy();
      reject(new Error(`no answer before the body was sent; got ${JSON.stringify(text)}`));
    });
    socket.write(`POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\ncontent-length: ${contentLength}\r\n\r\n`);
  });
}

describe('uploading attachments', () => {
  it('stores PNG, PDF and plain text under the SHA-256 of their bytes, typed by what the bytes are', async () => {
    const cell = await newCell();
    const token = await customer();
    for (const [bytes, name, type] of [
      [PNG, 'photo.png', 'image/png'],
      [PDF, 'invoice.pdf', 'application/pdf'],
      [TEXT, 'notes.txt', 'text/plain'],
    ] as const) {
      const answer = await upload(cell, token, bytes, name);
      expect(answer.status).toBe(201);
      expect(answer.body).toEqual({ id: sha256(bytes), type, bytes: bytes.byteLength, name });
    }
  });

  it('goes by the sniffed type, never the declared one: a PNG sent as a PDF is a PNG, an .exe is refused', async () => {
    const cell = await newCell();
    const token = await agent();
    const disguised = await upload(cell, token, PNG, 'report.pdf', { contentType: 'application/pdf' });
    expect(disguised.status).toBe(201);
    expect(disguised.body).toMatchObject({ type: 'image/png', name: 'report.pdf' });
    const exe = await upload(cell, token, EXE, 'photo.png', { contentType: 'image/png' });
    expect([exe.status, codeOf(exe)]).toEqual([415, 'ATTACHMENT_TYPE_REFUSED']);
  });

  it('refuses an upload over the tenant limit with 413, before the body is sent when it is announced', async () => {
    const cell = await newCell();
    const token = await customer();
    const head = await answerToHeadOnly(cell, `/v1/conversations/${CONV}/attachments?name=big.txt`, token, MAX_BYTES + 1);
    expect(head).toMatch(/^HTTP\/1\.1 413 /);
    expect(head).toContain('ATTACHMENT_TOO_LARGE');
    const sent = await upload(cell, token, Buffer.alloc(MAX_BYTES + 1, 'a'), 'big.txt');
    expect([sent.status, codeOf(sent)]).toEqual([413, 'ATTACHMENT_TOO_LARGE']);
    const atTheLimit = await upload(cell, token, Buffer.alloc(MAX_BYTES, 'a'), 'limit.txt');
    expect(atTheLimit.status).toBe(201);
  });

  it('lets only the parties of the conversation upload', async () => {
    const cell = await newCell();
    const cases: Array<[string, Promise<string>, string, number]> = [
      ['another customer', customer('c2'), 'CONVERSATION_FORBIDDEN', 403],
      ["another merchant's agent", agent('m2'), 'CONVERSATION_FORBIDDEN', 403],
      ['the same customer id of another tenant', tokenFor({ user: 'c1', tenant: OTHER_TENANT }), 'MERCHANT_NOT_HOSTED', 404],
      ['nobody', Promise.resolve(''), 'UNAUTHENTICATED', 401],
    ];
    for (const [who, token, code, status] of cases) {
      const answer = await upload(cell, await token, TEXT, 'notes.txt');
      expect([who, answer.status, codeOf(answer)]).toEqual([who, status, code]);
    }
  });

  it('takes the token in the query too, and lets pages of any origin read its answers', async () => {
    const cell = await newCell();
    const url = (token: string): string => `${cell.httpUrl}/v1/conversations/${CONV}/attachments?name=notes.txt&token=${encodeURIComponent(token)}`;
    // What a page can send without a CORS preflight: no Authorization header, a safelisted content type.
    const uploaded = await request('POST', url(await customer()), { body: TEXT, headers: { 'content-type': 'text/plain' } });
    expect(uploaded.status).toBe(201);
    expect(uploaded.headers.get('access-control-allow-origin')).toBe('*');
    const refused = await request('POST', url(await customer('c2')), { body: TEXT, headers: { 'content-type': 'text/plain' } });
    expect([refused.status, codeOf(refused), refused.headers.get('access-control-allow-origin')]).toEqual([403, 'CONVERSATION_FORBIDDEN', '*']);
    const served = await download(cell, (uploaded.body as { id: string }).id, { queryToken: await agent() });
    expect(served.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('refuses a bad file name, an empty body and a malformed conversation', async () => {
    const cell = await newCell();
    const token = await customer();
    expect(codeOf(await upload(cell, token, TEXT, '../etc/passwd'))).toBe('BAD_FRAME');
    expect(codeOf(await upload(cell, token, Buffer.alloc(0), 'empty.txt'))).toBe('BAD_FRAME');
    expect(codeOf(await upload(cell, token, TEXT, 'a.txt', { conv: 'no-colon' }))).toBe('BAD_FRAME');
  });

  it('stores identical uploads once', async () => {
    const cell = await newCell();
    const first = await upload(cell, await customer(), PNG, 'a.png');
    const second = await upload(cell, await agent(), PNG, 'b.png');
    const elsewhere = await upload(cell, await customer(), PNG, 'c.png', { conv: 'm2:c1' });
    const ids = [first, second, elsewhere].map((answer) => (answer.body as { id: string }).id);
    expect(new Set(ids).size).toBe(1);
    const stored = await cell.store.range({ gte: 'fb/', lt: 'fb0', limit: 100 });
    // Its meta and one chunk, once for all three uploads.
    expect(stored.map(([key]) => key)).toEqual([keys.attachmentBlob(TENANT, ids[0]!), keys.attachmentChunk(TENANT, ids[0]!, 0)]);
  });

  it('limits how fast one identity uploads', async () => {
    const cell = await newCell();
    const token = await customer('c7');
    const statuses: number[] = [];
    for (let index = 0; index < 25; index++) statuses.push((await upload(cell, token, TEXT, 'again.txt', { conv: 'm1:c7' })).status);
    expect(statuses.slice(0, 20).every((status) => status === 201)).toBe(true);
    expect(statuses.at(-1)).toBe(429);
    // Another identity has its own budget.
    expect((await upload(cell, await agent(), TEXT, 'a.txt', { conv: 'm1:c7' })).status).toBe(201);
  });
});

describe('reading attachments', () => {
  it('serves the bytes to the parties, by header or by ?token=, with safe headers', async () => {
    const cell = await newCell();
    const { id } = (await upload(cell, await customer(), PNG, 'my "cat".png')).body as { id: string };
    const byHeader = await download(cell, id, { token: await customer() });
    expect(byHeader.status).toBe(200);
    expect(byHeader.bytes.equals(PNG)).toBe(true);
    expect(byHeader.headers.get('content-type')).toBe('image/png');
    expect(byHeader.headers.get('content-security-policy')).toBe("default-src 'none'; sandbox");
    expect(byHeader.headers.get('x-content-type-options')).toBe('nosniff');
    expect(byHeader.headers.get('content-disposition')).toBe(`inline; filename="my _cat_.png"; filename*=UTF-8''my%20%22cat%22.png`);
    expect(byHeader.headers.get('cache-control')).toMatch(/^private, max-age=\d+/);
    const byQuery = await download(cell, id, { queryToken: await agent() });
    expect(byQuery.status).toBe(200);
    expect(byQuery.bytes.equals(PNG)).toBe(true);

    const pdf = (await upload(cell, await agent(), PDF, 'invoice.pdf')).body as { id: string };
    expect((await download(cell, pdf.id, { token: await customer() })).headers.get('content-disposition')).toMatch(/^attachment; filename="invoice.pdf"/);
  });

  it('serves nothing to a non-party, nor through a conversation it was not uploaded to', async () => {
    const cell = await newCell();
    const { id } = (await upload(cell, await customer(), TEXT, 'notes.txt')).body as { id: string };
    const stranger = await download(cell, id, { queryToken: await customer('c2') });
    expect([stranger.status, codeOf(stranger)]).toEqual([403, 'CONVERSATION_FORBIDDEN']);
    const otherAgent = await download(cell, id, { token: await agent('m2') });
    expect([otherAgent.status, codeOf(otherAgent)]).toEqual([403, 'CONVERSATION_FORBIDDEN']);
    // The same customer's other conversation: the id (a hash anyone can compute) opens nothing there.
    const elsewhere = await download(cell, id, { token: await customer(), conv: 'm2:c1' });
    expect([elsewhere.status, codeOf(elsewhere)]).toEqual([404, 'ATTACHMENT_UNKNOWN']);
    expect(codeOf(await download(cell, 'not-an-id', { token: await customer() }))).toBe('BAD_FRAME');
    expect(codeOf(await download(cell, id))).toBe('UNAUTHENTICATED');
  });
});

describe('messages with attachments', () => {
  it('delivers a message naming its attachments with their metadata, over WebSocket and HTTP, with or without a body', async () => {
    const cell = await newCell();
    const png = (await upload(cell, await customer(), PNG, 'photo.png')).body as { id: string };
    const text = (await upload(cell, await customer(), TEXT, 'notes.txt')).body as { id: string };
    const agentDevice = await cleanup.client(cell.wsUrl, await agent());
    const customerDevice = await cleanup.client(cell.wsUrl, await customer());

    const sent = await customerDevice.request({ id: 's1', op: 'send', conv: CONV, cmid: 'with-files', body: '', attachments: [png.id, text.id] });
    expect(sent.t).toBe('sent');
    const delivered = await agentDevice.next((frame) => frame.t === 'msg' && frame.cmid === 'with-files', { fromStart: true });
    expect(delivered).toMatchObject({
      body: '',
      attachments: [
        { id: png.id, name: 'photo.png', type: 'image/png', bytes: PNG.byteLength },
        { id: text.id, name: 'notes.txt', type: 'text/plain', bytes: TEXT.byteLength },
      ],
    });

    const overHttp = await request('POST', `${cell.httpUrl}/v1/conversations/${CONV}/messages`, {
      token: await agent(),
      body: JSON.stringify({ cmid: 'http-files', body: 'here is the photo again', attachments: [png.id] }),
      headers: { 'content-type': 'application/json' },
    });
    expect(overHttp.status).toBe(201);
    const pushed = await customerDevice.next((frame) => frame.t === 'msg' && frame.cmid === 'http-files', { fromStart: true });
    expect(pushed).toMatchObject({ body: 'here is the photo again', attachments: [{ id: png.id, name: 'photo.png' }] });

    const history = await customerDevice.request({ id: 'h', op: 'history', conv: CONV });
    const messages = (history as Extract<ServerFrame, { t: 'history' }>).messages;
    expect(messages.map((message) => message.attachments?.length)).toEqual([2, 1]);
  });

  it('refuses a send naming an attachment not uploaded to the conversation, and a send with neither body nor attachment', async () => {
    const cell = await newCell();
    const elsewhere = (await upload(cell, await customer(), TEXT, 'notes.txt', { conv: 'm2:c1' })).body as { id: string };
    const device = await cleanup.client(cell.wsUrl, await customer());
    for (const [index, id] of ['0'.repeat(64), elsewhere.id].entries()) {
      const refused = await device.request({ id: `s-${index}`, op: 'send', conv: CONV, cmid: `c-${index}`, body: 'see attached', attachments: [id] });
      expect(refused).toMatchObject({ t: 'error', code: 'ATTACHMENT_UNKNOWN' });
    }
    const empty = await device.request({ id: 'empty', op: 'send', conv: CONV, cmid: 'empty', body: '' });
    expect(empty).toMatchObject({ t: 'error', code: 'BAD_FRAME' });
    const overHttp = await request('POST', `${cell.httpUrl}/v1/conversations/${CONV}/messages`, {
      token: await customer(),
      body: JSON.stringify({ cmid: 'http-unknown', body: 'x', attachments: ['1'.repeat(64)] }),
      headers: { 'content-type': 'application/json' },
    });
    expect([overHttp.status, codeOf(overHttp)]).toEqual([404, 'ATTACHMENT_UNKNOWN']);
    // Nothing was stored.
    const history = (await device.request({ id: 'h', op: 'history', conv: CONV })) as Extract<ServerFrame, { t: 'history' }>;
    expect(history.messages).toEqual([]);
  });

  it('keeps attachments and the messages naming them across a restart of the LevelDB cell', async () => {
    const directory = await cleanup.tempDir('cellmesh-attachments-');
    const first = await startAttachmentCell(directory);
    const big = Buffer.alloc(MAX_BYTES, 'z');
    const { id } = (await upload(first, await customer(), big, 'long.txt')).body as { id: string };
    const sender = await cleanup.client(first.wsUrl, await customer());
    expect((await sender.request({ id: 's', op: 'send', conv: CONV, cmid: 'kept', body: 'see file', attachments: [id] })).t).toBe('sent');
    await sender.close();
    await first.running.stop();

    const second = await startAttachmentCell(directory);
    const served = await download(second, id, { token: await agent() });
    expect(served.status).toBe(200);
    expect(served.bytes.equals(big)).toBe(true);
    const device = await cleanup.client(second.wsUrl, await agent());
    const history = (await device.request({ id: 'h', op: 'history', conv: CONV })) as Extract<ServerFrame, { t: 'history' }>;
    expect(history.messages[0]).toMatchObject({ body: 'see file', attachments: [{ id, name: 'long.txt', type: 'text/plain', bytes: MAX_BYTES }] });
  });
});

describe('the client SDK', () => {
  it('uploads over HTTP and sends the attachment, which the other party receives with its metadata', async () => {
    const cell = await newCell();
    const customerClient = await connectNode({ url: cell.wsUrl, token: await customer(), signal: AbortSignal.timeout(10_000) });
    cleanup.add(() => customerClient.close());
    const agentClient = await connectNode({ url: cell.wsUrl, token: await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }), signal: AbortSignal.timeout(10_000) });
    cleanup.add(() => agentClient.close());
    const received: ChatMessage[] = [];
    agentClient.on('message', (message) => received.push(message));

    const photo = await customerClient.uploadAttachment(CONV, PNG, 'photo.png');
    expect(photo).toEqual({ id: sha256(PNG), name: 'photo.png', type: 'image/png', bytes: PNG.byteLength });
    await expect(customerClient.uploadAttachment(CONV, EXE, 'setup.png')).rejects.toMatchObject({ code: 'ATTACHMENT_TYPE_REFUSED', details: { httpStatus: 415 } });

    const sent = await customerClient.send(CONV, '', { attachments: [photo] });
    expect(sent.seq).toBe(1);
    await eventually(() => received.length === 1, 'the agent receiving the message');
    expect(received[0]).toMatchObject({ body: '', attachments: [photo] });
    await expect(customerClient.send(CONV, 'x', { attachments: [{ ...photo, id: '2'.repeat(64) }] })).rejects.toMatchObject({ code: 'ATTACHMENT_UNKNOWN' });
  });
});

function codeOf(answer: Answer): string | undefined {
  return errorCodeOf({ status: answer.status, body: answer.body, text: '', headers: answer.headers });
}
