/**
 * A user is (tenant, role, user id, and merchant for agents), never a user id alone (issue 15,
 * item 1), over real sockets. In the test cell's tenant `mall`, merchant `m1` stands for
 * acme-shoes and `m2` for bolt-bikes: customer `alice` talks with m1, and m2 employs an agent
 * whose id is also `alice`. Before the fix the agent was pushed the customer's `msg`, `devices`
 * and `receipt` frames, they shared a device limit, and inside one conversation an agent and
 * the customer of the same id shared a read cursor and each other's client message ids.
 */
import { afterEach, describe, expect, test } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { Cleanup, type RawClient, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:alice';

/** Every frame that carries something of conversation `conv` or of the customer `alice`'s devices. */
function framesAboutCustomerAlice(client: RawClient): ServerFrame[] {
  return client.frames.filter(
    (frame) =>
      ((frame.t === 'msg' || frame.t === 'receipt' || frame.t === 'sent' || frame.t === 'queued') && frame.conv === CONV) ||
      (frame.t === 'devices' && frame.devices.some((device) => device.device === 'phone' || device.device === 'laptop')),
  );
}

async function pinged(client: RawClient, id: string): Promise<void> {
  // One connection answers in order: once the pong is here, so is everything sent before it.
  expect(await client.request({ op: 'ping', id })).toMatchObject({ t: 'pong', id });
}

describe('identity is (tenant, role, user, merchant)', () => {
  test("an agent of another merchant with the customer's id gets none of her msg, devices or receipt frames", async () => {
    const cell = await cleanup.cell();
    // The look-alike agent (bolt-bikes) is online first, on two devices.
    const lookAlike = await cleanup.client(cell.url, await tokenFor({ user: 'alice', merchant: 'm2', device: 'desk' }));
    const lookAlikeTablet = await cleanup.client(cell.url, await tokenFor({ user: 'alice', merchant: 'm2', device: 'tablet' }));
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const laptop = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'laptop' }));
    const acmeAgent = await cleanup.client(cell.url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
    acmeAgent.autoAck();
    laptop.autoAck();

    const sent = await sendMessage(phone, CONV, 'c-1', 'my order 1234 is late');
    await acmeAgent.until(() => acmeAgent.messages(CONV).length === 1, { what: 'the message at acme' });
    await laptop.until(() => laptop.messages(CONV).length === 1, { what: 'the message on her laptop' });
    await sendMessage(acmeAgent, CONV, 'b-1', 'sorry, it ships today');
    await phone.until(() => phone.messages(CONV).some((message) => message.from === 'bob'), { what: "the agent's answer" });
    expect(await phone.request({ op: 'read', id: 'r1', conv: CONV, seq: sent.seq + 1 })).toMatchObject({ t: 'ok' });
    expect(await acmeAgent.request({ op: 'read', id: 'r2', conv: CONV, seq: sent.seq + 1 })).toMatchObject({ t: 'ok' });
    await laptop.close();
    await phone.until(() => phone.all('devices').at(-1)?.devices.every((device) => device.device !== 'laptop') === true, {
      what: 'the devices frame of the laptop leaving',
    });

    await pinged(lookAlike, 'p1');
    await pinged(lookAlikeTablet, 'p2');
    expect(framesAboutCustomerAlice(lookAlike)).toEqual([]);
    expect(framesAboutCustomerAlice(lookAlikeTablet)).toEqual([]);
    // The agent's own devices frames list its own devices only, and hers list hers.
    for (const frame of lookAlike.all('devices')) expect(frame.devices.map((device) => device.device).sort()).toEqual(expect.arrayContaining(['desk']));
    for (const frame of phone.all('devices')) {
      expect(frame.devices.every((device) => device.device === 'phone' || device.device === 'laptop')).toBe(true);
    }
    // The receipts at acme name who read, with the role that tells the two alices apart.
    expect(acmeAgent.all('receipt')).toContainEqual({ t: 'receipt', conv: CONV, user: 'alice', role: 'customer', seq: sent.seq + 1 });
    // And the look-alike cannot read the conversation either.
    expect(await lookAlike.request({ op: 'history', id: 'h', conv: CONV })).toMatchObject({ t: 'error', code: 'CONVERSATION_FORBIDDEN' });
  });

  test("device limits count each identity's devices: an agent with the customer's id takes none of her slots", async () => {
    const cell = await cleanup.cell({ limits: { maxDevicesPerUser: 2 } });
    for (const device of ['desk', 'tablet']) await cleanup.client(cell.url, await tokenFor({ user: 'alice', merchant: 'm2', device }));
    for (const device of ['desk', 'tablet']) await cleanup.client(cell.url, await tokenFor({ user: 'alice', merchant: 'm1', device }));
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const laptop = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'laptop' }));
    expect(phone.all('devices')[0]!.devices.map((device) => device.device)).toEqual(['phone']);
    expect(laptop.all('devices')[0]!.devices.map((device) => device.device).sort()).toEqual(['laptop', 'phone']);
    // Her third is over her own limit.
    await expect(cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'watch' }))).rejects.toMatchObject({ status: 409 });
  });

  test('the customer and an agent of her conversation sharing an id keep their own sends, read cursors and presence', async () => {
    const cell = await cleanup.cell();
    const customer = await cleanup.client(cell.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const agent = await cleanup.client(cell.url, await tokenFor({ user: 'alice', merchant: 'm1', device: 'phone' }));
    agent.autoAck();
    customer.autoAck();

    const hers = await sendMessage(customer, CONV, 'same-cmid', 'from the customer');
    // The same cmid from the agent is another sender's message, not a resend of hers.
    const his = await sendMessage(agent, CONV, 'same-cmid', 'from the agent');
    expect(his.seq).toBe(hers.seq + 1);
    await customer.until(() => customer.messages(CONV).some((message) => message.seq === his.seq), { what: "the agent's message" });
    expect(customer.messages(CONV).find((message) => message.seq === his.seq)).toMatchObject({ from: 'alice', role: 'agent', body: 'from the agent' });

    // Sending read the agent's cursor up to his message; hers stays at her own.
    const inbox = await customer.request({ op: 'inbox', id: 'i' });
    expect(inbox).toMatchObject({ t: 'inbox', conversations: [{ conv: CONV, readSeq: hers.seq, reads: [{ user: 'alice', role: 'agent', seq: his.seq }] }] });

    // Her devices are not his: each sees its own connection only.
    const presence = await agent.request({ op: 'presence', id: 'p', users: ['alice'] });
    expect(presence).toMatchObject({
      t: 'presence',
      users: [
        { user: 'alice', role: 'customer', devices: [{ device: 'phone' }] },
        { user: 'alice', role: 'agent', devices: [{ device: 'phone' }] },
      ],
    });
    // Connecting the same device name under the other identity replaced nobody.
    expect(customer.closeCode).toBeUndefined();
    expect(agent.closeCode).toBeUndefined();
  });
});
