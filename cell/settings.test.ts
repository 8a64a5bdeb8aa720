import { describe, expect, it } from 'vitest';
import { signingKeysOf } from './access/tokens.js';
import { LoginsConfig, TenantConfig } from './settings.js';

const SECRET_A = 'tenant-config-test-secret-a-0123456789ab';
const SECRET_B = 'tenant-config-test-secret-b-0123456789ab';

function problemsOf(raw: unknown): string[] {
  const result = TenantConfig.safeParse(raw);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

describe('TenantConfig signing secrets', () => {
  it('takes a single secret or one or two secrets named by kid, in order', () => {
    expect(signingKeysOf(TenantConfig.parse({ id: 'mall', secret: SECRET_A }))).toEqual([{ secret: SECRET_A }]);
    const rotating = TenantConfig.parse({ id: 'mall', secrets: [{ kid: '2026-12', secret: SECRET_B }, { kid: '2026-06', secret: SECRET_A }] });
    expect(signingKeysOf(rotating)).toEqual([
      { kid: '2026-12', secret: SECRET_B },
      { kid: '2026-06', secret: SECRET_A },
    ]);
  });

  it.each([
    { name: 'both secret and secrets', raw: { id: 'mall', secret: SECRET_A, secrets: [{ kid: 'a', secret: SECRET_B }] }, problem: /exactly one of secret/ },
    { name: 'neither', raw: { id: 'mall' }, problem: /exactly one of secret/ },
    { name: 'no secrets', raw: { id: 'mall', secrets: [] }, problem: /at least one/ },
    { name: 'three secrets', raw: { id: 'mall', secrets: ['a', 'b', 'c'].map((kid) => ({ kid, secret: SECRET_A })) }, problem: /at most two/ },
    { name: 'a kid twice', raw: { id: 'mall', secrets: [{ kid: 'a', secret: SECRET_A }, { kid: 'a', secret: SECRET_B }] }, problem: /its own kid/ },
    { name: 'a short secret among them', raw: { id: 'mall', secrets: [{ kid: 'a', secret: SECRET_A }, { kid: 'b', secret: 'short' }] }, problem: /secrets\.1\.secret: must be at least 32/ },
    { name: 'a kid that is no identifier', raw: { id: 'mall', secrets: [{ kid: 'a b', secret: SECRET_A }] }, problem: /secrets\.0\.kid/ },
  ])('refuses $name', ({ raw, problem }) => {
    expect(problemsOf(raw).join('\n')).toMatch(problem);
  });
});

describe('LoginsConfig', () => {
  it('has defaults for everything: 15 min agent tokens, 30 day refresh tokens, 1 h guest tokens', () => {
    expect(LoginsConfig.parse({})).toMatchObject({ accessTokenTtlSeconds: 900, refreshTokenTtlSeconds: 30 * 24 * 3600, guestTokenTtlSeconds: 3600 });
  });

  it('refuses unknown settings and lifetimes out of bounds', () => {
    expect(LoginsConfig.safeParse({ accessTtlSeconds: 60 }).success).toBe(false);
    expect(LoginsConfig.safeParse({ accessTokenTtlSeconds: 10 }).success).toBe(false);
    expect(LoginsConfig.safeParse({ loginBurstPerAgent: 0 }).success).toBe(false);
  });
});

describe('MerchantConfig agents (seeds)', () => {
  it('takes agents with optional fields, and names what is wrong', () => {
    const tenant = (agents: unknown): unknown => ({ id: 'mall', secret: SECRET_A, merchants: [{ id: 'm1', agents }] });
    expect(TenantConfig.parse(tenant([{ id: 'ann' }, { id: 'ben', name: 'Ben', capacity: 3, groups: ['sales'], supervisor: true }])).merchants[0]?.agents).toEqual([
      { id: 'ann' },
      { id: 'ben', name: 'Ben', capacity: 3, groups: ['sales'], supervisor: true },
    ]);
    expect(problemsOf(tenant([{ id: 'ann' }, { id: 'ann' }]))).toEqual(['merchants.0.agents: agent ann is listed twice']);
    expect(problemsOf(tenant([{ id: 'ann', capacity: 0 }]))).toEqual(['merchants.0.agents.0.capacity: Too small: expected number to be >=1']);
    expect(problemsOf(tenant([{ id: 'ann', password: 'x' }]))[0]).toMatch(/^merchants\.0\.agents\.0: Unrecognized key/);
  });
});
