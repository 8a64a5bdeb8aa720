import { z } from 'zod';
import { CELL_ID_PATTERN } from '../mesh/cell-record.js';
import { membershipOptions } from '../mesh/membership-config.js';
import { DEFAULT_ROUTING_SETTINGS, RoutingSettings } from '../router/routing-settings.js';
import { ConfigError, MeshConfig, isMultiaddr, isWildcardHost, listenHost, listenPort, meshTimings } from './config.js';
import { configIssueLines } from './config-issues.js';
import type { ValueSource } from './config-paths.js';

const strict = z.strictObject;

/**
 * A router's mesh section: a cell's, less what only a host of merchants has (its device
 * capacity, its WebSocket URL), and with at least one bootstrap address: a router observes a
 * cluster of cells, it never starts one.
 */
const RouterMeshConfig = MeshConfig.omit({ maxDevices: true, advertise: true, bootstrap: true }).extend({
  /** libp2p addresses of cells to join through: at least one (checked with the whole config, so an absent list gets the same words). */
  bootstrap: z.array(z.string().refine(isMultiaddr, 'must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>')).default([]),
  /**
   * The router's libp2p key. Absent: a new key at every start (a router keeps no data; after a
   * crash the cluster accepts the new identity once the old one is declared dead).
   */
  keyFile: z.string().optional(),
  /** The URL the router is reached at, as its record says (default: the listen address). */
  advertise: strict({ http: z.string().url().optional() }).default({}),
});

export const RouterConfig = strict({
  /** The router's id in the cluster: like a cell id, unique among cells and routers. */
  router: strict({ id: z.string().regex(CELL_ID_PATTERN, 'must be lowercase letters, digits and dashes (at most 64, not starting with a dash)').default('router-1') }).default({ id: 'router-1' }),
  /** Where route requests and redirects are served; loopback unless set (a load balancer's target sets its own address). */
  listen: strict({
    host: listenHost.default('127.0.0.1'),
    port: listenPort.default(7600),
  }).default({ host: '127.0.0.1', port: 7600 }),
  mesh: RouterMeshConfig,
  /** Rate limits per client address, trusted proxies, the redirect's path (docs/routing.md). */
  routing: RoutingSettings.default(DEFAULT_ROUTING_SETTINGS),
  /** Seconds SIGTERM waits for the router to leave the cluster before exiting anyway. */
  shutdownGraceSeconds: z.number().positive().default(10),
  log: strict({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info') }).default({ level: 'info' }),
}).superRefine((config, context) => {
  if (config.mesh.bootstrap.length === 0) {
    context.addIssue({ code: 'custom', path: ['mesh', 'bootstrap'], message: 'a router joins a running cluster: name at least one cell (its libp2p address is in its `cell listening` log line and GET /v1/admin/cluster)' });
  }
  if (isWildcardHost(config.listen.host) && config.mesh.advertise.http === undefined) {
    context.addIssue({ code: 'custom', path: ['mesh', 'advertise', 'http'], message: `listen.host ${config.listen.host} is every interface, not an address the cells can hand out: set the URL the router is reached at (the pod's address or DNS name)` });
  }
  try {
    membershipOptions(meshTimings(config.mesh));
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    context.addIssue({ code: 'custom', path: ['mesh', 'timings'], message: error.message });
  }
});

export type RouterConfig = z.infer<typeof RouterConfig>;
export type RouterMeshConfig = RouterConfig['mesh'];

/** Validates a raw router config, with errors that name the offending path (as a cell's config does). */
export function parseRouterConfig(raw: unknown, sourceOf?: ValueSource): RouterConfig {
  const result = RouterConfig.safeParse(raw);
  if (!result.success) {
    const lines = configIssueLines(RouterConfig, raw, result.error.issues, sourceOf);
    throw new ConfigError(lines.length === 1 ? `invalid router config: ${lines[0]}` : `invalid router config:\n${lines.map((line) => `  ${line}`).join('\n')}`);
  }
  return result.data;
}
