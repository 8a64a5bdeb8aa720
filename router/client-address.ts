import { BlockList, isIP } from 'node:net';

/**
 * The address a rate limit counts a request against. The TCP peer, unless that peer is a
 * trusted proxy (a load balancer in front of the router): then the nearest address of
 * `X-Forwarded-For` that is not itself a trusted proxy, read from the right, since each proxy
 * appends the address it received from and only the ones we trust add honest entries.
 */
export class ClientAddresses {
  private readonly trusted = new BlockList();
  private readonly anyTrusted: boolean;

  /** `trustedProxies`: addresses and CIDR blocks, as RoutingSettings validated them. */
  constructor(trustedProxies: readonly string[]) {
    for (const entry of trustedProxies) {
      const [address = '', prefix] = entry.split('/');
      const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.trusted.addAddress(address, type);
      else this.trusted.addSubnet(address, Number(prefix), type);
    }
    this.anyTrusted = trustedProxies.length > 0;
  }

  /** The client of a request from TCP peer `remoteAddress` that carried `forwardedFor` ('' when absent). */
  clientOf(remoteAddress: string, forwardedFor: string): string {
    const peer = plainAddress(remoteAddress);
    if (!this.anyTrusted || forwardedFor === '' || !this.isTrusted(peer)) return peer;
    const hops = forwardedFor.split(',');
    for (let index = hops.length - 1; index >= 0; index--) {
      const hop = plainAddress((hops[index] as string).trim());
      // A malformed entry ends what can be believed: count the request against the last proxy.
      if (isIP(hop) === 0) return peer;
      if (!this.isTrusted(hop)) return hop;
    }
    return peer;
  }

  private isTrusted(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.trusted.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/** An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`) as IPv4, so both forms count as one client. */
function plainAddress(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}
