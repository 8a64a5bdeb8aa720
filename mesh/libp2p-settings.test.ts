import { describe, expect, it } from 'vitest';
import { fastMessageId, GOSSIPSUB_PARAMETERS } from './libp2p-settings.js';

describe('GOSSIPSUB_PARAMETERS', () => {
  it('keeps within the bounds gossipsub requires of them', () => {
    const { D, Dlo, Dhi, Dscore, Dout, mcacheGossip, mcacheLength } = GOSSIPSUB_PARAMETERS;
    expect(Dlo).toBeLessThanOrEqual(D);
    expect(D).toBeLessThanOrEqual(Dhi);
    expect(Dout).toBeLessThan(Dlo);
    expect(Dout).toBeLessThanOrEqual(D / 2);
    expect(Dscore).toBeLessThanOrEqual(D);
    expect(mcacheGossip).toBeLessThanOrEqual(mcacheLength);
  });
});

describe('fastMessageId', () => {
  it('is the publisher and sequence number, read from views into larger buffers too', () => {
    const backing = new Uint8Array([9, 1, 2, 3, 9, 0, 0, 7, 9]);
    const from = backing.subarray(1, 4);
    const seqno = backing.subarray(5, 8);
    expect(fastMessageId({ from, seqno })).toBe('010203/000007');
    expect(fastMessageId({ from, seqno: new Uint8Array([0, 0, 8]) })).not.toBe(fastMessageId({ from, seqno }));
    expect(fastMessageId({ from: new Uint8Array([1, 2]), seqno: new Uint8Array([3, 0, 0, 7]) })).not.toBe(fastMessageId({ from, seqno }));
  });

  it('gives a message without publisher or sequence number an id no signed message has', () => {
    expect(fastMessageId({})).toBe('/');
  });
});
