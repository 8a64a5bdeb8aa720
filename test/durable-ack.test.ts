/**
 * Guarantee 1 (durable ack) against a real cell process: `node bin/cellmesh.js cell --config`,
 * LevelDB in a temp dir. A message acknowledged with `sent` survives `kill -9` and a restart on
 * the same data directory; a graceful SIGTERM closes devices with 1001, loses nothing acked and
 * exits 0.
 */
import { afterEach, describe, expect, test } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { metricValue } from '../platform/prometheus-text.js';
import {
  Cleanup,
  GatedStore,
  RawClient,
  sendMessage,
  deliveryProblems,
  eventually,
  fetchMetrics,
  hasAll,
  tokenFor,
} from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

function bodyOf(cmid: string): string {
  return `durable body of ${cmid} ${'·'.repeat(64)}`;
}

/** Every stored message of a conversation, read with backward history pages. */
async function readConversation(client: RawClient, conv: string): Promise<Array<Omit<Extract<ServerFrame, { t: 'msg' }>, 't'>>> {
  const all: Array<Omit<Extract<ServerFrame, { t: 'msg' }>, 't'>> = [];
  let before: number | undefined;
  for (let page = 0; page < 100; page++) {
    const answer = await client.request({ id: `history-${page}`, op: 'history', conv, limit: 200, ...(before === undefined ? {} : { before }) });
    if (answer.t !== 'history') throw new Error(`history answered ${JSON.stringify(answer)}`);
    all.unshift(...answer.messages);
    if (!answer.hasMore || answer.messages.length === 0) return all;
    before = answer.messages[0]!.seq;
  }
  throw new Error('history did not end within 100 pages');
}

/** Checks the stored log: seqs 1..n gap-free, each cmid once, each body the one sent with it. */
function checkLog(messages: Array<{ seq: number; cmid: string; body: string; from: string }>, cmidsSent: ReadonlySet<string>): void {
  expect(messages.map((message) => message.seq)).toEqual(Array.from({ length: messages.length }, (_, index) => index + 1));
  const cmids = messages.map((message) => message.cmid);
  expect(new Set(cmids).size, 'a cmid appears twice').toBe(cmids.length);
  for (const message of messages) {
    expect(cmidsSent.has(message.cmid), `stored ${message.cmid} was never sent`).toBe(true);
    expect(message.body).toBe(bodyOf(message.cmid));
    expect(message.from).toBe('c1');
  }
}

describe('durable ack (Guarantee 1) with a real cell process', () => {
  test('every message acked before kill -9 is there after a restart, gap-free and once', async () => {
    const dataDir = await cleanup.tempDir('cellmesh-durable-');
    const configDir = await cleanup.tempDir('cellmesh-config-');
    const customerToken = await tokenFor({ user: 'c1', device: 'phone' });
    let cell = await cleanup.childCell({ directory: dataDir, configDir });
    const phone = await cleanup.resettingClient(cell.url, customerToken);

    const TOTAL = 600;
    const KILL_AFTER_ACKS = 150;
    const PIPELINE = 48;
    const acked = new Map<string, number>();
    const sentCmids: string[] = [];
    let killed = false;
    let inFlightAtKill = 0;
    const sendNext = (): void => {
      if (killed || sentCmids.length >= TOTAL || phone.socket.readyState !== phone.socket.OPEN) return;
      const cmid = `k-${sentCmids.length + 1}`;
      sentCmids.push(cmid);
      phone.send({ op: 'send', id: cmid, conv: CONV, cmid, body: bodyOf(cmid) });
    };
    phone.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      if (frame.t !== 'sent') return;
      // Every `sent` that reaches the client counts, also those read after the kill.
      acked.set(frame.cmid, frame.seq);
      if (!killed && acked.size >= KILL_AFTER_ACKS) {
        killed = true;
        inFlightAtKill = sentCmids.length - acked.size;
        cell.kill('SIGKILL');
        return;
      }
      sendNext();
    });
    for (let index = 0; index < PIPELINE; index++) sendNext();

    const exit = await cell.exited;
    expect(exit.signal).toBe('SIGKILL');
    await phone.whenClosed();
    expect(killed).toBe(true);
    // Killed mid-stream: sends were in flight and the stream was not finished.
    expect(inFlightAtKill).toBeGreaterThan(0);
    expect(sentCmids.length).toBeLessThan(TOTAL);
    expect(new Set(acked.values()).size, 'two cmids acked with one seq').toBe(acked.size);

    cell = await cleanup.childCell({ directory: dataDir, configDir });
    const reader = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'c1', device: 'verifier' }));
    const stored = await readConversation(reader, CONV);
    checkLog(stored, new Set(sentCmids));
    const storedSeq = new Map(stored.map((message) => [message.cmid, message.seq]));
    const lost = [...acked].filter(([cmid, seq]) => storedSeq.get(cmid) !== seq);
    expect(lost, 'acked messages lost or renumbered by kill -9').toEqual([]);
    expect(stored.length).toBeGreaterThanOrEqual(acked.size);

    // Resending everything after the crash (as a client does with unacked sends) is idempotent:
    // stored cmids keep their seq, the others are appended once, still gap-free.
    const phoneAgain = await cleanup.resettingClient(cell.url, customerToken);
    phoneAgain.autoAck();
    for (const cmid of sentCmids) phoneAgain.send({ op: 'send', id: cmid, conv: CONV, cmid, body: bodyOf(cmid) });
    await phoneAgain.until(() => new Set(phoneAgain.all('sent').map((frame) => frame.cmid)).size === sentCmids.length, {
      what: 'every resend answered',
      timeoutMs: 20_000,
    });
    for (const frame of phoneAgain.all('sent')) {
      if (storedSeq.has(frame.cmid)) expect(frame.seq, frame.cmid).toBe(storedSeq.get(frame.cmid));
    }
    const afterResend = await readConversation(reader, CONV);
    checkLog(afterResend, new Set(sentCmids));
    expect(afterResend).toHaveLength(sentCmids.length);

    // A device that has seen nothing syncs the whole conversation in order after the restart.
    const agent = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    agent.autoAck();
    await agent.until(() => hasAll(agent, CONV, sentCmids.length) && agent.all('synced').length > 0, { what: 'agent sync', timeoutMs: 20_000 });
    expect(deliveryProblems(agent, CONV, sentCmids.length)).toEqual([]);
  });

  test('SIGTERM: devices get 1001, everything acked is durable, the process exits 0', async () => {
    const dataDir = await cleanup.tempDir('cellmesh-graceful-');
    const configDir = await cleanup.tempDir('cellmesh-config-');
    let cell = await cleanup.childCell({ directory: dataDir, configDir });
    const phone = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const agent = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    agent.autoAck();

    const metrics = await fetchMetrics(cell.httpUrl);
    // A real process exposes process metrics too.
    expect(metricValue(metrics, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(metricValue(metrics, 'cellmesh_connections')).toBe(2);

    const TOTAL = 400;
    const TERM_AFTER_ACKS = 100;
    const acked = new Map<string, number>();
    const sentCmids: string[] = [];
    let terminated = false;
    let refused = 0;
    const sendNext = (): void => {
      // A few sends after the drain began must be refused cleanly (a separate test covers many).
      if (sentCmids.length >= TOTAL || refused >= 10 || phone.socket.readyState !== phone.socket.OPEN) return;
      const cmid = `g-${sentCmids.length + 1}`;
      sentCmids.push(cmid);
      phone.send({ op: 'send', id: cmid, conv: CONV, cmid, body: bodyOf(cmid) });
    };
    phone.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      if (frame.t === 'sent') acked.set(frame.cmid, frame.seq);
      if (frame.t === 'error') refused++;
      if (frame.t !== 'sent' && frame.t !== 'error') return;
      if (!terminated && acked.size >= TERM_AFTER_ACKS) {
        terminated = true;
        cell.kill('SIGTERM');
      }
      // Keep sending while the cell drains: those sends must be refused cleanly, not lost silently.
      sendNext();
    });
    for (let index = 0; index < 32; index++) sendNext();

    await Promise.all([phone.whenClosed(), agent.whenClosed()]);
    expect(phone.closeCode).toBe(1001);
    expect(agent.closeCode).toBe(1001);
    const exit = await cell.exited;
    expect(exit, cell.stderrTail()).toEqual({ code: 0, signal: null });
    // Sends refused during the drain say why.
    const errors = phone.all('error');
    for (const error of errors) expect(error.code).toBe('SHUTTING_DOWN');
    // What the agent was pushed before the close is in order.
    const agentSeqs = agent.messages(CONV).map((message) => message.seq);
    expect(agentSeqs).toEqual(Array.from({ length: agentSeqs.length }, (_, index) => index + 1));

    cell = await cleanup.childCell({ directory: dataDir, configDir });
    const reader = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'c1', device: 'verifier' }));
    const stored = await readConversation(reader, CONV);
    checkLog(stored, new Set(sentCmids));
    const storedSeq = new Map(stored.map((message) => [message.cmid, message.seq]));
    expect([...acked].filter(([cmid, seq]) => storedSeq.get(cmid) !== seq), 'acked messages lost by SIGTERM').toEqual([]);
    // (A stored message may lack its ack: a send can slip past the drain's idle check while its
    // conversation head loads; a resend with its cmid is then answered idempotently.)
    // The agent device resumes after its stored cursor (at most what it was pushed) up to the end.
    const agentAgain = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    agentAgain.autoAck();
    await agentAgain.until(() => agentAgain.all('synced').length > 0, { what: 'agent synced after restart' });
    const resumed = agentAgain.messages(CONV).map((message) => message.seq);
    const cursor = (resumed[0] ?? stored.length + 1) - 1;
    expect(cursor).toBeLessThanOrEqual(agentSeqs.length);
    expect(resumed).toEqual(Array.from({ length: stored.length - cursor }, (_, index) => cursor + 1 + index));
  });

  test('sends refused during a drain (SHUTTING_DOWN) do not get the device closed as misbehaving', async () => {
    const store = new GatedStore();
    const cell = await cleanup.cell({ storeInstance: store });
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    await sendMessage(phone, CONV, 'before', 'before the drain');

    // One write under way holds the drain open, as a slow disk would.
    store.hold();
    phone.send({ op: 'send', id: 'slow', conv: CONV, cmid: 'slow', body: 'written while draining' });
    await eventually(() => store.waiting === 1, 'the write held at the gate');
    const stopped = cell.cell.stop();

    // A client that goes on sending (60 > the 50 consecutive errors that close a bad client).
    for (let index = 0; index < 60; index++) phone.send({ op: 'send', id: `late-${index}`, conv: CONV, cmid: `late-${index}`, body: 'late' });
    await phone.until(() => phone.all('error').length === 60 || phone.closeCode !== undefined, { what: '60 refusals' });
    expect(phone.all('error').map((error) => error.code)).toEqual(Array.from({ length: phone.all('error').length }, () => 'SHUTTING_DOWN'));

    store.release();
    await stopped;
    await phone.whenClosed();
    // The close says "going away, reconnect", not "you misbehaved, do not come back" (4429)...
    expect(phone.closeCode).toBe(1001);
    // ...and comes after the ack of the write that was under way.
    expect(phone.all('sent').map((frame) => frame.cmid)).toEqual(['before', 'slow']);
  });
});
