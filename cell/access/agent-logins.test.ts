import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemClock } from '../../platform/clock.js';
import { MemoryStore } from '../../platform/store/memory-store.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { AgentLogins } from './agent-logins.js';
import { hashPassword } from './passwords.js';
import { RefreshTokens } from './refresh-tokens.js';
import { TokenMinter } from './token-minter.js';

const SECRET = 'test-secret-0123456789abcdef-0123456789';
const PASSWORD = 'correct horse battery staple';

describe('AgentLogins', () => {
  const store = new MemoryStore();
  let logins: AgentLogins;

  beforeAll(async () => {
    await store.open();
    const clock = new SystemClock();
    const hashes = new Map([['mall/m1/alice', await hashPassword(PASSWORD)]]);
    logins = new AgentLogins({
      agents: { passwordHashOf: (tenant, merchant, agent) => hashes.get(`${tenant}/${merchant}/${agent}`) },
      minter: new TokenMinter({ clock, signingKeyOf: (tenant) => (tenant === 'mall' ? { secret: SECRET } : undefined) }),
      refreshTokens: new RefreshTokens({ store, clock, ttlMs: 3600_000 }),
      hostsMerchant: (tenant, merchant) => tenant === 'mall' && merchant === 'm1',
      refuseMerchant: (_tenant, _merchant, message) => new CellError(ErrorCode.MerchantNotHosted, message),
      accessTokenTtlSeconds: 900,
    });
  });
  afterAll(() => store.close());

  /** How long a refused login took, and what it said. */
  const refusal = async (agent: string, password: string): Promise<{ ms: number; said: string }> => {
    const startedAtMs = performance.now();
    const error = await logins.login({ tenant: 'mall', merchant: 'm1', agent, password, device: 'd' }).catch((caught: unknown) => caught);
    if (!(error instanceof CellError)) throw new Error(`expected a refusal, got ${String(error)}`);
    return { ms: performance.now() - startedAtMs, said: `${error.code} ${error.message}` };
  };

  it('costs an unknown agent what a wrong password costs, and says the same', async () => {
    await refusal('warm-up', PASSWORD);
    const wrong: number[] = [];
    const unknown: number[] = [];
    for (let round = 0; round < 3; round++) {
      const byPassword = await refusal('alice', 'wrong password');
      const byName = await refusal('mallory', PASSWORD);
      expect(byName.said).toBe(byPassword.said);
      wrong.push(byPassword.ms);
      unknown.push(byName.ms);
    }
    const median = (values: number[]): number => values.sort((left, right) => left - right)[1]!;
    // Without the check against a dummy hash an unknown agent would answer in well under 1/20 of the time.
    expect(median(unknown)).toBeGreaterThan(median(wrong) / 5);
  });
});
