import { describe, expect, it } from 'vitest';
import { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
import { classifyEnd } from './connection-end.js';
import { ClientError, ClientErrorCode } from './errors.js';

describe('classifyEnd', () => {
  it('stops as replaced when another connection of the device took over', () => {
    const outcome = classifyEnd({ closeCode: CloseCode.Replaced, closeReason: 'newer' }, undefined, true);
    expect(outcome.kind).toBe('replaced');
    expect(outcome.error.code).toBe(ClientErrorCode.Replaced);
    expect(outcome.error.details).toEqual({ closeCode: CloseCode.Replaced });
  });

  it('asks for a fresh token when it expired; only a refusal before the session counts', () => {
    expect(classifyEnd({ closeCode: CloseCode.TokenExpired }, undefined, true)).toMatchObject({
      kind: 'auth',
      counts: false,
      error: { code: ErrorCode.TokenExpired },
    });
    const refused = classifyEnd({ closeCode: CloseCode.TokenExpired }, { message: 'bad token', code: ErrorCode.TokenInvalid }, false);
    expect(refused).toMatchObject({ kind: 'auth', counts: true, error: { code: ErrorCode.TokenInvalid } });
    expect(classifyEnd({ closeCode: 1006 }, { message: 'HTTP 401', httpStatus: 401 }, false)).toMatchObject({
      kind: 'auth',
      counts: true,
      error: { code: ErrorCode.Unauthenticated },
    });
  });

  it('stops on rejections that retrying cannot cure', () => {
    for (const status of [403, 426]) {
      expect(classifyEnd({ closeCode: 1006 }, { message: `HTTP ${status}`, httpStatus: status }, false).kind).toBe('fatal');
    }
    expect(classifyEnd({ closeCode: 1006 }, { message: 'elsewhere', code: ErrorCode.MerchantNotHosted }, false).kind).toBe('fatal');
    expect(classifyEnd({ closeCode: CloseCode.Forbidden }, { message: 'no such agent', code: ErrorCode.AgentUnknown }, false).kind).toBe('fatal');
    // During a session, 4403 closes an agent its merchant removed.
    expect(classifyEnd({ closeCode: CloseCode.Forbidden, closeReason: 'agent ann was removed' }, undefined, true)).toMatchObject({ kind: 'fatal', error: { code: ErrorCode.AgentUnknown } });
  });

  it('goes to the merchant\'s home after a redirect: in band (4307, during a session or before it) or refused over HTTP', () => {
    expect(classifyEnd({ closeCode: CloseCode.MerchantElsewhere, closeReason: 'MERCHANT_ELSEWHERE' }, undefined, true)).toMatchObject({
      kind: 'redirect',
      error: { code: ErrorCode.MerchantElsewhere, details: { closeCode: 4307 } },
    });
    expect(classifyEnd({ closeCode: CloseCode.MerchantElsewhere }, { message: 'lives in c2', code: ErrorCode.MerchantElsewhere }, false).kind).toBe('redirect');
    expect(classifyEnd({ closeCode: 1006 }, { message: 'lives in c2', httpStatus: 421, code: ErrorCode.MerchantElsewhere }, false).kind).toBe('redirect');
  });

  it('waits the policy delay after a policy close, a device limit or a rate limit', () => {
    expect(classifyEnd({ closeCode: CloseCode.PolicyViolation }, undefined, true)).toMatchObject({ kind: 'retry', policy: true });
    for (const status of [409, 429]) {
      expect(classifyEnd({ closeCode: 1006 }, { message: 'busy', httpStatus: status }, false)).toMatchObject({ kind: 'retry', policy: true });
    }
  });

  it('retries a lost connection, a failed attempt and the client’s own verdict after the plain backoff', () => {
    expect(classifyEnd({ closeCode: 1001, closeReason: 'draining' }, undefined, true)).toMatchObject({
      kind: 'retry',
      policy: false,
      error: { code: ClientErrorCode.ConnectionLost, details: { closeCode: 1001 } },
    });
    expect(classifyEnd({ closeCode: 1006 }, { message: 'connect ECONNREFUSED' }, false)).toMatchObject({
      kind: 'retry',
      policy: false,
      error: { code: ClientErrorCode.ConnectionFailed, message: 'connect ECONNREFUSED' },
    });
    const own = new ClientError(ClientErrorCode.HeartbeatTimeout, 'silent');
    expect(classifyEnd({ error: own }, undefined, true)).toEqual({ kind: 'retry', error: own, policy: false });
  });
});
