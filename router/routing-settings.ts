import { isIP } from 'node:net';
import { z } from 'zod';

/** An IP address, or a CIDR block (`10.0.0.0/8`, `fd00::/8`). */
function isAddressOrBlock(text: string): boolean {
  const [address = '', prefix, ...rest] = text.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * How a cell or a router answers `GET /v1/route` and `GET /v1/connect` (docs/routing.md): the
 * budget of each client address, the proxies whose `X-Forwarded-For` is believed, and where the
 * redirect sends a browser on the home cell. The `routing` section of both configs.
 */
export const RoutingSettings = z.strictObject({
  /** Route and connect requests a client address may make per second on average... */
  requestsPerSecondPerAddress: z.number().positive().max(1_000_000).default(100),
  /** ...and at once. */
  burstPerAddress: z.number().int().min(1).max(1_000_000).default(200),
  /** Client addresses the limiter remembers at most (idle ones are forgotten first). */
  maxTrackedClients: z.number().int().min(1).max(10_000_000).default(100_000),
  /**
   * Load balancers in front of this server (addresses or CIDR blocks). Only a request whose TCP
   * peer is one of them has its client address taken from `X-Forwarded-For` (the nearest address
   * that is not a trusted proxy); empty (the default), the header is ignored, since anyone can
   * send it.
   */
  trustedProxies: z.array(z.string().refine(isAddressOrBlock, 'must be an IP address or a CIDR block such as 10.0.0.0/8')).max(64).default([]),
  /** The path on the home cell's `http` endpoint that `/v1/connect` redirects a browser to. */
  connectPath: z.string().regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/, 'must be a path such as /app/ (no query, no fragment)').max(256).default('/app/'),
});

export type RoutingSettings = z.infer<typeof RoutingSettings>;

export const DEFAULT_ROUTING_SETTINGS: RoutingSettings = RoutingSettings.parse({});
