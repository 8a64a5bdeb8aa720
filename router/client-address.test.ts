import { describe, expect, it } from 'vitest';
import { ClientAddresses } from './client-address.js';

describe('ClientAddresses', () => {
  it('counts the TCP peer and ignores X-Forwarded-For without trusted proxies', () => {
    const addresses = new ClientAddresses([]);
    expect(addresses.clientOf('203.0.113.9', '10.0.0.1')).toBe('203.0.113.9');
    expect(addresses.clientOf('::ffff:203.0.113.9', '')).toBe('203.0.113.9');
  });

  it('believes X-Forwarded-For only from a trusted proxy, taking the nearest untrusted hop', () => {
    const addresses = new ClientAddresses(['10.0.0.0/8', '192.0.2.1']);
    // A client cannot choose its address by sending the header itself: the balancer appends the real one.
    expect(addresses.clientOf('10.1.2.3', '6.6.6.6, 198.51.100.4')).toBe('198.51.100.4');
    expect(addresses.clientOf('10.1.2.3', '198.51.100.4, 192.0.2.1')).toBe('198.51.100.4');
    expect(addresses.clientOf('203.0.113.9', '198.51.100.4')).toBe('203.0.113.9');
    // Only trusted hops, or a malformed one: counted against the proxy.
    expect(addresses.clientOf('10.1.2.3', '10.9.9.9')).toBe('10.1.2.3');
    expect(addresses.clientOf('10.1.2.3', 'not-an-address')).toBe('10.1.2.3');
    expect(addresses.clientOf('10.1.2.3', '')).toBe('10.1.2.3');
  });

  it('handles IPv6 proxies and clients', () => {
    const addresses = new ClientAddresses(['fd00::/8']);
    expect(addresses.clientOf('fd00::1', '2001:db8::7')).toBe('2001:db8::7');
    expect(addresses.clientOf('2001:db8::1', '2001:db8::7')).toBe('2001:db8::1');
  });
});
