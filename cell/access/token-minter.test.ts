import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import { TokenMinter, newestSigningKey } from './token-minter.js';
import { signingKeysOf, verifyToken, type SigningKey } from './tokens.js';

const OLD = 'old-secret-0123456789abcdef-0123456789';
const NEW = 'new-secret-0123456789abcdef-0123456789';

describe('TokenMinter', () => {
  it('signs with the newest key of a rotation and names its kid', async () => {
    const keys = signingKeysOf({ secrets: [{ kid: '2026-06', secret: OLD }, { kid: '2026-12', secret: NEW }] });
    const clock = new ManualClock(1_700_000_000_500);
    const minter = new TokenMinter({ clock, signingKeyOf: (tenant) => (tenant === 'mall' ? newestSigningKey(keys) : undefined) });
    const { token, expiresAtMs } = await minter.mint({ tenant: 'mall', user: 'alice', role: 'agent', merchant: 'm1', device: 'desk' }, 900);
    expect(decodeProtectedHeader(token).kid).toBe('2026-12');
    expect(expiresAtMs).toBe(decodeJwt(token).exp! * 1000);
    expect(expiresAtMs).toBe(1_700_000_000_000 + 900_000);
    expect(verifyToken(token, () => keys, clock.now())).toMatchObject({ tenant: 'mall', user: 'alice', role: 'agent', merchant: 'm1', device: 'desk' });
    expect(minter.serves('mall')).toBe(true);
    expect(minter.serves('other')).toBe(false);
  });

  it('signs without kid for a tenant with a single secret', async () => {
    const keys: SigningKey[] = signingKeysOf({ secret: OLD });
    const minter = new TokenMinter({ clock: new ManualClock(), signingKeyOf: () => newestSigningKey(keys) });
    const { token } = await minter.mint({ tenant: 'mall', user: 'g-1', role: 'customer', device: 'web' }, 60);
    expect(decodeProtectedHeader(token).kid).toBeUndefined();
  });
});
