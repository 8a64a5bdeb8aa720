import { multiaddr } from '@multiformats/multiaddr';
import { z } from 'zod';
import { MIN_SECRET_BYTES } from '../cell/access/tokens.js';
import { DeskConfig, LimitsConfig, LoginsConfig, TenantConfig, identifier } from '../cell/settings.js';
import { configIssueLines } from './config-issues.js';
import type { ValueSource } from './config-paths.js';
import { isOperatorKey } from '../mesh/claim-proof.js';
import { DEFAULT_ROUTING_SETTINGS, RoutingSettings } from '../router/routing-settings.js';
import { LAN_MEMBERSHIP_OPTIONS, membershipOptions, type MembershipOptions } from '../mesh/membership-config.js';

/**
 * Every object of the config is strict: an unknown key is almost always a typo (`listen.prot`,
 * a top-level `stroe`) that would otherwise silently leave the default in force.
 */
const strict = z.strictObject;

/** An address to listen on: an empty one would make the OS pick every interface. */
export const listenHost = z.string().regex(/^\S+$/, 'must be an address such as 127.0.0.1 (0.0.0.0 for every interface), not empty');

const PORT_RANGE = 'must be an integer from 0 to 65535';
/** A port to listen on; 0 lets the OS pick a free one. */
export const listenPort = z.number({ error: PORT_RANGE }).int(PORT_RANGE).min(0, PORT_RANGE).max(65535, PORT_RANGE);

/**
 * A wildcard listen address (every interface) is no address another cell or a device can dial:
 * a record advertising it would send them to their own machine.
 */
export function isWildcardHost(host: string): boolean {
  return ['0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0'].includes(host); // real-net-ok: recognises a wildcard, to refuse or resolve it
}

function isRedisUrl(url: string): boolean {
  try {
    return ['redis:', 'rediss:'].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

/** A typo in a bootstrap address would leave the cell alone in a cluster of its own: parse it now. */
export function isMultiaddr(address: string): boolean {
  try {
    multiaddr(address);
    return true;
  } catch {
    return false;
  }
}
/**
 * The cell's membership in a cluster. Absent: a standalone cell. Present: the cell runs a
 * libp2p node, joins through `bootstrap` and gossips its record (docs/mesh.md).
 */
export const MeshConfig = strict({
  /** Where the libp2p node listens; loopback by default, like the cell's own port. */
  listen: strict({
    host: listenHost.default('127.0.0.1'),
    port: listenPort.default(7500),
  }).default({ host: '127.0.0.1', port: 7500 }),
  /** libp2p addresses of any cells of the cluster (`/ip4/…/tcp/…/p2p/…`); empty for the first cell. */
  bootstrap: z.array(z.string().refine(isMultiaddr, 'must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>')).default([]),
  /**
   * Shared by every cell of the cluster: the libp2p private-network key derives from it, so a
   * node without it cannot even finish a connection. Keep it out of version control.
   */
  clusterSecret: z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`),
  /**
   * Further cluster secrets accepted from dialling cells, never used to dial: the other secret
   * while the cluster secret is rotated cell by cell (docs/operations.md, "Rotating secrets").
   */
  acceptClusterSecrets: z
    .array(z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`))
    .max(4, 'a rotation needs one more secret; at most 4 are accepted')
    .optional(),
  /**
   * Inbound libp2p connections that have not proven the cluster secret yet (docs/mesh.md,
   * "Admission"): how long one may take to prove it (default 3000 ms) and how many may wait at
   * once before the newest evicts the oldest (default 16).
   */
  admission: strict({
      handshakeTimeoutMs: z.number().int().min(100).max(60_000).optional(),
      maxUnauthenticatedInbound: z.number().int().min(1).max(1024).optional(),
    }).default({}),
  /** The cell's libp2p key (its identity in the cluster); default `<store directory>/mesh-peer.key`. */
  keyFile: z.string().optional(),
  /**
   * URLs other cells and routers hand to devices for this cell. Default: the listen address
   * (right on one machine; pods set their own address).
   */
  advertise: strict({ ws: z.string().url().optional(), http: z.string().url().optional() }).default({}),
  /** Devices this cell is sized for; gossiped with its load so routers can balance. */
  maxDevices: z.number().int().positive().default(100_000),
  /** Timing overrides of the failure detector and anti-entropy (docs/mesh.md lists the defaults). */
  timings: strict(
    Object.fromEntries(Object.keys(LAN_MEMBERSHIP_OPTIONS).map((name) => [name, z.number().nonnegative().optional()])) as Record<keyof MembershipOptions, z.ZodOptional<z.ZodNumber>>,
  ).default({}),
  /**
   * Operator public keys (`ed25519:<base64>`, from `cellmesh operator keygen`) whose signed
   * placements may move a merchant's home (docs/mesh.md, "Trust: who may claim a merchant").
   * Every key listed is accepted, so a key is rotated by adding the new one, then removing the old.
   */
  operatorKeys: z.array(z.string().refine(isOperatorKey, 'must be an operator public key: "ed25519:" followed by 44 base64 characters')).max(16).default([]),
});

/**
 * A cell of several processes sharing one Redis (docs/operations.md, "A cell of several
 * processes"): only read when the store is redis. Each process of the cell has the same config
 * but its own `id`.
 */
export const ProcessesConfig = strict({
  /** This process's id among the cell's processes, unique among them; default the host name (a pod's name). */
  id: identifier.optional(),
  /** How long a process's lease lives without renewal: a dead process's merchants move after at most this. */
  leaseTtlMs: z.number().int().min(300).max(60_000).default(3000),
  /** How often the lease is renewed and the merchants' owners looked at; at most a third of the TTL. */
  renewIntervalMs: z.number().int().min(50).max(20_000).default(1000),
  /** The URLs siblings relay devices to (`ws://host:port/v1/ws`, `http://host:port`); default the listen address. */
  advertise: strict({ ws: z.string().url().optional(), http: z.string().url().optional() }).default({}),
});

const CellConfigShape = strict({
  cell: strict({ id: identifier.default('cell-1') }).default({ id: 'cell-1' }),
  listen: strict({
    /** Loopback by default: exposing a cell is a deliberate choice (pods set their own address). */
    host: listenHost.default('127.0.0.1'),
    port: listenPort.default(7400),
  }).default({ host: '127.0.0.1', port: 7400 }),
  store: z
    .discriminatedUnion('kind', [
      strict({
        kind: z.literal('level'),
        directory: z.string().default('./data/cell-1'),
        /** fsync every group-committed batch; turning it off survives kill -9 but not power loss. */
        sync: z.boolean().default(true),
        /**
         * Least time between the starts of two fsynced batches. 0 flushes back to back; 1-2 ms
         * saves CPU under steady moderate load for that much more ack latency.
         */
        minFlushIntervalMs: z.number().min(0).max(100).default(0),
      }),
      strict({ kind: z.literal('memory') }),
      strict({
        kind: z.literal('redis'),
        /** docs/operations.md, "Storing a cell in Redis". */
        redis: strict({
          /** `redis://[user:password@]host:port[/db]` (`rediss://` for TLS). */
          url: z.string().refine(isRedisUrl, 'must be a Redis URL such as redis://127.0.0.1:6379/0'),
          /** Prepended to the cell's Redis keys, so cells can share a Redis; default `cellmesh:<cell id>:`. */
          keyPrefix: z.string().min(1).max(200).optional(),
          /**
           * Start even when the Redis cannot keep the durable ack (appendfsync everysec, no AOF,
           * CONFIG disabled): acknowledged messages may then be lost in a crash of Redis.
           */
          acceptWeakDurability: z.boolean().default(false),
          /** Replicas each write reaches (WAIT) before it is acknowledged. */
          waitReplicas: z.number().int().min(0).max(16).default(0),
          /** How long a write waits for those replicas before it fails. */
          waitTimeoutMs: z.number().int().min(1).max(60_000).default(1_000),
        }),
      }),
    ])
    .default({ kind: 'level', directory: './data/cell-1', sync: true, minFlushIntervalMs: 0 }),
  tenants: z.array(TenantConfig).min(1, 'at least one tenant is needed'),
  limits: LimitsConfig.default(LimitsConfig.parse({})),
  /** The service desk of merchants with registered agents (docs/desk.md, "Settings"). */
  desk: DeskConfig.default(DeskConfig.parse({})),
  /** Agent logins and guest tokens: lifetimes and rate limits. */
  logins: LoginsConfig.default(LoginsConfig.parse({})),
  /** Seconds SIGTERM waits for writes and sockets before exiting anyway. */
  shutdownGraceSeconds: z.number().positive().default(10),
  /** The liveness probe (`/v1/healthz`): it fails once the event loop was blocked longer than this. */
  health: strict({ maxEventLoopStallMs: z.number().int().min(50).max(600_000).default(5_000) }).default({ maxEventLoopStallMs: 5_000 }),
  mesh: MeshConfig.optional(),
  /** The processes of a cell on the redis store (ignored on the others). */
  processes: ProcessesConfig.default({ leaseTtlMs: 3000, renewIntervalMs: 1000, advertise: {} }),
  /** Route requests and browser redirects (`/v1/route`, `/v1/connect`): rate limits, trusted proxies (docs/routing.md). */
  routing: RoutingSettings.default(DEFAULT_ROUTING_SETTINGS),
  admin: strict({
    /** The admin API (`/v1/admin/...`, docs/operations.md) answers only to this bearer token; off without one. */
    token: z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`).optional(),
    /** Further tokens the admin API answers to while the token is rotated (docs/operations.md, "Rotating secrets"). */
    acceptTokens: z.array(z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`)).max(4, 'a rotation needs one more token, not a list').default([]),
  }).default({ acceptTokens: [] }),
  log: strict({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info') }).default({ level: 'info' }),
});

/** A cell of a cluster is named in other cells' directories, whose ids are lowercase DNS-like labels. */
const CLUSTER_CELL_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

export const CellConfig = CellConfigShape.superRefine((config, context) => {
  if (config.admin.acceptTokens.length > 0 && config.admin.token === undefined) {
    context.addIssue({ code: 'custom', path: ['admin', 'acceptTokens'], message: 'tokens accepted during a rotation need admin.token, the one the API is meant to answer to' });
  }
  if (config.processes.renewIntervalMs * 3 > config.processes.leaseTtlMs) {
    context.addIssue({ code: 'custom', path: ['processes', 'renewIntervalMs'], message: `must be at most a third of processes.leaseTtlMs (${config.processes.leaseTtlMs}), so that a late renewal or two does not cost the lease` });
  }
  if (config.mesh === undefined) return;
  if (!CLUSTER_CELL_ID.test(config.cell.id)) {
    context.addIssue({ code: 'custom', path: ['cell', 'id'], message: 'a cell in a mesh needs an id of lowercase letters, digits and dashes (at most 64, not starting with a dash)' });
  }
  if (isWildcardHost(config.listen.host)) {
    for (const scheme of ['ws', 'http'] as const) {
      if (config.mesh.advertise[scheme] !== undefined) continue;
      context.addIssue({ code: 'custom', path: ['mesh', 'advertise', scheme], message: `listen.host ${config.listen.host} is every interface, not an address other cells and devices can reach: set the URL they use (the pod's address or DNS name)` });
    }
  }
  if (config.store.kind === 'memory') {
    // The outbox, the merchant claims and the mesh key must survive a restart, or the cluster
    // loses cross-cell messages and sees the cell come back as a stranger.
    context.addIssue({ code: 'custom', path: ['store', 'kind'], message: 'a cell in a mesh needs a durable store, level or redis (memory keeps no outbox or mesh key across a restart)' });
  }
  if (config.store.kind === 'redis' && config.mesh.keyFile === undefined) {
    context.addIssue({ code: 'custom', path: ['mesh', 'keyFile'], message: "a cell in a mesh on the redis store needs mesh.keyFile: the key is the cell's identity in the cluster and the store has no directory to keep it in" });
  }
  // Any process of a cell on Redis may speak for it in the mesh: its record names the balancer in front of them all.
  if (config.store.kind === 'redis' && (config.mesh.advertise.ws === undefined || config.mesh.advertise.http === undefined)) {
    context.addIssue({ code: 'custom', path: ['mesh', 'advertise'], message: "a cell in a mesh on the redis store needs mesh.advertise.ws and .http: the address of the balancer in front of its processes, which the cell's record names whichever process speaks for it" });
  }
  try {
    membershipOptions(meshTimings(config.mesh));
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    context.addIssue({ code: 'custom', path: ['mesh', 'timings'], message: error.message });
  }
});

export type CellConfig = z.infer<typeof CellConfig>;
export type MeshConfig = z.infer<typeof MeshConfig>;
export type ProcessesConfig = z.infer<typeof ProcessesConfig>;

/** Validates a raw config object, with errors that name the offending path (and the flag or variable that set it). */
export function parseCellConfig(raw: unknown, sourceOf?: ValueSource): CellConfig {
  const result = CellConfig.safeParse(raw);
  if (!result.success) {
    const lines = configIssueLines(CellConfig, raw, result.error.issues, sourceOf);
    throw new ConfigError(lines.length === 1 ? `invalid cell config: ${lines[0]}` : `invalid cell config:\n${lines.map((line) => `  ${line}`).join('\n')}`);
  }
  return result.data;
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';

  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The prefix of a Redis cell's keys: `store.redis.keyPrefix`, by default `cellmesh:<cell id>:`. */
export function redisKeyPrefixOf(config: Pick<CellConfig, 'cell'>, redis: { keyPrefix?: string | undefined }): string {
  return redis.keyPrefix ?? `cellmesh:${config.cell.id}:`;
}

/** The mesh timing overrides the config sets (those it leaves out keep the preset's values). */
export function meshTimings(mesh: Pick<MeshConfig, 'timings'>): Partial<MembershipOptions> {
  return Object.fromEntries(Object.entries(mesh.timings).filter((entry): entry is [string, number] => entry[1] !== undefined));
}
