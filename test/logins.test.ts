/**
 * Logins and guest tokens over real uWS: agents log in with a password and refresh with rotating
 * refresh tokens; pages of shoppers get guest tokens and come back as the same guest.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { ManualClock } from '../platform/manual-clock.js';
import { Cleanup, TENANT, errorCodeOf, httpRequest, sendMessage, type HttpAnswer, type TestCell } from './harness.js';

const DAY_MS = 24 * 3600 * 1000;
const PASSWORD = 'correct horse battery staple';

/** Alice, with a password, the agent of merchant m1 that logs in. */
const ALICE = [{ id: 'alice', password: PASSWORD }];

interface Tokens {
  token: string;
  expiresAtMs: number;
  refreshToken: string;
  refreshExpiresAtMs: number;
}

interface GuestAnswer extends Tokens {
  user: string;
  device: string;
}

const post = (cell: TestCell, path: string, json: unknown): Promise<HttpAnswer> => httpRequest('POST', `${cell.httpUrl}${path}`, { json });
const login = (cell: TestCell, fields: Record<string, string> = {}): Promise<HttpAnswer> =>
  post(cell, '/v1/login', { tenant: TENANT, merchant: 'm1', agent: 'alice', password: PASSWORD, device: 'desk-1', ...fields });

function tokensOf(answer: HttpAnswer): Tokens {
  expect(answer.status, answer.text).toBe(200);
  return answer.body as Tokens;
}

function guestOf(answer: HttpAnswer): GuestAnswer {
  expect(answer.status, answer.text).toBe(200);
  return answer.body as GuestAnswer;
}

function expectRefused(answer: HttpAnswer, status: number, code: string): void {
  expect(`${answer.status} ${errorCodeOf(answer)}`, answer.text).toBe(`${status} ${code}`);
}

describe('agent logins', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());
  test('a login answers a short-lived agent token, which opens a WebSocket, and a refresh token', async () => {
    const cell = await cleanup.cell({ agents: ALICE });
    const startedAtMs = Date.now();
    const answer = await login(cell);
    const tokens = tokensOf(answer);
    // Pages of any origin may read it (the credentials are in the body, never in cookies).
    expect(answer.headers.get('access-control-allow-origin')).toBe('*');
    expect(tokens.expiresAtMs).toBeGreaterThan(startedAtMs + 14 * 60_000);
    expect(tokens.expiresAtMs).toBeLessThanOrEqual(Date.now() + 15 * 60_000);
    expect(tokens.refreshExpiresAtMs).toBeGreaterThan(startedAtMs + 29 * DAY_MS);
    const client = await cleanup.client(cell.url, tokens.token);
    expect(client.frames[0]).toMatchObject({ t: 'welcome', tenant: TENANT, user: 'alice', role: 'agent', merchant: 'm1', device: 'desk-1' });
  });

  test('an unknown agent and a wrong password get the same answer', async () => {
    const cell = await cleanup.cell({ agents: ALICE });
    const wrongPassword = await login(cell, { password: 'not the password' });
    const unknownAgent = await login(cell, { agent: 'mallory' });
    const otherMerchant = await login(cell, { merchant: 'm2' });
    expectRefused(wrongPassword, 401, 'LOGIN_FAILED');
    expect(wrongPassword.headers.get('access-control-allow-origin')).toBe('*');
    for (const answer of [unknownAgent, otherMerchant]) expect([answer.status, answer.text]).toEqual([wrongPassword.status, wrongPassword.text]);
  });

  test('a merchant without agents knows no login; a merchant hosted elsewhere is named', async () => {
    const cell = await cleanup.cell();
    expectRefused(await login(cell), 401, 'LOGIN_FAILED');
    expectRefused(await login(cell, { merchant: 'm77' }), 404, 'MERCHANT_NOT_HOSTED');
    expectRefused(await login(cell, { tenant: 'nowhere' }), 404, 'MERCHANT_NOT_HOSTED');
  });

  test('logins are rate-limited per agent, right password or not, with retryAfterMs', async () => {
    const cell = await cleanup.cell({ agents: ALICE, logins: { loginsPerMinutePerAgent: 1, loginBurstPerAgent: 2 } });
    expectRefused(await login(cell, { password: 'guess one' }), 401, 'LOGIN_FAILED');
    expectRefused(await login(cell, { password: 'guess two' }), 401, 'LOGIN_FAILED');
    const limited = await login(cell);
    expectRefused(limited, 429, 'LOGIN_RATE_LIMITED');
    const retryAfterMs = (limited.body as { error: { retryAfterMs: number } }).error.retryAfterMs;
    expect(retryAfterMs).toBeGreaterThan(50_000);
    expect(retryAfterMs).toBeLessThanOrEqual(60_000);
    // Another name has its own budget, existing or not.
    expectRefused(await login(cell, { agent: 'bob' }), 401, 'LOGIN_FAILED');
  });

  test('logins are rate-limited per client address', async () => {
    const cell = await cleanup.cell({ agents: ALICE, logins: { loginsPerMinutePerAddress: 1, loginBurstPerAddress: 3 } });
    for (const agent of ['a1', 'a2', 'a3']) expectRefused(await login(cell, { agent }), 401, 'LOGIN_FAILED');
    const limited = await login(cell);
    expectRefused(limited, 429, 'LOGIN_RATE_LIMITED');
    expect((limited.body as { error: { retryAfterMs: number } }).error.retryAfterMs).toBeGreaterThan(0);
  });

  test('a refresh rotates; presenting a rotated token revokes the whole login', async () => {
    const cell = await cleanup.cell({ agents: ALICE });
    const first = tokensOf(await login(cell));
    const second = tokensOf(await post(cell, '/v1/login/refresh', { refreshToken: first.refreshToken }));
    expect(second.refreshToken).not.toBe(first.refreshToken);
    const client = await cleanup.client(cell.url, second.token);
    expect(client.frames[0]).toMatchObject({ t: 'welcome', user: 'alice', role: 'agent', merchant: 'm1' });
    const third = tokensOf(await post(cell, '/v1/login/refresh', { refreshToken: second.refreshToken }));

    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: first.refreshToken }), 401, 'REFRESH_INVALID');
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: third.refreshToken }), 401, 'REFRESH_INVALID');
  });

  test('logout revokes the login', async () => {
    const cell = await cleanup.cell({ agents: ALICE });
    const tokens = tokensOf(await login(cell));
    const loggedOut = await post(cell, '/v1/logout', { refreshToken: tokens.refreshToken });
    expect([loggedOut.status, loggedOut.body]).toEqual([200, { loggedOut: true }]);
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: tokens.refreshToken }), 401, 'REFRESH_INVALID');
    // Logging out again, or with anything, changes nothing and says so the same way.
    expect((await post(cell, '/v1/logout', { refreshToken: tokens.refreshToken })).status).toBe(200);
  });

  test('a refresh is refused once the agent is removed or its password changed', async () => {
    const cell = await cleanup.cell({ agents: [...ALICE, { id: 'bob', password: PASSWORD }] });
    const alice = tokensOf(await login(cell));
    const bob = tokensOf(await login(cell, { agent: 'bob' }));
    await cell.cell.people.setPassword(TENANT, 'm1', 'alice', 'a brand new password');
    await cell.cell.people.remove(TENANT, 'm1', 'bob');
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: alice.refreshToken }), 401, 'REFRESH_INVALID');
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: bob.refreshToken }), 401, 'REFRESH_INVALID');
    tokensOf(await login(cell, { password: 'a brand new password' }));
  });

  test('an expired refresh token is refused', async () => {
    const clock = new ManualClock(Date.now());
    const cell = await cleanup.cell({ agents: ALICE, clock, logins: { refreshTokenTtlSeconds: 3600 } });
    const tokens = tokensOf(await login(cell));
    expect(tokens.refreshExpiresAtMs).toBe(clock.now() + 3600_000);
    clock.advance(3600_000);
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: tokens.refreshToken }), 401, 'REFRESH_INVALID');
  });

  test('bad bodies are BAD_FRAME or BAD_JSON; refresh tokens of guests do not refresh agents', async () => {
    const cell = await cleanup.cell({ agents: ALICE });
    expectRefused(await post(cell, '/v1/login', { tenant: TENANT, merchant: 'm1', agent: 'alice', device: 'd' }), 400, 'BAD_FRAME');
    expectRefused(await login(cell, { extra: 'x' }), 400, 'BAD_FRAME');
    expectRefused(await httpRequest('POST', `${cell.httpUrl}/v1/login/refresh`, { rawBody: '{"refreshToken":' }), 400, 'BAD_JSON');
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: 'garbage' }), 401, 'REFRESH_INVALID');
    const guest = guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1' }));
    expectRefused(await post(cell, '/v1/login/refresh', { refreshToken: guest.refreshToken }), 401, 'REFRESH_INVALID');
    guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', refreshToken: guest.refreshToken }));
  });
});

describe('guest tokens', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('a guest comes back with its refresh token as the same guest, to the same conversation', async () => {
    const cell = await cleanup.cell();
    const first = guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1' }));
    expect(first.user).toMatch(/^g-[0-9a-z]{20}$/);
    const conv = `m1:${first.user}`;
    const page = await cleanup.client(cell.url, first.token);
    expect(page.frames[0]).toMatchObject({ t: 'welcome', user: first.user, role: 'customer', device: first.device });
    await sendMessage(page, conv, 'hello', 'is anyone there?');
    await page.close();

    const again = guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', refreshToken: first.refreshToken }));
    expect([again.user, again.device]).toEqual([first.user, first.device]);
    expect(again.refreshToken).not.toBe(first.refreshToken);
    const back = await cleanup.client(cell.url, again.token);
    const history = await back.request({ id: 'h', op: 'history', conv });
    expect(history).toMatchObject({ t: 'history', messages: [{ seq: 1, body: 'is anyone there?', from: first.user }] });
    // The kept token was rotated: presenting the old one again revokes the guest's tokens.
    expectRefused(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', refreshToken: first.refreshToken }), 401, 'REFRESH_INVALID');
    expectRefused(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', refreshToken: again.refreshToken }), 401, 'REFRESH_INVALID');
  });

  test('a page may name its device; another merchant does not take the refresh token, which stays good', async () => {
    const cell = await cleanup.cell();
    const guest = guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', device: 'tab-1' }));
    expect(guest.device).toBe('tab-1');
    expectRefused(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm2', refreshToken: guest.refreshToken }), 401, 'REFRESH_INVALID');
    const back = guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1', device: 'tab-2', refreshToken: guest.refreshToken }));
    expect([back.user, back.device]).toEqual([guest.user, 'tab-2']);
  });

  test('a merchant this cell does not host gets no guests', async () => {
    const cell = await cleanup.cell();
    expectRefused(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm77' }), 404, 'MERCHANT_NOT_HOSTED');
    expectRefused(await post(cell, '/v1/guest', { tenant: 'nowhere', merchant: 'm1' }), 404, 'MERCHANT_NOT_HOSTED');
  });

  test('guest tokens are rate-limited per client address, with retryAfterMs', async () => {
    const cell = await cleanup.cell({ logins: { guestsPerMinutePerAddress: 1, guestBurstPerAddress: 2 } });
    guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1' }));
    guestOf(await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm2' }));
    const limited = await post(cell, '/v1/guest', { tenant: TENANT, merchant: 'm1' });
    expectRefused(limited, 429, 'GUEST_RATE_LIMITED');
    expect((limited.body as { error: { retryAfterMs: number } }).error.retryAfterMs).toBeGreaterThan(0);
  });
});
