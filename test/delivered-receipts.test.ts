/**
 * Delivery receipts over real sockets (docs/protocol.md, "`delivered`"): an ack of the other
 * side's messages tells the sender's devices, once per conversation and ack, cumulatively; a
 * device acking its own messages tells nobody.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { Cleanup, RawClient, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Once the pong is here, so is everything the cell sent this client before it. */
async function settled(...clients: RawClient[]): Promise<void> {
  for (const [index, client] of clients.entries()) expect((await client.request({ op: 'ping', id: `p-${index}-${client.all('pong').length}` })).t).toBe('pong');
}

describe('delivered', () => {
  test("an agent's ack turns the customer's messages delivered on the customer's devices; its own ack tells nobody", async () => {
    const cell = await cleanup.cell();
    const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const laptop = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'laptop' }));
    const desk = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    const other = await cleanup.client(cell.url, await tokenFor({ user: 'a2', merchant: 'm1', device: 'desk' }));

    for (let index = 1; index <= 3; index++) await sendMessage(phone, 'm1:c1', `c${index}`, `customer ${index}`);
    // The sender acks its own messages (as every client does after `sent`): nothing of the other side was delivered.
    phone.send({ op: 'ack', conv: 'm1:c1', seq: 3 });
    laptop.send({ op: 'ack', conv: 'm1:c1', seq: 3 });
    await desk.until(() => desk.messages('m1:c1').length === 3);
    await settled(phone, laptop, desk, other);
    expect([...phone.all('delivered'), ...laptop.all('delivered'), ...desk.all('delivered'), ...other.all('delivered')]).toEqual([]);

    desk.send({ op: 'ack', conv: 'm1:c1', seq: 2 });
    desk.send({ op: 'ack', conv: 'm1:c1', seq: 3 });
    // Another agent's device acking what the side already acked moves nothing.
    other.send({ op: 'ack', conv: 'm1:c1', seq: 3 });
    await settled(desk, other, phone, laptop);
    for (const device of [phone, laptop]) {
      expect(device.all('delivered')).toEqual([
        { t: 'delivered', conv: 'm1:c1', role: 'agent', seq: 2 },
        { t: 'delivered', conv: 'm1:c1', role: 'agent', seq: 3 },
      ]);
    }
    // The agents' side is told nothing about its own ack.
    expect([...desk.all('delivered'), ...other.all('delivered')]).toEqual([]);

    // The agent answers; its own ack tells nobody, the customer's ack tells the agents.
    await sendMessage(desk, 'm1:c1', 'a4', 'agent 4');
    await sendMessage(desk, 'm1:c1', 'a5', 'agent 5');
    desk.send({ op: 'ack', conv: 'm1:c1', seq: 5 });
    await phone.until(() => phone.messages('m1:c1').length === 2);
    await settled(desk, phone);
    expect(phone.all('delivered')).toHaveLength(2);
    phone.send({ op: 'ack', conv: 'm1:c1', seq: 5 });
    await desk.until(() => desk.all('delivered').length === 1);
    await other.until(() => other.all('delivered').length === 1);
    expect(desk.all('delivered')).toEqual([{ t: 'delivered', conv: 'm1:c1', role: 'customer', seq: 5 }]);
    // The customer's other device is of the same side.
    await settled(laptop);
    expect(laptop.all('delivered')).toHaveLength(2);
  });

  test('an ack of many conversations makes one delivered frame per conversation, to each customer', async () => {
    const cell = await cleanup.cell();
    const alice = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
    const bob = await cleanup.client(cell.url, await tokenFor({ user: 'c2', device: 'phone' }));
    const desk = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
    for (let index = 1; index <= 4; index++) await sendMessage(alice, 'm1:c1', `a${index}`, `alice ${index}`);
    for (let index = 1; index <= 2; index++) await sendMessage(bob, 'm1:c2', `b${index}`, `bob ${index}`);
    await desk.until(() => desk.messages().length === 6);

    desk.send({ op: 'ack', acks: { 'm1:c1': 4, 'm1:c2': 2 } });
    await alice.until(() => alice.all('delivered').length === 1);
    await bob.until(() => bob.all('delivered').length === 1);
    await settled(alice, bob, desk);
    expect(alice.all('delivered')).toEqual([{ t: 'delivered', conv: 'm1:c1', role: 'agent', seq: 4 }]);
    expect(bob.all('delivered')).toEqual([{ t: 'delivered', conv: 'm1:c2', role: 'agent', seq: 2 }]);
  });
});
