/**
 * The desk end to end, as its users meet it: agents who log in with a password, guests who get
 * their tokens from the cell, both on the SDK over real uWS and LevelDB. A consultation is
 * assigned, queued, transferred and closed, and everyone sees each change in order.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { connectNode, guestTokenSource, loginTokenSource, type CellmeshClient, type ChatMessage } from '../client/index.js';
import type { ConsultationView } from '../cell/protocol/frames.js';
import { ADMIN_TOKEN, Cleanup, TENANT, eventually, httpRequest, type TestCell } from './harness.js';

const PASSWORD = 'correct horse battery staple';

interface Person {
  client: CellmeshClient;
  messages: ChatMessage[];
  consultations: ConsultationView[];
}

describe('the desk over the SDK', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  async function person(cell: TestCell, token: Parameters<typeof connectNode>[0]['token']): Promise<Person> {
    const client = await connectNode({ url: cell.url, token, signal: AbortSignal.timeout(10_000) });
    cleanup.add(() => client.close());
    const seen: Person = { client, messages: [], consultations: [] };
    client.on('message', (message) => seen.messages.push(message));
    client.on('consultation', (view) => seen.consultations.push(view));
    return seen;
  }

  const agent = (cell: TestCell, id: string): Promise<Person> =>
    person(cell, loginTokenSource({ url: cell.url, tenant: TENANT, merchant: 'm1', agent: id, password: PASSWORD, device: 'desk' }));
  const guest = (cell: TestCell): Promise<Person> => person(cell, guestTokenSource({ url: cell.url, tenant: TENANT, merchant: 'm1', storage: new Map() }));
  const notices = (seen: Person, conv: string): string[] => seen.messages.filter((message) => message.conv === conv && message.role === 'system').map((message) => message.body);

  test('logged-in agents and guests: assignment, a queue, a transfer with the whole history, a close', async () => {
    const cell = await cleanup.cell({
      agents: [
        { id: 'ann', name: 'Ann', capacity: 1, password: PASSWORD },
        { id: 'bob', name: 'Bob', capacity: 1, password: PASSWORD },
      ],
    });
    const ann = await agent(cell, 'ann');
    const first = await guest(cell);
    const firstConv = `m1:${first.client.session!.user}`;
    await first.client.send(firstConv, 'my order never came');
    await eventually(async () => notices(first, firstConv).length === 1, 'the assignment');
    expect(notices(first, firstConv)).toEqual(['Ann is here to help.']);
    expect(first.consultations.at(-1)).toMatchObject({ conv: firstConv, state: 'assigned', agent: 'ann', agentName: 'Ann' });
    await eventually(async () => ann.messages.some((message) => message.body === 'my order never came'), 'ann to get the message');

    // Ann is full: the next guest waits, and knows where it stands.
    const second = await guest(cell);
    const secondConv = `m1:${second.client.session!.user}`;
    await second.client.send(secondConv, 'hello?');
    await eventually(async () => second.consultations.at(-1)?.state === 'waiting', 'the second guest to wait');
    expect(second.consultations.at(-1)).toMatchObject({ position: 1 });
    expect(ann.messages.some((message) => message.conv === secondConv)).toBe(false);

    // Bob comes online: the queue moves at once.
    const bob = await agent(cell, 'bob');
    await eventually(async () => second.consultations.at(-1)?.agent === 'bob', 'bob to take the waiting guest');
    await bob.client.closeConsultation(secondConv, second.consultations.at(-1)!.consultation);
    await eventually(async () => notices(second, secondConv).at(-1) === 'Closed by the agent.', 'the close');

    // Ann hands her customer to Bob, who sees everything that was said.
    const consultation = first.consultations.at(-1)!.consultation;
    await ann.client.transfer(firstConv, { agent: 'bob' }, { note: 'shipping', consultation });
    await eventually(async () => bob.messages.some((message) => message.body === 'Transferred to Bob: shipping'), 'bob to get the transfer');
    expect(bob.messages.filter((message) => message.conv === firstConv).map((message) => message.body)).toEqual([
      'my order never came',
      'Ann is here to help.',
      'Transferred to Bob: shipping',
    ]);
    await first.client.send(firstConv, 'thanks');
    await eventually(async () => bob.messages.some((message) => message.body === 'thanks'), 'bob to get the answer');
    expect(ann.messages.some((message) => message.body === 'thanks')).toBe(false);
    // A close sent again for that consultation (a retry after a reconnect) cannot close the next one.
    await first.client.closeConsultation(firstConv, consultation);
    await expect(first.client.closeConsultation(firstConv, consultation)).rejects.toMatchObject({ code: 'CONSULTATION_UNKNOWN' });
    await first.client.rate(firstConv, 4, 'fine');
    await eventually(async () => notices(first, firstConv).at(-1) === 'Rated 4/5: fine', 'the rating');
  });

  test('a removed agent is disconnected and its token refused; its customers go to another agent', async () => {
    const cell = await cleanup.cell({
      agents: [
        { id: 'ann', name: 'Ann', capacity: 2, password: PASSWORD },
        { id: 'bob', name: 'Bob', capacity: 2, password: PASSWORD },
      ],
      admin: ADMIN_TOKEN,
    });
    const ann = await agent(cell, 'ann');
    const customer = await guest(cell);
    const conv = `m1:${customer.client.session!.user}`;
    await customer.client.send(conv, 'hi');
    await eventually(async () => customer.consultations.at(-1)?.agent === 'ann', 'ann to take it');
    const bob = await agent(cell, 'bob');
    const states: Array<[string, number | undefined]> = [];
    ann.client.on('state', (change) => states.push([change.state, change.error?.details.closeCode]));
    const removed = await httpRequest('DELETE', `${cell.httpUrl}/v1/admin/tenants/${TENANT}/merchants/m1/agents/ann`, { token: ADMIN_TOKEN });
    expect(removed.status, removed.text).toBe(200);
    await eventually(async () => states.some(([state]) => state === 'closed'), `ann's client to close: ${JSON.stringify(states)}`);
    expect(states.find(([state]) => state === 'closed')).toEqual(['closed', 4403]);
    await eventually(async () => customer.consultations.at(-1)?.agent === 'bob', 'bob to take ann’s customer');
    await eventually(async () => notices(customer, conv).length === 3, 'the notices of the release and the new assignment');
    expect(notices(customer, conv)).toEqual(['Ann is here to help.', 'Your agent is no longer available; waiting for another agent.', 'Bob is here to help.']);
    await eventually(async () => bob.messages.some((message) => message.body === 'hi'), 'bob to get the history');
    const login = await httpRequest('POST', `${cell.httpUrl}/v1/login`, { json: { tenant: TENANT, merchant: 'm1', agent: 'ann', password: PASSWORD, device: 'desk' } });
    expect(login.status).toBe(401);
  });
});
