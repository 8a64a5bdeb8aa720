import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import { MemoryStore } from '../../platform/store/memory-store.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { RefreshTokens, scopeOfRefreshToken, type RefreshSubject } from './refresh-tokens.js';

const DAY_MS = 24 * 3600 * 1000;
const agent: RefreshSubject = { kind: 'agent', tenant: 'mall', merchant: 'm1', user: 'a1', device: 'desk', credential: 'c1' };
const keep = (subject: RefreshSubject): RefreshSubject => subject;

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof CellError) return error.code;
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('RefreshTokens', () => {
  let store: MemoryStore;
  let clock: ManualClock;
  let tokens: RefreshTokens;

  beforeEach(async () => {
    store = new MemoryStore();
    await store.open();
    clock = new ManualClock();
    tokens = new RefreshTokens({ store, clock, ttlMs: 30 * DAY_MS });
  });
  afterEach(() => store.close());

  const storedKeys = async (): Promise<string[]> => (await store.range({ gte: 'k/', lt: 'k/\x7f', limit: 1000 })).map(([key]) => key);

  it('stores only hashes, in the merchant desk range, and names the scope in the token', async () => {
    const { refreshToken, refreshExpiresAtMs } = await tokens.issue(agent);
    expect(refreshExpiresAtMs).toBe(clock.now() + 30 * DAY_MS);
    expect(scopeOfRefreshToken(refreshToken)).toEqual({ tenant: 'mall', merchant: 'm1' });
    const secret = refreshToken.split(':')[2]!;
    expect(Buffer.from(secret, 'base64url')).toHaveLength(32);
    const entries = await store.range({ gte: 'k/', lt: 'k/\x7f', limit: 1000 });
    expect(entries.map(([key]) => key.split('/').slice(0, 4).join('/')).sort()).toEqual(['k/mall/m1/refresh', 'k/mall/m1/session']);
    expect(JSON.stringify(entries)).not.toContain(secret);
  });

  it('rotates: the new token works, the old one is reuse and revokes the family', async () => {
    const first = await tokens.issue(agent);
    const second = await tokens.rotate(first.refreshToken, 'agent', keep);
    expect(second.subject).toEqual(agent);
    expect(second.refreshToken).not.toBe(first.refreshToken);
    const third = await tokens.rotate(second.refreshToken, 'agent', keep);
    expect(await codeOf(tokens.rotate(first.refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
    expect(await codeOf(tokens.rotate(third.refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
  });

  it('serializes a family: of two refreshes with one token, one rotates and the other revokes', async () => {
    const { refreshToken } = await tokens.issue(agent);
    const outcomes = await Promise.allSettled([tokens.rotate(refreshToken, 'agent', keep), tokens.rotate(refreshToken, 'agent', keep)]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['fulfilled', 'rejected']);
    const rotated = outcomes[0] as PromiseFulfilledResult<{ refreshToken: string }>;
    expect(await codeOf(tokens.rotate(rotated.value.refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
  });

  it('refuses a token of the other kind without touching it', async () => {
    const { refreshToken } = await tokens.issue(agent);
    expect(await codeOf(tokens.rotate(refreshToken, 'guest', keep))).toBe(ErrorCode.RefreshInvalid);
    await tokens.rotate(refreshToken, 'agent', keep);
  });

  it('revokes the family when renew refuses with REFRESH_INVALID, and only then', async () => {
    const { refreshToken } = await tokens.issue(agent);
    const notHosted = (): RefreshSubject => {
      throw new CellError(ErrorCode.MerchantNotHosted, 'moved');
    };
    expect(await codeOf(tokens.rotate(refreshToken, 'agent', notHosted))).toBe(ErrorCode.MerchantNotHosted);
    const removed = (): RefreshSubject => {
      throw new CellError(ErrorCode.RefreshInvalid, 'removed');
    };
    expect(await codeOf(tokens.rotate(refreshToken, 'agent', removed))).toBe(ErrorCode.RefreshInvalid);
    expect(await codeOf(tokens.rotate(refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
    expect(await storedKeys()).toEqual([]);
  });

  it('keeps what renew changed (a guest on another device)', async () => {
    const guest: RefreshSubject = { kind: 'guest', tenant: 'mall', merchant: 'm1', user: 'g-1', device: 'web-1' };
    const { refreshToken } = await tokens.issue(guest);
    const moved = await tokens.rotate(refreshToken, 'guest', (subject) => ({ ...subject, device: 'tab-2' }));
    const again = await tokens.rotate(moved.refreshToken, 'guest', keep);
    expect(again.subject).toEqual({ ...guest, device: 'tab-2', credential: undefined });
  });

  it('refuses malformed and unknown tokens', async () => {
    for (const token of ['', 'garbage', 'mall:m1:short', 'mall:m1:x:y', `mall:m1:${'A'.repeat(43)}`, `bad tenant:m1:${'A'.repeat(43)}`]) {
      expect(await codeOf(tokens.rotate(token, 'agent', keep)), token).toBe(ErrorCode.RefreshInvalid);
    }
  });

  it('logout revokes the family from any of its tokens; unknown tokens are ignored', async () => {
    const first = await tokens.issue(agent);
    const second = await tokens.rotate(first.refreshToken, 'agent', keep);
    await tokens.revoke(first.refreshToken);
    expect(await codeOf(tokens.rotate(second.refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
    await tokens.revoke('garbage');
    await tokens.revoke(second.refreshToken);
  });

  it('refuses an expired token and deletes it; issuing sweeps expired records away', async () => {
    const expired = await tokens.issue(agent);
    for (let index = 0; index < 20; index++) await tokens.issue({ ...agent, user: `a${index}` });
    clock.advance(30 * DAY_MS);
    expect(await codeOf(tokens.rotate(expired.refreshToken, 'agent', keep))).toBe(ErrorCode.RefreshInvalid);
    expect((await storedKeys()).length).toBe(2 * 21 - 1);
    // Each token issued looks at the next 8 records of each table: 4 issues pass over all 26.
    for (let index = 0; index < 4; index++) await tokens.issue({ ...agent, user: `b${index}` });
    expect((await storedKeys()).length).toBe(2 * 4);
  });
});
