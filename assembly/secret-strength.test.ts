import { describe, expect, it } from 'vitest';
import { parseCellConfig } from './config.js';
import { secretSettingsOf, weakSecretProblems } from './secret-strength.js';

const STRONG = 'kR7-vQ2xLm9pW4zT8bN1cF6hJ3dS5gY0aE';
const PUBLISHED = ['cellmesh-demo-secret-do-not-use-in-production'];

describe('weakSecretProblems', () => {
  it('names each guessable secret by its setting, and passes strong ones', () => {
    const problems = weakSecretProblems(
      [
        { path: 'tenants[0].secret', value: STRONG },
        { path: 'tenants[1].secret', value: PUBLISHED[0]! },
        { path: 'mesh.clusterSecret', value: 'x'.repeat(32) },
        { path: 'admin.token', value: 'abcdefgh'.repeat(4) },
      ],
      PUBLISHED,
    );
    expect(problems).toEqual([
      'tenants[1].secret is a published demo value: anyone can use it',
      'mesh.clusterSecret has fewer than 8 different characters',
      'admin.token repeats a shorter string',
    ]);
  });

  it('passes random hex and base64 secrets and the tests\' own', () => {
    for (const value of ['9f86d081884c7d659a2feaa0c55ad015', 'test-secret-0123456789abcdef-0123456789', 'n0Vq3yWJb8kQxZ2cR5tLm1pA7sD4fG6h']) {
      expect(weakSecretProblems([{ path: 'admin.token', value }], PUBLISHED)).toEqual([]);
    }
  });
});

describe('secretSettingsOf', () => {
  it('lists every tenant secret, the cluster secret and the admin tokens by path', () => {
    const config = parseCellConfig({
      cell: { id: 'cell-a' },
      store: { kind: 'level', directory: '/tmp/x' },
      tenants: [{ id: 'mall', secret: STRONG }, { id: 'market', secrets: [{ kid: 'k1', secret: `${STRONG}-2` }, { kid: 'k2', secret: `${STRONG}-3` }] }],
      mesh: { clusterSecret: `${STRONG}-c` },
      admin: { token: `${STRONG}-a`, acceptTokens: [`${STRONG}-b`] },
    });
    expect(secretSettingsOf(config).map(({ path }) => path)).toEqual([
      'tenants[0].secret',
      'tenants[1].secrets[0].secret',
      'tenants[1].secrets[1].secret',
      'mesh.clusterSecret',
      'admin.token',
      'admin.acceptTokens[0]',
    ]);
  });
});
