/**
 * Guarantee 7: bad input gets a clear error with a stable code, the process never crashes, and
 * nothing already accepted is lost. Frames are checked against a real cell process (so "did not
 * crash" means the process); limits that need their own settings use in-process cells.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { mintToken } from '../cell/access/tokens.js';
import { silentLogger } from '../platform/logger.js';
import { ManualClock } from '../platform/manual-clock.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { metricValue } from '../platform/prometheus-text.js';
import {
  ADMIN_TOKEN,
  ALLOWED_ORIGIN,
  Cleanup,
  InBandRejected,
  OTHER_TENANT,
  RawClient,
  SECRET,
  TENANT,
  UpgradeRejected,
  errorCodeOf,
  expectUpgradeRejected,
  fetchMetrics,
  httpRequest,
  killChildCell,
  sendMessage,
  startChildCell,
  tokenFor,
  type ChildCell,
} from './harness.js';

const CONV = 'm1:c1';
const LONG = 'x';
/** An attachment id (a SHA-256 in hex) that no one uploaded. */
const ATTACHMENT = 'ab'.repeat(32);

type Who = 'customer' | 'agent' | 'otherTenant';

interface FrameCase {
  name: string;
  who?: Who;
  /** An object is sent as JSON; a string as it is; a Buffer as a binary frame. */
  frame: unknown;
  code: string;
  /** The request id the error must carry (when the frame had a valid one). */
  id?: string;
}

const send = (fields: Record<string, unknown>): Record<string, unknown> => ({ op: 'send', conv: CONV, cmid: 'c', body: 'b', ...fields });

const frameCases: FrameCase[] = [
  { name: 'malformed JSON', frame: '{"op":"send",', code: 'BAD_JSON' },
  { name: 'not JSON at all', frame: 'hello', code: 'BAD_JSON' },
  { name: 'a JSON array', frame: '[1,2,3]', code: 'BAD_FRAME' },
  { name: 'a JSON string', frame: '"send"', code: 'BAD_FRAME' },
  { name: 'a JSON number', frame: '42', code: 'BAD_FRAME' },
  { name: 'JSON null', frame: 'null', code: 'BAD_FRAME' },
  { name: 'missing op', frame: { id: 'no-op', conv: CONV }, code: 'BAD_FRAME', id: 'no-op' },
  { name: 'op not a string', frame: { id: 'op-num', op: 7 }, code: 'BAD_FRAME', id: 'op-num' },
  { name: 'unknown op', frame: { id: 'unknown', op: 'explode' }, code: 'UNKNOWN_OP', id: 'unknown' },
  { name: 'op naming an Object.prototype member', frame: { id: 'proto', op: 'constructor' }, code: 'UNKNOWN_OP', id: 'proto' },
  { name: 'op __proto__', frame: '{"id":"proto2","op":"__proto__"}', code: 'UNKNOWN_OP', id: 'proto2' },
  { name: 'send without conv', frame: { op: 'send', id: 's1', cmid: 'c', body: 'b' }, code: 'BAD_FRAME', id: 's1' },
  { name: 'send without cmid', frame: { op: 'send', id: 's2', conv: CONV, body: 'b' }, code: 'BAD_FRAME', id: 's2' },
  { name: 'send without body', frame: { op: 'send', id: 's3', conv: CONV, cmid: 'c' }, code: 'BAD_FRAME', id: 's3' },
  { name: 'send with a numeric body', frame: send({ id: 's4', body: 5 }), code: 'BAD_FRAME', id: 's4' },
  { name: 'send with an empty body', frame: send({ id: 's5', body: '' }), code: 'BAD_FRAME', id: 's5' },
  { name: 'send with a body over 16384 chars', frame: send({ id: 's6', body: LONG.repeat(16_385) }), code: 'BAD_FRAME', id: 's6' },
  { name: 'send with a cmid over 64 chars', frame: send({ id: 's7', cmid: 'c'.repeat(65) }), code: 'BAD_FRAME', id: 's7' },
  { name: 'send with an empty cmid', frame: send({ id: 's8', cmid: '' }), code: 'BAD_FRAME', id: 's8' },
  { name: 'send with a numeric cmid', frame: send({ id: 's9', cmid: 12 }), code: 'BAD_FRAME', id: 's9' },
  { name: 'send with a conv that is no conversation id', frame: send({ id: 's10', conv: 'm1-c1' }), code: 'BAD_FRAME', id: 's10' },
  { name: 'send with a conv holding bad characters', frame: send({ id: 's11', conv: 'm1:c 1' }), code: 'BAD_FRAME', id: 's11' },
  { name: 'send with a numeric id', frame: send({ id: 5 }), code: 'BAD_FRAME' },
  { name: 'send with attachments not a list', frame: send({ id: 'a1', attachments: ATTACHMENT }), code: 'BAD_FRAME', id: 'a1' },
  { name: 'send with an empty list of attachments', frame: send({ id: 'a2', attachments: [] }), code: 'BAD_FRAME', id: 'a2' },
  { name: 'send with an attachment id that is no SHA-256', frame: send({ id: 'a3', attachments: ['photo.png'] }), code: 'BAD_FRAME', id: 'a3' },
  { name: 'send with 11 attachments', frame: send({ id: 'a4', attachments: Array.from({ length: 11 }, (_, index) => index.toString(16).repeat(64)) }), code: 'BAD_FRAME', id: 'a4' },
  { name: 'send naming an attachment twice', frame: send({ id: 'a5', attachments: [ATTACHMENT, ATTACHMENT] }), code: 'BAD_FRAME', id: 'a5' },
  { name: 'send naming an attachment not uploaded to the conversation', frame: send({ id: 'a7', attachments: [ATTACHMENT] }), code: 'ATTACHMENT_UNKNOWN', id: 'a7' },
  // A lone surrogate is valid JSON (an escape) but no valid string for keys and stores.
  { name: 'send with a cmid holding a lone surrogate', frame: '{"op":"send","id":"s12","conv":"m1:c1","cmid":"\\ud800","body":"b"}', code: 'BAD_FRAME', id: 's12' },
  { name: 'ack without seq', frame: { op: 'ack', conv: CONV }, code: 'BAD_FRAME' },
  { name: 'ack with a string seq', frame: { op: 'ack', conv: CONV, seq: '1' }, code: 'BAD_FRAME' },
  { name: 'ack with a negative seq', frame: { op: 'ack', conv: CONV, seq: -1 }, code: 'BAD_FRAME' },
  { name: 'ack with a fractional seq', frame: { op: 'ack', conv: CONV, seq: 1.5 }, code: 'BAD_FRAME' },
  { name: 'ack without conv', frame: { op: 'ack', seq: 1 }, code: 'BAD_FRAME' },
  { name: 'ack with both conv and acks', frame: { op: 'ack', conv: CONV, seq: 1, acks: { [CONV]: 1 } }, code: 'BAD_FRAME' },
  { name: 'ack with empty acks', frame: { op: 'ack', acks: {} }, code: 'BAD_FRAME' },
  { name: 'ack with acks not an object', frame: { op: 'ack', acks: [[CONV, 1]] }, code: 'BAD_FRAME' },
  { name: 'ack with a string seq in acks', frame: { op: 'ack', acks: { [CONV]: '1' } }, code: 'BAD_FRAME' },
  { name: 'ack with a bad conversation id in acks', frame: { op: 'ack', acks: { 'm1-c1': 1 } }, code: 'BAD_FRAME' },
  {
    name: 'ack naming more than 256 conversations',
    frame: { op: 'ack', acks: Object.fromEntries(Array.from({ length: 257 }, (_, index) => [`m1:c${index}`, 1])) },
    code: 'BAD_FRAME',
  },
  { name: 'read without seq', frame: { op: 'read', id: 'r1', conv: CONV }, code: 'BAD_FRAME', id: 'r1' },
  { name: 'read with a string seq', frame: { op: 'read', id: 'r2', conv: CONV, seq: 'all' }, code: 'BAD_FRAME', id: 'r2' },
  { name: 'read without conv', frame: { op: 'read', id: 'r3', seq: 1 }, code: 'BAD_FRAME', id: 'r3' },
  { name: 'history without id', frame: { op: 'history', conv: CONV }, code: 'BAD_FRAME' },
  { name: 'history without conv', frame: { op: 'history', id: 'h1' }, code: 'BAD_FRAME', id: 'h1' },
  { name: 'history with limit 0', frame: { op: 'history', id: 'h2', conv: CONV, limit: 0 }, code: 'BAD_FRAME', id: 'h2' },
  { name: 'history with limit 201', frame: { op: 'history', id: 'h3', conv: CONV, limit: 201 }, code: 'BAD_FRAME', id: 'h3' },
  { name: 'history with a string before', frame: { op: 'history', id: 'h4', conv: CONV, before: 'now' }, code: 'BAD_FRAME', id: 'h4' },
  { name: 'inbox without id', frame: { op: 'inbox' }, code: 'BAD_FRAME' },
  { name: 'inbox after something that is no conversation id', frame: { op: 'inbox', id: 'i2', after: 'nope' }, code: 'BAD_FRAME', id: 'i2' },
  { name: 'presence naming nobody', frame: { op: 'presence', id: 'p1' }, code: 'BAD_FRAME', id: 'p1' },
  { name: 'presence with users not a list', frame: { op: 'presence', id: 'p2', users: 'c1' }, code: 'BAD_FRAME', id: 'p2' },
  { name: 'ping with a numeric id', frame: { op: 'ping', id: 9 }, code: 'BAD_FRAME' },
  { name: 'read beyond the conversation', frame: { op: 'read', id: 'r4', conv: CONV, seq: 10_000 }, code: 'SEQ_OUT_OF_RANGE', id: 'r4' },
  { name: 'ack beyond the conversation', frame: { op: 'ack', conv: CONV, seq: 10_000 }, code: 'SEQ_OUT_OF_RANGE' },
  { name: 'ack in a conversation with no messages', frame: { op: 'ack', conv: 'm2:c1', seq: 1 }, code: 'SEQ_OUT_OF_RANGE' },
  { name: 'send to another customer\'s conversation', frame: send({ id: 'f1', conv: 'm1:c2' }), code: 'CONVERSATION_FORBIDDEN', id: 'f1' },
  { name: 'history of another customer\'s conversation', frame: { op: 'history', id: 'f2', conv: 'm1:c2' }, code: 'CONVERSATION_FORBIDDEN', id: 'f2' },
  { name: 'read in another customer\'s conversation', frame: { op: 'read', id: 'f3', conv: 'm1:c2', seq: 0 }, code: 'CONVERSATION_FORBIDDEN', id: 'f3' },
  { name: 'ack in another customer\'s conversation', frame: { op: 'ack', conv: 'm1:c2', seq: 1 }, code: 'CONVERSATION_FORBIDDEN' },
  { name: 'acks naming another customer\'s conversation', frame: { op: 'ack', acks: { 'm1:c2': 1 } }, code: 'CONVERSATION_FORBIDDEN' },
  { name: 'presence of another user (customer)', frame: { op: 'presence', id: 'f4', users: ['c2'] }, code: 'CONVERSATION_FORBIDDEN', id: 'f4' },
  { name: 'agent: send to another merchant\'s conversation', who: 'agent', frame: send({ id: 'f5', conv: 'm2:c1' }), code: 'CONVERSATION_FORBIDDEN', id: 'f5' },
  { name: 'agent: history of another merchant\'s conversation', who: 'agent', frame: { op: 'history', id: 'f6', conv: 'm2:c1' }, code: 'CONVERSATION_FORBIDDEN', id: 'f6' },
  { name: 'send to a merchant not hosted', frame: send({ id: 'n1', conv: 'm77:c1' }), code: 'MERCHANT_NOT_HOSTED', id: 'n1' },
  { name: 'other tenant: send to tenant A\'s merchant', who: 'otherTenant', frame: send({ id: 't1' }), code: 'MERCHANT_NOT_HOSTED', id: 't1' },
  { name: 'other tenant: history of tenant A\'s conversation', who: 'otherTenant', frame: { op: 'history', id: 't2', conv: CONV }, code: 'MERCHANT_NOT_HOSTED', id: 't2' },
  { name: 'other tenant: read in tenant A\'s conversation', who: 'otherTenant', frame: { op: 'read', id: 't3', conv: CONV, seq: 1 }, code: 'MERCHANT_NOT_HOSTED', id: 't3' },
  { name: 'send with a group that is no identifier', frame: send({ id: 'g1', group: 'pre sales' }), code: 'BAD_FRAME', id: 'g1' },
  { name: 'status with an unknown status', who: 'agent', frame: { op: 'status', id: 'st1', status: 'sleeping' }, code: 'BAD_FRAME', id: 'st1' },
  { name: 'status from a customer', frame: { op: 'status', id: 'st2', status: 'online' }, code: 'CONVERSATION_FORBIDDEN', id: 'st2' },
  { name: 'status at a merchant without a desk', who: 'agent', frame: { op: 'status', id: 'st3', status: 'busy' }, code: 'NO_DESK', id: 'st3' },
  { name: 'close without conv', frame: { op: 'close', id: 'cl1' }, code: 'BAD_FRAME', id: 'cl1' },
  { name: 'close of another customer\'s conversation', frame: { op: 'close', id: 'cl2', conv: 'm1:c2' }, code: 'CONVERSATION_FORBIDDEN', id: 'cl2' },
  { name: 'close at a merchant without a desk', frame: { op: 'close', id: 'cl3', conv: CONV }, code: 'NO_DESK', id: 'cl3' },
  { name: 'transfer naming both agent and group', who: 'agent', frame: { op: 'transfer', id: 'tr1', conv: CONV, agent: 'a2', group: 'g' }, code: 'BAD_FRAME', id: 'tr1' },
  { name: 'transfer naming neither agent nor group', who: 'agent', frame: { op: 'transfer', id: 'tr2', conv: CONV }, code: 'BAD_FRAME', id: 'tr2' },
  { name: 'transfer with a note over 1000 chars', who: 'agent', frame: { op: 'transfer', id: 'tr3', conv: CONV, group: 'g', note: LONG.repeat(1_001) }, code: 'BAD_FRAME', id: 'tr3' },
  { name: 'transfer by a customer', frame: { op: 'transfer', id: 'tr4', conv: CONV, group: 'g' }, code: 'CONVERSATION_FORBIDDEN', id: 'tr4' },
  { name: 'rate with score 0', frame: { op: 'rate', id: 'ra1', conv: CONV, score: 0 }, code: 'BAD_FRAME', id: 'ra1' },
  { name: 'rate with score 6', frame: { op: 'rate', id: 'ra2', conv: CONV, score: 6 }, code: 'BAD_FRAME', id: 'ra2' },
  { name: 'rate with a fractional score', frame: { op: 'rate', id: 'ra3', conv: CONV, score: 4.5 }, code: 'BAD_FRAME', id: 'ra3' },
  { name: 'rate by an agent', who: 'agent', frame: { op: 'rate', id: 'ra4', conv: CONV, score: 5 }, code: 'CONVERSATION_FORBIDDEN', id: 'ra4' },
  { name: 'typing without conv', frame: { op: 'typing' }, code: 'BAD_FRAME' },
  { name: 'typing in another customer\'s conversation', frame: { op: 'typing', conv: 'm1:c2' }, code: 'CONVERSATION_FORBIDDEN' },
  { name: 'desk without id', who: 'agent', frame: { op: 'desk' }, code: 'BAD_FRAME' },
  { name: 'desk asked by a customer', frame: { op: 'desk', id: 'dk1' }, code: 'CONVERSATION_FORBIDDEN', id: 'dk1' },
  { name: 'block without conv', who: 'agent', frame: { op: 'block', id: 'bl1' }, code: 'BAD_FRAME', id: 'bl1' },
  { name: 'block with a reason over 1000 chars', who: 'agent', frame: { op: 'block', id: 'bl2', conv: CONV, reason: LONG.repeat(1_001) }, code: 'BAD_FRAME', id: 'bl2' },
  { name: 'block by a customer', frame: { op: 'block', id: 'bl3', conv: CONV }, code: 'CONVERSATION_FORBIDDEN', id: 'bl3' },
  { name: 'agent: block in another merchant\'s conversation', who: 'agent', frame: { op: 'block', id: 'bl4', conv: 'm2:c1' }, code: 'CONVERSATION_FORBIDDEN', id: 'bl4' },
  { name: 'unblock with a numeric conv', who: 'agent', frame: { op: 'unblock', id: 'ub1', conv: 7 }, code: 'BAD_FRAME', id: 'ub1' },
  { name: 'unblock by a customer', frame: { op: 'unblock', id: 'ub2', conv: CONV }, code: 'CONVERSATION_FORBIDDEN', id: 'ub2' },
  { name: 'a frame over 64 KiB', frame: send({ id: 'big', body: 'b', padding: 'p'.repeat(70 * 1024) }), code: 'PAYLOAD_TOO_LARGE' },
  { name: 'a binary frame', frame: Buffer.from(JSON.stringify(send({ id: 'bin' }))), code: 'BINARY_NOT_SUPPORTED' },
];

describe('bad frames against a cell process: stable code, connection still usable', () => {
  const cleanup = new Cleanup();
  let cell: ChildCell;
  const clients = {} as Record<Who, RawClient>;
  const usableConv: Record<Who, string> = { customer: CONV, agent: CONV, otherTenant: 'm9:c1' };
  const accepted: Record<string, string[]> = { [CONV]: [], 'm9:c1': [] };
  const errorCounts = new Map<string, number>();

  beforeAll(async () => {
    const configDir = await cleanup.tempDir('cellmesh-config-');
    const dataDir = await cleanup.tempDir('cellmesh-bad-input-');
    // The table sends more bad frames on one connection than its error allowance takes at once.
    cell = await startChildCell({ directory: dataDir, configDir, limits: { maxConsecutiveErrors: 1_000 } });
    cleanup.add(() => killChildCell(cell));
    clients.customer = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    clients.agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    clients.otherTenant = await cleanup.client(cell.url, await tokenFor({ user: 'c1', tenant: OTHER_TENANT, device: 'phone' }));
    for (let index = 1; index <= 3; index++) {
      await sendMessage(clients.customer, CONV, `setup-${index}`, `accepted before the bad input ${index}`);
      accepted[CONV]!.push(`setup-${index}`);
    }
  });
  afterAll(() => cleanup.run());

  test.each(frameCases.map((row, index) => ({ ...row, index })))('$name → $code', async ({ who = 'customer', frame, code, id, index }) => {
    const client = clients[who];
    const answered =
      id === undefined ? client.next((received) => received.t === 'error') : client.next((received) => 'id' in received && received.id === id);
    if (Buffer.isBuffer(frame)) client.socket.send(frame, { binary: true });
    else client.send(frame);
    const error = await answered;
    expect(error).toMatchObject({ t: 'error', code });
    if (error.t === 'error') expect(error.message.length).toBeGreaterThan(0);
    errorCounts.set(code, (errorCounts.get(code) ?? 0) + 1);

    // The connection is still usable: a valid send is acked.
    const conv = usableConv[who];
    const cmid = `ok-${index}`;
    const sent = await sendMessage(client, conv, cmid, `still usable after case ${index}`);
    expect(sent.conv).toBe(conv);
    accepted[conv]!.push(cmid);
    expect(client.closeCode).toBeUndefined();
  });

  test('a frame over the hard transport limit (1 MiB) ends only that connection', async () => {
    const victim = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'tablet' }));
    victim.send(send({ id: 'huge', body: 'b', padding: 'p'.repeat(1_100_000) }));
    await victim.whenClosed();
    // uWebSockets.js drops such a connection without a close frame (docs/protocol.md, close codes).
    expect(victim.closeCode).toBe(1006);
    await sendMessage(clients.customer, CONV, 'after-huge', 'the others carry on');
    accepted[CONV]!.push('after-huge');
  });

  test('the process did not crash and nothing accepted was lost; errors were counted by code', async () => {
    expect(cell.child.exitCode).toBeNull();
    expect((await httpRequest('GET', `${cell.httpUrl}/v1/healthz`)).status).toBe(200);
    for (const [who, conv] of [
      ['customer', CONV],
      ['otherTenant', 'm9:c1'],
    ] as const) {
      const page = await clients[who].request({ id: `final-${who}`, op: 'history', conv, limit: 200 });
      if (page.t !== 'history') throw new Error(JSON.stringify(page));
      expect(page.messages.map((message) => message.seq)).toEqual(Array.from({ length: accepted[conv]!.length }, (_, index) => index + 1));
      expect(page.messages.map((message) => message.cmid)).toEqual(accepted[conv]);
    }
    const metrics = await fetchMetrics(cell.httpUrl);
    for (const [code, count] of errorCounts) {
      expect(metricValue(metrics, 'cellmesh_errors_total', { code }), code).toBe(count);
    }
    expect(metricValue(metrics, 'cellmesh_errors_total', { code: 'INTERNAL' })).toBeUndefined();
  });
});

describe('limits on a connection', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  test('rate limit: RATE_LIMITED with retryAfterMs beyond the burst; usable again after waiting', async () => {
    // The core's clock is virtual: the bucket refills only when the test moves time.
    const clock = new ManualClock(Date.now());
    const cell = await cleanup.cell({ limits: { ratePerSecond: 5, rateBurst: 5 }, clock });
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const answers = await Promise.all(Array.from({ length: 12 }, (_, index) => phone.request({ op: 'ping', id: `r${index}` })));
    const pongs = answers.filter((answer) => answer.t === 'pong');
    const limited = answers.filter((answer): answer is Extract<ServerFrame, { t: 'error' }> => answer.t === 'error');
    expect(pongs.length).toBeGreaterThanOrEqual(5);
    expect(pongs.length).toBeLessThanOrEqual(6);
    expect(limited.length).toBe(12 - pongs.length);
    for (const error of limited) {
      expect(error.code).toBe('RATE_LIMITED');
      expect(error.retryAfterMs).toBeGreaterThan(0);
      expect(error.retryAfterMs).toBeLessThanOrEqual(1_000);
    }
    // The first refusal came after the burst was used up.
    expect(answers.slice(0, 5).every((answer) => answer.t === 'pong')).toBe(true);
    // Still refused until the time it named has passed, then usable.
    const retryAfterMs = limited[0]!.retryAfterMs!;
    clock.advance(retryAfterMs - 1);
    expect(await phone.request({ op: 'ping', id: 'too-early' })).toMatchObject({ t: 'error', code: 'RATE_LIMITED' });
    clock.advance(1);
    const sent = await sendMessage(phone, CONV, 'after-wait', 'patience pays');
    expect(sent.seq).toBe(1);
    expect(phone.closeCode).toBeUndefined();
    const metrics = await fetchMetrics(cell.httpUrl);
    expect(metricValue(metrics, 'cellmesh_errors_total', { code: 'RATE_LIMITED' })).toBe(limited.length + 1);
  });

  test('50 errors at once close the connection with 4429; good frames in between do not reset the count, time does', async () => {
    // The core's clock is virtual: the allowance grows back only when the test moves time.
    const clock = new ManualClock(Date.now());
    const cell = await cleanup.cell({ limits: { errorRecoveryPerSecond: 10 }, clock });
    const other = await cleanup.client(cell.url, await tokenFor({ user: 'c2', device: 'phone' }));
    const burst = async (client: RawClient, count: number): Promise<void> => {
      const before = client.all('error').length;
      for (let index = 0; index < count; index++) client.send('{bad json');
      await client.until(() => client.all('error').length === before + count || client.closeCode !== undefined, { what: `${count} errors` });
    };
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    await burst(phone, 45);
    expect((await phone.request({ op: 'ping', id: 'alive-1' })).t).toBe('pong');
    await burst(phone, 10);
    await phone.whenClosed();
    expect(phone.closeCode).toBe(4429);
    expect(phone.all('error')).toHaveLength(50);

    // The allowance grows back with time (here 10 a second): after a pause, more errors pass.
    const tablet = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'tablet' }));
    await burst(tablet, 45);
    clock.advance(1_000);
    await burst(tablet, 12);
    expect(tablet.closeCode).toBeUndefined();
    expect((await tablet.request({ op: 'ping', id: 'alive-2' })).t).toBe('pong');
    await burst(tablet, 50);
    await tablet.whenClosed();
    expect(tablet.closeCode).toBe(4429);
    // Only those connections: the cell and the other devices carry on.
    await sendMessage(other, 'm1:c2', 'fine', 'unaffected');
  });

  test('one bad cmid fails only its own send, not the sends queued with it', async () => {
    const cell = await cleanup.cell();
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    await sendMessage(phone, CONV, 'warm-up', 'loads the conversation');
    // Pipelined: the first starts a write; the next ones queue together behind it.
    const first = phone.request({ op: 'send', id: 'q1', conv: CONV, cmid: 'q1', body: 'good 1' });
    const bad = phone.request({ op: 'send', id: 'q2', conv: CONV, cmid: '\ud800', body: 'bad cmid' });
    const third = phone.request({ op: 'send', id: 'q3', conv: CONV, cmid: 'q3', body: 'good 3' });
    const fromAgent = agent.request({ op: 'send', id: 'q4', conv: CONV, cmid: 'q4', body: 'agent, same moment' });
    const answers = await Promise.all([first, bad, third, fromAgent]);
    expect(answers.map((answer) => (answer.t === 'error' ? answer.code : answer.t))).toEqual(['sent', 'BAD_FRAME', 'sent', 'sent']);
  });

  test('a token that expires during the session closes it with 4401', async () => {
    const clock = new ManualClock(Date.now());
    const cell = await cleanup.cell({ clock });
    // exp is whole seconds: this one expires between 1 and 2 seconds from now.
    const token = await mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', device: 'short', ttlSeconds: 2, nowMs: clock.now() });
    const client = await cleanup.client(cell.url, token);
    clock.advance(999);
    expect((await client.request({ op: 'ping', id: 'before-expiry' })).t).toBe('pong');
    clock.advance(1_001);
    await client.until(() => client.closeCode !== undefined, { what: 'the expiry close', timeoutMs: 5_000 });
    expect(client.closeCode).toBe(4401);
  });

  test('a 30-day token keeps its session: its expiry timer (beyond 2^31 ms) does not fire at once', async () => {
    const cell = await cleanup.cell();
    const client = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'month', ttlSeconds: 30 * 24 * 3600 }));
    // The system clock is the point here: Node fires a setTimeout beyond 2^31-1 ms after 1 ms.
    // Node runs timers in the order they fall due, so once this 20 ms one (set after the welcome)
    // has fired, an overflowed expiry timer (set before the welcome) has fired too, and its
    // close would reach the client before the answer to the ping sent after it.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await client.request({ op: 'ping', id: 'still-here' })).t).toBe('pong');
    expect(client.closeCode).toBeUndefined();
  });
});

describe('refused upgrades: HTTP status and code (in band for browsers)', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());
  let url: string;
  let httpUrl: string;

  beforeAll(async () => {
    const cell = await cleanup.cell({ limits: { maxDevicesPerUser: 2 } });
    url = cell.url;
    httpUrl = cell.httpUrl;
  });

  const nowMs = (): number => Date.now();
  const tokens: Record<string, () => Promise<string>> = {
    none: async () => '',
    garbage: async () => 'not-a-jwt',
    truncated: async () => (await tokenFor({ user: 'c1' })).slice(0, -8),
    forged: () => tokenFor({ user: 'c1', secret: 'a-forged-secret-that-is-long-enough-000' }),
    crossTenant: () => tokenFor({ user: 'c1', tenant: OTHER_TENANT, secret: SECRET }),
    expired: () => mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', device: 'd1', ttlSeconds: 60, nowMs: nowMs() - 3_600_000 }),
    unknownTenant: () => tokenFor({ user: 'c1', tenant: 'nowhere', secret: SECRET }),
    paddedSignature: async () => `${await tokenFor({ user: 'c1', device: 'padded' })}=`,
    strayCharacter: async () => (await tokenFor({ user: 'c1', device: 'stray' })).replace(/\.([^.]{5})([^.]*)$/, '.$1*$2'),
    agentWithoutMerchant: () => mintToken({ secret: SECRET, tenant: TENANT, user: 'a1', role: 'agent', device: 'd1', ttlSeconds: 60, nowMs: nowMs() }),
    customerWithMerchant: () => mintToken({ secret: SECRET, tenant: TENANT, user: 'c1', role: 'customer', merchant: 'm1', device: 'd1', ttlSeconds: 60, nowMs: nowMs() }),
    agentNotHosted: () => tokenFor({ user: 'a9', merchant: 'm77' }),
  };

  const httpCases: Array<{ name: string; token: keyof typeof tokens; status: number; code: string; protocols?: string[] }> = [
    { name: 'no token', token: 'none', status: 401, code: 'UNAUTHENTICATED' },
    { name: 'garbage token', token: 'garbage', status: 401, code: 'TOKEN_INVALID' },
    { name: 'truncated token', token: 'truncated', status: 401, code: 'TOKEN_INVALID' },
    { name: 'forged signature', token: 'forged', status: 401, code: 'TOKEN_INVALID' },
    { name: 'another tenant named, signed with this tenant\'s secret', token: 'crossTenant', status: 401, code: 'TOKEN_INVALID' },
    { name: 'expired token', token: 'expired', status: 401, code: 'TOKEN_EXPIRED' },
    { name: 'unknown tenant (like any bad token: tenants are not listed)', token: 'unknownTenant', status: 401, code: 'TOKEN_INVALID' },
    { name: 'signature with base64 padding appended', token: 'paddedSignature', status: 401, code: 'TOKEN_INVALID' },
    { name: 'signature with a stray character', token: 'strayCharacter', status: 401, code: 'TOKEN_INVALID' },
    { name: 'agent without a merchant claim', token: 'agentWithoutMerchant', status: 401, code: 'TOKEN_INVALID' },
    { name: 'customer with a merchant claim', token: 'customerWithMerchant', status: 401, code: 'TOKEN_INVALID' },
    { name: 'agent of a merchant not hosted', token: 'agentNotHosted', status: 404, code: 'MERCHANT_NOT_HOSTED' },
  ];

  test.each(httpCases)('without Origin: $name → $status $code', async ({ token, status, code }) => {
    const refusal = await expectUpgradeRejected(url, await tokens[token]!());
    expect(refusal).toBeInstanceOf(UpgradeRejected);
    expect((refusal as UpgradeRejected).status).toBe(status);
    expect(refusal.code).toBe(code);
    expect(JSON.parse((refusal as UpgradeRejected).body)).toMatchObject({ error: { code, message: expect.any(String) as unknown } });
  });

  test.each([
    { name: 'garbage token', token: 'garbage' as const, code: 'TOKEN_INVALID', close: 4401 },
    { name: 'expired token', token: 'expired' as const, code: 'TOKEN_EXPIRED', close: 4401 },
    { name: 'unknown tenant', token: 'unknownTenant' as const, code: 'TOKEN_INVALID', close: 4401 },
    { name: 'agent of a merchant not hosted', token: 'agentNotHosted' as const, code: 'MERCHANT_NOT_HOSTED', close: 4403 },
  ])('from a browser (allowed Origin): $name → error $code, close $close', async ({ token, code, close }) => {
    const refusal = await expectUpgradeRejected(url, await tokens[token]!(), { origin: ALLOWED_ORIGIN });
    expect(refusal).toBeInstanceOf(InBandRejected);
    expect((refusal as InBandRejected).closeCode).toBe(close);
    expect(refusal.code).toBe(code);
  });

  test('origin not on the allowlist → ORIGIN_FORBIDDEN (in band, 4403); the allowed origin and no origin pass', async () => {
    const token = await tokenFor({ user: 'c1', device: 'origin-test' });
    const refusal = await expectUpgradeRejected(url, token, { origin: 'http://evil.example' });
    expect(refusal).toBeInstanceOf(InBandRejected);
    expect((refusal as InBandRejected).closeCode).toBe(4403);
    expect(refusal.code).toBe('ORIGIN_FORBIDDEN');
    // Tenant `market` allows no browser origin at all.
    const otherTenant = await expectUpgradeRejected(url, await tokenFor({ user: 'c1', tenant: OTHER_TENANT }), { origin: ALLOWED_ORIGIN });
    expect(otherTenant.code).toBe('ORIGIN_FORBIDDEN');
    const allowed = await RawClient.connect(url, token, { origin: ALLOWED_ORIGIN });
    await allowed.close();
    const native = await RawClient.connect(url, token);
    await native.close();
  });

  test('only unsupported subprotocols → 426 UNSUPPORTED_VERSION; v1 among others, or none, passes', async () => {
    const token = await tokenFor({ user: 'c1', device: 'proto-test' });
    const refusal = await expectUpgradeRejected(url, token, { protocols: ['cellmesh.v9'] });
    expect(refusal).toBeInstanceOf(UpgradeRejected);
    expect((refusal as UpgradeRejected).status).toBe(426);
    expect(refusal.code).toBe('UNSUPPORTED_VERSION');
    const mixed = await RawClient.connect(url, token, { protocols: ['cellmesh.v9', 'cellmesh.v1'] });
    expect(mixed.socket.protocol).toBe('cellmesh.v1');
    await mixed.close();
    const none = await RawClient.connect(url, token, { protocols: [] });
    expect(none.frames[0]).toMatchObject({ t: 'welcome', v: 1 });
    await none.close();
  });

  test('device cap (2): a third device gets 409 DEVICE_LIMIT; the same device again replaces', async () => {
    const first = await cleanup.client(url, await tokenFor({ user: 'capped', device: 'd1' }));
    await cleanup.client(url, await tokenFor({ user: 'capped', device: 'd2' }));
    const refusal = await expectUpgradeRejected(url, await tokenFor({ user: 'capped', device: 'd3' }));
    expect((refusal as UpgradeRejected).status).toBe(409);
    expect(refusal.code).toBe('DEVICE_LIMIT');
    const browser = await expectUpgradeRejected(url, await tokenFor({ user: 'capped', device: 'd3' }), { origin: ALLOWED_ORIGIN });
    expect(browser).toMatchObject({ code: 'DEVICE_LIMIT', closeCode: 4429 });
    const again = await cleanup.client(url, await tokenFor({ user: 'capped', device: 'd1' }));
    await first.whenClosed();
    expect(first.closeCode).toBe(4409);
    expect(again.closeCode).toBeUndefined();
  });

  test('the token may come in an Authorization header instead of the query', async () => {
    const token = await tokenFor({ user: 'c1', device: 'header' });
    const socket = new WebSocket(`${url}/v1/ws`, ['cellmesh.v1'], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    const first = await new Promise<ServerFrame>((resolve, reject) => {
      socket.once('message', (data) => resolve(JSON.parse(data.toString()) as ServerFrame));
      socket.once('error', reject);
      socket.once('unexpected-response', (_request, response) => reject(new Error(`refused with ${response.statusCode}`)));
    });
    expect(first).toMatchObject({ t: 'welcome', user: 'c1', device: 'header' });
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.close();
    });
  });

  test('an unknown tenant is answered byte for byte like a forged signature', async () => {
    const unknownTenant = await expectUpgradeRejected(url, await tokens['unknownTenant']!());
    const forged = await expectUpgradeRejected(url, await tokens['forged']!());
    expect(unknownTenant).toBeInstanceOf(UpgradeRejected);
    expect([(unknownTenant as UpgradeRejected).status, (unknownTenant as UpgradeRejected).body]).toEqual([(forged as UpgradeRejected).status, (forged as UpgradeRejected).body]);
    const inBandUnknown = await expectUpgradeRejected(url, await tokens['unknownTenant']!(), { origin: ALLOWED_ORIGIN });
    const inBandForged = await expectUpgradeRejected(url, await tokens['forged']!(), { origin: ALLOWED_ORIGIN });
    const seen = (refusal: UpgradeRejected | InBandRejected): unknown => (refusal instanceof InBandRejected ? [refusal.closeCode, refusal.frames] : refusal.message);
    expect(inBandUnknown).toBeInstanceOf(InBandRejected);
    expect(seen(inBandUnknown)).toEqual(seen(inBandForged));
  });

  test('refused upgrades are counted by code', async () => {
    const metrics = await fetchMetrics(httpUrl);
    expect(metricValue(metrics, 'cellmesh_upgrades_rejected_total', { code: 'TOKEN_INVALID' })).toBeGreaterThanOrEqual(6);
    expect(metricValue(metrics, 'cellmesh_upgrades_rejected_total', { code: 'DEVICE_LIMIT' })).toBe(2);
    expect(metricValue(metrics, 'cellmesh_upgrades_rejected_total', { code: 'UNSUPPORTED_VERSION' })).toBe(1);
  });
});

describe('bad HTTP requests', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('each gets its status and code, none an error-level log; the cell still serves, nothing accepted is lost', async () => {
    const errorLogs: string[] = [];
    const logger = { ...silentLogger, error: (fields: object, message?: string) => errorLogs.push(`${message ?? ''} ${JSON.stringify(fields)}`) };
    const cell = await cleanup.cell({ logger });
    const token = await tokenFor({ user: 'c1', device: 'web' });
    const unknownTenant = await tokenFor({ user: 'c1', tenant: 'nowhere', secret: SECRET });
    const base = `${cell.httpUrl}/v1/conversations/${CONV}`;
    const created = await httpRequest('POST', `${base}/messages`, { token, json: { cmid: 'first', body: 'accepted' } });
    expect(created.status).toBe(201);

    const cases: Array<{ name: string; method: string; url: string; token?: string; json?: unknown; rawBody?: string; status: number; code: string }> = [
      { name: 'bad JSON body', method: 'POST', url: `${base}/messages`, token, rawBody: '{"cmid":', status: 400, code: 'BAD_JSON' },
      { name: 'empty body', method: 'POST', url: `${base}/read`, token, rawBody: '', status: 400, code: 'BAD_JSON' },
      { name: 'missing cmid', method: 'POST', url: `${base}/messages`, token, json: { body: 'x' }, status: 400, code: 'BAD_FRAME' },
      { name: 'body of the wrong type', method: 'POST', url: `${base}/messages`, token, json: { cmid: 'x', body: 42 }, status: 400, code: 'BAD_FRAME' },
      { name: 'lone surrogate cmid', method: 'POST', url: `${base}/messages`, token, rawBody: '{"cmid":"\\udfff","body":"x"}', status: 400, code: 'BAD_FRAME' },
      { name: 'missing auth', method: 'POST', url: `${base}/messages`, json: { cmid: 'x', body: 'x' }, status: 401, code: 'UNAUTHENTICATED' },
      { name: 'missing auth on GET', method: 'GET', url: `${cell.httpUrl}/v1/inbox`, status: 401, code: 'UNAUTHENTICATED' },
      { name: 'garbage token', method: 'GET', url: `${cell.httpUrl}/v1/inbox`, token: 'garbage', status: 401, code: 'TOKEN_INVALID' },
      { name: 'unknown route', method: 'GET', url: `${cell.httpUrl}/v1/nope`, status: 404, code: 'NOT_FOUND' },
      { name: 'unknown route outside /v1', method: 'GET', url: `${cell.httpUrl}/admin`, status: 404, code: 'NOT_FOUND' },
      { name: 'wrong method on a known route', method: 'POST', url: `${cell.httpUrl}/v1/healthz`, rawBody: '{}', status: 405, code: 'METHOD_NOT_ALLOWED' },
      { name: 'oversize body', method: 'POST', url: `${base}/messages`, token, json: { cmid: 'big', body: 'b', pad: 'p'.repeat(70 * 1024) }, status: 413, code: 'PAYLOAD_TOO_LARGE' },
      { name: 'not a conversation id in the path', method: 'GET', url: `${cell.httpUrl}/v1/conversations/nope/messages`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'another customer\'s conversation', method: 'GET', url: `${cell.httpUrl}/v1/conversations/m1:c2/messages`, token, status: 403, code: 'CONVERSATION_FORBIDDEN' },
      { name: 'merchant not hosted', method: 'POST', url: `${cell.httpUrl}/v1/conversations/m77:c1/messages`, token, json: { cmid: 'x', body: 'x' }, status: 404, code: 'MERCHANT_NOT_HOSTED' },
      { name: 'history limit not a number', method: 'GET', url: `${base}/messages?limit=abc`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'history limit over 200', method: 'GET', url: `${base}/messages?limit=500`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'inbox after something that is no conversation id', method: 'GET', url: `${cell.httpUrl}/v1/inbox?after=nope`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'read beyond the conversation', method: 'POST', url: `${base}/read`, token, json: { seq: 99 }, status: 400, code: 'SEQ_OUT_OF_RANGE' },
      { name: 'read with a string seq', method: 'POST', url: `${base}/read`, token, json: { seq: '1' }, status: 400, code: 'BAD_FRAME' },
      { name: 'presence of another user', method: 'GET', url: `${cell.httpUrl}/v1/presence?users=c2`, token, status: 403, code: 'CONVERSATION_FORBIDDEN' },
      { name: 'bad percent-encoding in the path', method: 'GET', url: `${cell.httpUrl}/v1/conversations/%zz/messages`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'percent-encoded invalid UTF-8 in the path', method: 'POST', url: `${cell.httpUrl}/v1/conversations/m1%3A%C3%28/read`, token, json: { seq: 1 }, status: 400, code: 'BAD_FRAME' },
      { name: 'the WebSocket path without an upgrade', method: 'GET', url: `${cell.httpUrl}/v1/ws`, status: 426, code: 'UPGRADE_REQUIRED' },
      { name: 'unknown route under a conversation', method: 'GET', url: `${base}/nope`, token, status: 404, code: 'NOT_FOUND' },
      { name: 'unknown tenant', method: 'GET', url: `${cell.httpUrl}/v1/inbox`, token: unknownTenant, status: 401, code: 'TOKEN_INVALID' },
      { name: 'token signature with padding appended', method: 'GET', url: `${cell.httpUrl}/v1/inbox`, token: `${token}=`, status: 401, code: 'TOKEN_INVALID' },
      { name: 'send naming an attachment not uploaded', method: 'POST', url: `${base}/messages`, token, json: { cmid: 'x', body: 'x', attachments: [ATTACHMENT] }, status: 404, code: 'ATTACHMENT_UNKNOWN' },
      { name: 'send with attachments not a list', method: 'POST', url: `${base}/messages`, token, json: { cmid: 'x', body: 'x', attachments: ATTACHMENT }, status: 400, code: 'BAD_FRAME' },
      { name: 'upload without a file name', method: 'POST', url: `${base}/attachments`, token, rawBody: 'hello', status: 400, code: 'BAD_FRAME' },
      { name: 'upload of an empty file', method: 'POST', url: `${base}/attachments?name=a.txt`, token, rawBody: '', status: 400, code: 'BAD_FRAME' },
      { name: 'upload of a type not accepted', method: 'POST', url: `${base}/attachments?name=a.txt`, token, rawBody: '\u0000\u0001binary', status: 415, code: 'ATTACHMENT_TYPE_REFUSED' },
      { name: 'upload over 10 MiB', method: 'POST', url: `${base}/attachments?name=a.txt`, token, rawBody: 'a'.repeat(10 * 1024 * 1024 + 1), status: 413, code: 'ATTACHMENT_TOO_LARGE' },
      { name: 'upload without a token', method: 'POST', url: `${base}/attachments?name=a.txt`, rawBody: 'hello', status: 401, code: 'UNAUTHENTICATED' },
      { name: "upload to another customer's conversation", method: 'POST', url: `${cell.httpUrl}/v1/conversations/m1:c2/attachments?name=a.txt`, token, rawBody: 'hello', status: 403, code: 'CONVERSATION_FORBIDDEN' },
      { name: 'attachment not uploaded to the conversation', method: 'GET', url: `${base}/attachments/${ATTACHMENT}`, token, status: 404, code: 'ATTACHMENT_UNKNOWN' },
      { name: 'attachment id that is no SHA-256', method: 'GET', url: `${base}/attachments/photo.png`, token, status: 400, code: 'BAD_FRAME' },
      { name: 'login with a bad JSON body', method: 'POST', url: `${cell.httpUrl}/v1/login`, rawBody: '{"tenant":', status: 400, code: 'BAD_JSON' },
      { name: 'login without a password', method: 'POST', url: `${cell.httpUrl}/v1/login`, json: { tenant: TENANT, merchant: 'm1', agent: 'a1', device: 'd1' }, status: 400, code: 'BAD_FRAME' },
      { name: 'login of an agent the cell does not know', method: 'POST', url: `${cell.httpUrl}/v1/login`, json: { tenant: TENANT, merchant: 'm1', agent: 'a1', password: 'p', device: 'd1' }, status: 401, code: 'LOGIN_FAILED' },
      { name: 'refresh with a token that is none', method: 'POST', url: `${cell.httpUrl}/v1/login/refresh`, json: { refreshToken: 'garbage' }, status: 401, code: 'REFRESH_INVALID' },
      { name: 'logout without a refresh token', method: 'POST', url: `${cell.httpUrl}/v1/logout`, json: {}, status: 400, code: 'BAD_FRAME' },
      { name: 'guest of a merchant not hosted', method: 'POST', url: `${cell.httpUrl}/v1/guest`, json: { tenant: TENANT, merchant: 'm77' }, status: 404, code: 'MERCHANT_NOT_HOSTED' },
      { name: 'guest with an unknown field', method: 'POST', url: `${cell.httpUrl}/v1/guest`, json: { tenant: TENANT, merchant: 'm1', user: 'admin' }, status: 400, code: 'BAD_FRAME' },
      { name: 'people admin API without an admin token configured', method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/agents`, token, json: { id: 'x' }, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'audit log without an admin token configured', method: 'GET', url: `${cell.httpUrl}/v1/admin/audit`, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'blocks without an admin token configured', method: 'PUT', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/blocks/c1`, token, json: {}, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'customer export without an admin token configured', method: 'GET', url: `${cell.httpUrl}/v1/admin/tenants/mall/customers/c1/export`, token, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'customer erasure without an admin token configured', method: 'DELETE', url: `${cell.httpUrl}/v1/admin/tenants/mall/customers/c1`, token, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'tenant creation without an admin token configured', method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants`, token, json: { id: 'x' }, status: 403, code: 'ADMIN_FORBIDDEN' },
      { name: 'merchant removal without an admin token configured', method: 'DELETE', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m2`, token, status: 403, code: 'ADMIN_FORBIDDEN' },
    ];
    const problems: string[] = [];
    for (const row of cases) {
      const answer = await httpRequest(row.method, row.url, {
        ...(row.token === undefined ? {} : { token: row.token }),
        ...(row.json === undefined ? {} : { json: row.json }),
        ...(row.rawBody === undefined ? {} : { rawBody: row.rawBody }),
      });
      if (answer.status !== row.status || errorCodeOf(answer) !== row.code) {
        problems.push(`${row.name}: expected ${row.status} ${row.code}, got ${answer.status} ${answer.text.slice(0, 200)}`);
      }
    }
    expect(problems).toEqual([]);

    const second = await httpRequest('POST', `${base}/messages`, { token, json: { cmid: 'second', body: 'still accepted' } });
    expect(second.status).toBe(201);
    const history = await httpRequest('GET', `${base}/messages`, { token });
    expect((history.body as { messages: Array<{ seq: number; cmid: string }> }).messages.map((message) => [message.seq, message.cmid])).toEqual([
      [1, 'first'],
      [2, 'second'],
    ]);
    const metrics = await fetchMetrics(cell.httpUrl);
    expect(metricValue(metrics, 'cellmesh_errors_total', { code: 'INTERNAL' })).toBeUndefined();
    expect(errorLogs).toEqual([]);
  });

  test('bad input to the admin API of tenants and merchants: each gets its status and code; nothing changes', async () => {
    const cell = await cleanup.cell({ admin: ADMIN_TOKEN });
    const admin = `${cell.httpUrl}/v1/admin`;
    const cases: Array<{ name: string; method: string; url: string; json?: unknown; rawBody?: string; status: number; code: string }> = [
      { name: 'tenant: bad JSON', method: 'POST', url: `${admin}/tenants`, rawBody: '{"id":', status: 400, code: 'BAD_JSON' },
      { name: 'tenant: no id', method: 'POST', url: `${admin}/tenants`, json: {}, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: an id with a slash', method: 'POST', url: `${admin}/tenants`, json: { id: 'a/b' }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: an unknown field', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', merchants: [] }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: a short secret', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', secret: 'short' }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: a guessable secret', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', secret: 'ab'.repeat(20) }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: an origin that is no URL', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', origins: ['shop'] }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: retention of 0 days', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', retention: { conversationDays: 0 } }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: an attachment type that is no media type', method: 'POST', url: `${admin}/tenants`, json: { id: 'x', attachments: { types: ['png'] } }, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: an id taken by the config', method: 'POST', url: `${admin}/tenants`, json: { id: TENANT }, status: 409, code: 'TENANT_EXISTS' },
      { name: 'tenant: a change of nothing', method: 'PATCH', url: `${admin}/tenants/${TENANT}`, json: {}, status: 400, code: 'BAD_FRAME' },
      { name: 'tenant: a change of a config tenant', method: 'PATCH', url: `${admin}/tenants/${TENANT}`, json: { name: 'x' }, status: 409, code: 'CONFIG_OWNED' },
      { name: 'tenant: removing a config tenant', method: 'DELETE', url: `${admin}/tenants/${TENANT}`, status: 409, code: 'CONFIG_OWNED' },
      { name: 'tenant: an unknown tenant', method: 'GET', url: `${admin}/tenants/nowhere`, status: 404, code: 'TENANT_UNKNOWN' },
      { name: 'tenant: a malformed tenant in the path', method: 'GET', url: `${admin}/tenants/%zz`, status: 400, code: 'BAD_FRAME' },
      { name: 'merchant: no id', method: 'POST', url: `${admin}/tenants/${TENANT}/merchants`, json: { name: 'x' }, status: 400, code: 'BAD_FRAME' },
      { name: 'merchant: a name too long', method: 'POST', url: `${admin}/tenants/${TENANT}/merchants`, json: { id: 'm5', name: 'n'.repeat(201) }, status: 400, code: 'BAD_FRAME' },
      { name: 'merchant: one hosted already', method: 'POST', url: `${admin}/tenants/${TENANT}/merchants`, json: { id: 'm1' }, status: 409, code: 'MERCHANT_EXISTS' },
      { name: 'merchant: of an unknown tenant', method: 'POST', url: `${admin}/tenants/nowhere/merchants`, json: { id: 'm5' }, status: 404, code: 'TENANT_UNKNOWN' },
      { name: 'merchant: renaming without a name', method: 'PATCH', url: `${admin}/tenants/${TENANT}/merchants/m1`, json: {}, status: 400, code: 'BAD_FRAME' },
      { name: 'merchant: removing a config merchant', method: 'DELETE', url: `${admin}/tenants/${TENANT}/merchants/m1`, status: 409, code: 'CONFIG_OWNED' },
      { name: 'merchant: removing one not hosted', method: 'DELETE', url: `${admin}/tenants/${TENANT}/merchants/m7`, status: 404, code: 'MERCHANT_NOT_HOSTED' },
    ];
    const problems: string[] = [];
    for (const row of cases) {
      const answer = await httpRequest(row.method, row.url, {
        token: ADMIN_TOKEN,
        ...(row.json === undefined ? {} : { json: row.json }),
        ...(row.rawBody === undefined ? {} : { rawBody: row.rawBody }),
      });
      if (answer.status !== row.status || errorCodeOf(answer) !== row.code) problems.push(`${row.name}: expected ${row.status} ${row.code}, got ${answer.status} ${answer.text.slice(0, 200)}`);
    }
    expect(problems).toEqual([]);
    const listed = await httpRequest('GET', `${admin}/tenants`, { token: ADMIN_TOKEN });
    expect((listed.body as { tenants: Array<{ id: string; merchants: Array<{ id: string }> }> }).tenants.map((tenant) => [tenant.id, tenant.merchants.map((merchant) => merchant.id)])).toEqual([
      [TENANT, ['m1', 'm2']],
      [OTHER_TENANT, ['m9']],
    ]);
  });

  test('a wrong method on an existing path answers 405 with Allow; the cell still serves', async () => {
    const cell = await cleanup.cell();
    const token = await tokenFor({ user: 'c1', device: 'web' });
    const conversation = `${cell.httpUrl}/v1/conversations/${CONV}`;
    const cases: Array<{ method: string; url: string; allow: string }> = [
      { method: 'PUT', url: `${conversation}/messages`, allow: 'GET, POST' },
      { method: 'DELETE', url: `${conversation}/messages`, allow: 'GET, POST' },
      { method: 'GET', url: `${conversation}/read`, allow: 'POST' },
      { method: 'PATCH', url: `${cell.httpUrl}/v1/conversations/%zz/read`, allow: 'POST' },
      { method: 'POST', url: `${cell.httpUrl}/v1/healthz`, allow: 'GET' },
      { method: 'DELETE', url: `${cell.httpUrl}/v1/inbox`, allow: 'GET' },
      { method: 'POST', url: `${cell.httpUrl}/v1/ws`, allow: 'GET' },
      { method: 'GET', url: `${cell.httpUrl}/v1/admin/capacity`, allow: 'POST' },
      { method: 'GET', url: `${cell.httpUrl}/v1/login`, allow: 'POST' },
      { method: 'PUT', url: `${cell.httpUrl}/v1/guest`, allow: 'POST' },
      { method: 'PUT', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/agents`, allow: 'GET, POST' },
      { method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/agents/bob`, allow: 'DELETE, GET, PATCH' },
      { method: 'GET', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/agents/bob/password`, allow: 'PUT' },
      { method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/blocks`, allow: 'GET' },
      { method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1/blocks/c1`, allow: 'DELETE, GET, PUT' },
      { method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall/customers/c1/export`, allow: 'GET' },
      { method: 'GET', url: `${cell.httpUrl}/v1/admin/tenants/mall/customers/c1`, allow: 'DELETE' },
      { method: 'PUT', url: `${cell.httpUrl}/v1/admin/tenants`, allow: 'GET, POST' },
      { method: 'POST', url: `${cell.httpUrl}/v1/admin/tenants/mall`, allow: 'DELETE, GET, PATCH' },
      { method: 'PUT', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants`, allow: 'GET, POST' },
      { method: 'GET', url: `${cell.httpUrl}/v1/admin/tenants/mall/merchants/m1`, allow: 'DELETE, PATCH' },
    ];
    const problems: string[] = [];
    for (const row of cases) {
      const answer = await httpRequest(row.method, row.url, { token, ...(row.method === 'GET' ? {} : { rawBody: '{}' }) });
      const seen = `${answer.status} ${errorCodeOf(answer)} Allow: ${answer.headers.get('allow')}`;
      const expected = `405 METHOD_NOT_ALLOWED Allow: ${row.allow}`;
      if (seen !== expected) problems.push(`${row.method} ${row.url}: expected ${expected}, got ${seen}`);
    }
    expect(problems).toEqual([]);
    const created = await httpRequest('POST', `${conversation}/messages`, { token, json: { cmid: 'after-405', body: 'fine' } });
    expect(created.status).toBe(201);
  });
});

describe('tenant isolation', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('tenant A\'s conversations, devices and agents are invisible to tenant B with the same ids', async () => {
    const cell = await cleanup.cell();
    const mallCustomer = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const mallAgent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    await sendMessage(mallCustomer, CONV, 'secret', 'tenant A only');
    await mallAgent.until(() => mallAgent.messages(CONV).length === 1);

    const marketToken = await tokenFor({ user: 'c1', tenant: OTHER_TENANT, device: 'phone' });
    const marketCustomer = await cleanup.client(cell.url, marketToken);
    const marketAgent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', tenant: OTHER_TENANT, merchant: 'm9', device: 'desk' }));
    // Same user id, other tenant: its own device list only, nothing synced from tenant A.
    expect(marketCustomer.frames[1]).toMatchObject({ t: 'devices', user: 'c1', devices: [{ device: 'phone' }] });
    await marketCustomer.until(() => marketCustomer.all('synced').length > 0);
    expect(marketCustomer.messages()).toEqual([]);

    const inbox = await marketCustomer.request({ id: 'i', op: 'inbox' });
    expect(inbox).toMatchObject({ t: 'inbox', conversations: [] });
    const httpInbox = await httpRequest('GET', `${cell.httpUrl}/v1/inbox`, { token: marketToken });
    expect(httpInbox.body).toEqual({ conversations: [], hasMore: false });
    const presence = await marketAgent.request({ id: 'p', op: 'presence', users: ['c1', 'a1'], merchants: ['m1', 'm9'] });
    expect(presence).toMatchObject({
      users: [
        { user: 'c1', role: 'customer', devices: [{ device: 'phone' }] },
        { user: 'a1', role: 'customer', devices: [] },
        { user: 'a1', role: 'agent', devices: [{ device: 'desk' }] },
      ],
      merchants: [
        { merchant: 'm1', agentsOnline: 0 },
        { merchant: 'm9', agentsOnline: 1 },
      ],
    });
    if (presence.t === 'presence') {
      for (const entry of presence.users) expect(entry.devices.length).toBeLessThanOrEqual(1);
    }

    // Tenant B's traffic stays in tenant B, both ways.
    await sendMessage(marketCustomer, 'm9:c1', 'market-1', 'tenant B only');
    await marketAgent.until(() => marketAgent.messages('m9:c1').length === 1);
    const marketHistory = await marketCustomer.request({ id: 'h', op: 'history', conv: 'm9:c1' });
    expect(marketHistory).toMatchObject({ messages: [{ seq: 1, cmid: 'market-1' }], hasMore: false });
    const mallInbox = await mallCustomer.request({ id: 'i2', op: 'inbox' });
    expect(mallInbox.t === 'inbox' && mallInbox.conversations.map((conversation) => conversation.conv)).toEqual([CONV]);
    const agentInbox = await marketAgent.request({ id: 'i3', op: 'inbox' });
    expect(agentInbox.t === 'inbox' && agentInbox.conversations.map((conversation) => conversation.conv)).toEqual(['m9:c1']);
    expect(mallAgent.messages()).toHaveLength(1);
    expect(mallCustomer.messages()).toEqual([]);
    expect(marketCustomer.all('receipt')).toEqual([]);
  });
});
