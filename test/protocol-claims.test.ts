/**
 * Claims of docs/protocol.md about `sent`, `ack` and `read` (issue 15, item 8), checked against
 * a real cell process: on the sending connection `sent` comes before any later `msg` of the
 * conversation; an applied `ack` is not answered; a read cursor answered `ok` survives kill -9.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { Cleanup, httpRequest, killChildCell, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

describe('sent, ack and read as docs/protocol.md states them', () => {
  test('sent precedes later msg frames on the sending connection; an applied ack gets no answer; a read answered ok survives kill -9', async () => {
    const root = await cleanup.tempDir();
    const cell = await cleanup.childCell({ directory: `${root}/data`, configDir: root });
    const customer = await cleanup.resettingClient(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const agentToken = await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' });
    const agent = await cleanup.resettingClient(cell.url, agentToken);

    // The customer sends while the agent answers as fast as it can: on the customer's
    // connection, each `sent` comes before every `msg` with a higher seq.
    for (let index = 0; index < 20; index++) {
      customer.send({ op: 'send', id: `c${index}`, conv: CONV, cmid: `c${index}`, body: `customer ${index}` });
      agent.send({ op: 'send', id: `a${index}`, conv: CONV, cmid: `a${index}`, body: `agent ${index}` });
    }
    await customer.until(() => customer.all('sent').length === 20 && customer.messages(CONV).length === 20, { what: 'all 40 messages at the customer' });
    let highestSeen = 0;
    for (const frame of customer.frames) {
      if (frame.t === 'sent') expect(frame.seq, `sent ${frame.seq} after msg ${highestSeen}`).toBeGreaterThan(highestSeen);
      if (frame.t === 'msg' || frame.t === 'sent') highestSeen = Math.max(highestSeen, frame.seq);
    }

    // An ack is applied silently: the next frame is the pong that follows it.
    const before = customer.frames.length;
    customer.send({ op: 'ack', conv: CONV, seq: 40 });
    expect(await customer.request({ op: 'ping', id: 'after-ack' })).toMatchObject({ t: 'pong', id: 'after-ack' });
    expect(customer.frames.slice(before).map((frame) => frame.t)).toEqual(['pong']);

    // A read answered `ok` is on disk: it survives kill -9 and a restart. (A second agent, whose
    // cursor no send of theirs moved.)
    const supervisorToken = await tokenFor({ user: 'a2', merchant: 'm1', device: 'desk' });
    const supervisor = await cleanup.resettingClient(cell.url, supervisorToken);
    expect(await supervisor.request({ op: 'read', id: 'r', conv: CONV, seq: 39 })).toEqual({ t: 'ok', id: 'r' });
    await killChildCell(cell);
    const restarted = await cleanup.childCell({ directory: `${root}/data`, configDir: root, port: cell.port });
    const inbox = await httpRequest('GET', `${restarted.httpUrl}/v1/inbox`, { token: supervisorToken });
    expect(inbox.body).toMatchObject({ conversations: [{ conv: CONV, lastSeq: 40, readSeq: 39, unread: 1 }] });
    expect((await sendMessage(await cleanup.resettingClient(restarted.url, agentToken), CONV, 'after', 'after the crash')).seq).toBe(41);
  });
});
