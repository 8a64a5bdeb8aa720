/**
 * The SDK's ways to get tokens, against a real cell: an agent's login token source, a guest's
 * token source with its kept refresh token, and a merchant server's customer tokens.
 */
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { Cleanup, SECRET, TENANT, type TestCell } from '../test/harness.js';
import { connectNode, guestStorageKey, guestTokenSource, loginTokenSource, mintCustomerToken, type CellmeshClient } from './index.js';
import { ClientError } from './errors.js';

const PASSWORD = 'correct horse battery staple';

const subjectOf = (token: string): string | undefined => decodeJwt(token).sub;
const never = new AbortController().signal;

describe('token sources of the SDK', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());
  const connect = async (cell: TestCell, token: Parameters<typeof connectNode>[0]['token']): Promise<CellmeshClient> => {
    const client = await connectNode({ url: cell.url, token, signal: AbortSignal.timeout(10_000) });
    cleanup.add(() => client.close());
    return client;
  };

  it('loginTokenSource logs in once, then refreshes; a client connects with it', async () => {
    // Two logins a minute at most: the many tokens below come from refreshes.
    const cell = await cleanup.cell({ agents: [{ id: 'alice', password: PASSWORD }], logins: { loginsPerMinutePerAgent: 1, loginBurstPerAgent: 2 } });
    const source = loginTokenSource({ url: cell.url, tenant: TENANT, merchant: 'm1', agent: 'alice', password: PASSWORD, device: 'desk-1' });
    const client = await connect(cell, source);
    expect(client.session).toMatchObject({ user: 'alice', role: 'agent', merchant: 'm1', device: 'desk-1' });
    for (let index = 0; index < 4; index++) expect(subjectOf(await source(never))).toBe('alice');
    // The agent removed: the refresh is refused, and so is the login it falls back to.
    await cell.cell.people.remove(TENANT, 'm1', 'alice');
    const refused = await source(never).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ClientError);
    expect((refused as ClientError).code).toBe('LOGIN_FAILED');
  });

  it('loginTokenSource logs in again after a logout', async () => {
    const cell = await cleanup.cell({ agents: [{ id: 'alice', password: PASSWORD }] });
    const source = loginTokenSource({ url: `${cell.httpUrl}/`, tenant: TENANT, merchant: 'm1', agent: 'alice', password: PASSWORD, device: 'desk-1' });
    await source(never);
    await source.logout();
    expect(subjectOf(await source(never))).toBe('alice');
  });

  it('guestTokenSource keeps the refresh token in its storage: the same guest comes back', async () => {
    const cell = await cleanup.cell();
    const storage = new Map<string, string>();
    const options = { url: cell.url, tenant: TENANT, merchant: 'm1', storage };
    const client = await connect(cell, guestTokenSource(options));
    const guest = client.session?.user;
    expect(guest).toMatch(/^g-/);
    const kept = storage.get(guestStorageKey(TENANT, 'm1'));
    expect(kept).toBeDefined();
    // A new page with the same storage: the same guest, and the kept token rotated.
    const again = await guestTokenSource(options)(never);
    expect(subjectOf(again)).toBe(guest);
    expect(storage.get(guestStorageKey(TENANT, 'm1'))).not.toBe(kept);
    // A kept token the cell refuses makes a new guest.
    storage.set(guestStorageKey(TENANT, 'm1'), kept!);
    const stranger = await guestTokenSource(options)(never);
    expect(subjectOf(stranger)).not.toBe(guest);
  });

  it('mintCustomerToken signs a customer token a cell accepts', async () => {
    const cell = await cleanup.cell();
    const token = await mintCustomerToken({ secret: SECRET, tenant: TENANT, user: 'shopper-42', device: 'phone' });
    expect(decodeProtectedHeader(token).kid).toBeUndefined();
    const client = await connect(cell, token);
    expect(client.session).toMatchObject({ user: 'shopper-42', role: 'customer', device: 'phone' });
    const withKid = await mintCustomerToken({ secret: SECRET, kid: '2026-12', tenant: TENANT, user: 'shopper-42', ttlSeconds: 60 });
    expect(decodeProtectedHeader(withKid).kid).toBe('2026-12');
    expect(decodeJwt(withKid)['device']).toMatch(/^web-[0-9a-f]{12}$/);
    expect(() => mintCustomerToken({ secret: SECRET, tenant: TENANT, user: 'not an id' })).toThrow(TypeError);
  });
});
