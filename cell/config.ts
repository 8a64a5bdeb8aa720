import { z } from 'zod';
import { IDENTIFIER_PATTERN } from './protocol/frames.js';
import { MIN_SECRET_BYTES } from './access/tokens.js';
import { isOperatorKey } from '../mesh/claim-proof.js';

const identifier = z.string().regex(IDENTIFIER_PATTERN, 'must be 1-64 characters of [A-Za-z0-9_.-]');

export const MerchantConfig = z.object({
  id: identifier,
  name: z.string().max(200).optional(),
});

const tenantSecret = z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`);

export const TenantConfig = z
  .object({
    id: identifier,
    /** HS256 secret that signs this tenant's tokens (tokens without `kid`). */
    secret: tenantSecret.optional(),
    /**
     * Instead of `secret`: one or two secrets named by `kid`, which tokens carry in their header.
     * Two during a rotation (docs/operations.md, "Rotating secrets"); tokens without `kid` are
     * checked against both.
     */
    secrets: z
      .array(z.object({ kid: identifier, secret: tenantSecret }))
      .min(1, 'needs at least one secret')
      .max(2, 'holds at most two secrets: the current one and the one being rotated in or out')
      .optional(),
    /**
     * Browser origins allowed to open WebSockets, matched exactly. Requests without an Origin
     * header (native apps, servers) are allowed; browsers always send one.
     */
    origins: z.array(z.string().url()).default([]),
    merchants: z.array(MerchantConfig).default([]),
  })
  .superRefine((tenant, context) => {
    if ((tenant.secret === undefined) === (tenant.secrets === undefined)) {
      context.addIssue({ code: 'custom', path: ['secret'], message: 'give exactly one of secret (a single secret) and secrets (secrets named by kid)' });
    }
    const kids = tenant.secrets?.map((entry) => entry.kid) ?? [];
    if (new Set(kids).size !== kids.length) {
      context.addIssue({ code: 'custom', path: ['secrets'], message: `every secret needs its own kid (${kids.join(', ')})` });
    }
  });

export const LimitsConfig = z.object({
  /** Largest frame a client may send, in bytes; larger ones get PAYLOAD_TOO_LARGE. */
  maxFrameBytes: z.number().int().min(1024).default(64 * 1024),
  /** Frames per second a connection may send on average (every op but `ack`)... */
  ratePerSecond: z.number().positive().default(50),
  /** ...and in a burst. */
  rateBurst: z.number().int().positive().default(100),
  /**
   * `ack` frames have their own budget: this many per second on average, plus one for every
   * message the cell pushes to the device (`msg` or `sent`), since a device acks at most what it
   * was given...
   */
  ackRatePerSecond: z.number().positive().default(100),
  /** ...and this many at once (at least `deliveryWindow`, so a full window can be acked one by one). */
  ackBurst: z.number().int().positive().default(1000),
  /** Connections (devices) one user may hold in this cell at once. */
  maxDevicesPerUser: z.number().int().positive().default(5),
  /** Unacknowledged messages in flight to one device before the cell waits for acks. */
  deliveryWindow: z.number().int().min(1).max(10_000).default(256),
  /** Bytes buffered for a device that does not read before it is closed (code 4008). */
  maxBackpressureBytes: z.number().int().min(64 * 1024).default(1024 * 1024),
  /** Seconds without traffic before a connection is dropped; the cell pings before that. */
  idleTimeoutSeconds: z.number().int().min(8).max(960).default(120),
  /** Messages read from the store per page when a device catches up. */
  syncPageSize: z.number().int().min(1).max(1000).default(100),
  /**
   * Delivery cursors (what each device acked) are written at most this often. A reconnect
   * always resumes from the latest ack; a crash may redeliver up to this much of what devices
   * had acked, which clients drop by seq.
   */
  cursorWriteIntervalMs: z.number().int().min(0).max(60_000).default(500),
  /**
   * Errors a connection may cause at once before it is closed (4429): each bad frame, each
   * refused entry of an `ack`, each frame over the rate limit counts one. Frames that succeed do
   * not wipe them out; the allowance grows back by `errorRecoveryPerSecond`.
   */
  maxConsecutiveErrors: z.number().int().positive().default(50),
  errorRecoveryPerSecond: z.number().positive().default(1),
});

/**
 * The cell's membership in a cluster. Absent: a standalone cell. Present: the cell runs a
 * libp2p node, joins through `bootstrap` and gossips its record (docs/mesh.md).
 */
export const MeshConfig = z.object({
  /** Where the libp2p node listens; loopback by default, like the cell's own port. */
  listen: z
    .object({
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(7500),
    })
    .default({ host: '127.0.0.1', port: 7500 }),
  /** libp2p addresses of any cells of the cluster (`/ip4/…/tcp/…/p2p/…`); empty for the first cell. */
  bootstrap: z.array(z.string().startsWith('/', 'must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>')).default([]),
  /**
   * Shared by every cell of the cluster: the libp2p private-network key derives from it, so a
   * node without it cannot even finish a connection. Keep it out of version control.
   */
  clusterSecret: z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`),
  /** The cell's libp2p key (its identity in the cluster); default `<store directory>/mesh-peer.key`. */
  keyFile: z.string().optional(),
  /**
   * URLs other cells and routers hand to devices for this cell. Default: the listen address
   * (right on one machine; pods set their own address).
   */
  advertise: z.object({ ws: z.string().url().optional(), http: z.string().url().optional() }).default({}),
  /** Devices this cell is sized for; gossiped with its load so routers can balance. */
  maxDevices: z.number().int().positive().default(100_000),
  /** Timing overrides of the failure detector and anti-entropy (docs/mesh.md lists the defaults). */
  timings: z.record(z.string(), z.number().int().positive()).default({}),
  /**
   * Operator public keys (`ed25519:<base64>`, from `cellmesh operator keygen`) whose signed
   * placements may move a merchant's home (docs/mesh.md, "Trust: who may claim a merchant").
   * Every key listed is accepted, so a key is rotated by adding the new one, then removing the old.
   */
  operatorKeys: z.array(z.string().refine(isOperatorKey, 'must be an operator public key: "ed25519:" followed by 44 base64 characters')).max(16).default([]),
});

const CellConfigShape = z.object({
  cell: z.object({ id: identifier.default('cell-1') }).default({ id: 'cell-1' }),
  listen: z
    .object({
      /** Loopback by default: exposing a cell is a deliberate choice (pods set their own address). */
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(7400),
    })
    .default({ host: '127.0.0.1', port: 7400 }),
  store: z
    .discriminatedUnion('kind', [
      z.object({
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
      z.object({ kind: z.literal('memory') }),
    ])
    .default({ kind: 'level', directory: './data/cell-1', sync: true, minFlushIntervalMs: 0 }),
  tenants: z.array(TenantConfig).min(1, 'at least one tenant is needed'),
  limits: LimitsConfig.default(LimitsConfig.parse({})),
  /** Seconds SIGTERM waits for writes and sockets before exiting anyway. */
  shutdownGraceSeconds: z.number().positive().default(10),
  mesh: MeshConfig.optional(),
  /** The admin API (`/v1/admin/...`, docs/operations.md) answers only to this bearer token; off without one. */
  admin: z.object({ token: z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`).optional() }).default({}),
  log: z.object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info') }).default({ level: 'info' }),
});

/** A cell of a cluster is named in other cells' directories, whose ids are lowercase DNS-like labels. */
const CLUSTER_CELL_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

export const CellConfig = CellConfigShape.superRefine((config, context) => {
  if (config.mesh !== undefined && !CLUSTER_CELL_ID.test(config.cell.id)) {
    context.addIssue({ code: 'custom', path: ['cell', 'id'], message: 'a cell in a mesh needs an id of lowercase letters, digits and dashes (at most 64, not starting with a dash)' });
  }
});

export type CellConfig = z.infer<typeof CellConfig>;
export type TenantConfig = z.infer<typeof TenantConfig>;
export type LimitsConfig = z.infer<typeof LimitsConfig>;
export type MeshConfig = z.infer<typeof MeshConfig>;

/** Validates a raw config object, with errors that name the offending path. */
export function parseCellConfig(raw: unknown): CellConfig {
  const result = CellConfig.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(root)'}: ${issue.message}`);
    throw new ConfigError(`invalid cell config:\n${lines.join('\n')}`);
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
