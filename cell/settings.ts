import { z } from 'zod';
import { MIN_SECRET_BYTES } from './access/tokens.js';
import { IDENTIFIER_PATTERN } from './protocol/frames.js';

/**
 * What the core is configured with: its tenants (and their merchants) and its limits. The
 * process's whole config (listen address, store, mesh) is assembly/config.ts, which embeds these.
 *
 * Every object is strict: an unknown key is almost always a typo that would otherwise silently
 * leave the default in force.
 */
const strict = z.strictObject;

export const identifier = z.string().regex(IDENTIFIER_PATTERN, 'must be 1-64 characters of [A-Za-z0-9_.-]');

/** The bounds of an agent's record (cell/desk/people.ts validates against them too). */
export const AGENT_LIMITS = { nameChars: 200, capacity: 1000, groups: 50 } as const;

/**
 * An agent the config seeds: created at start when the merchant has never had it. From then on
 * the store wins (docs/operations.md): changes and removals through the admin API persist.
 */
export const AgentSeedConfig = strict({
  id: identifier,
  name: z.string().min(1).max(AGENT_LIMITS.nameChars).optional(),
  capacity: z.number().int().min(1).max(AGENT_LIMITS.capacity).optional(),
  groups: z.array(identifier).min(1).max(AGENT_LIMITS.groups).optional(),
  supervisor: z.boolean().optional(),
});

export const MerchantConfig = strict({
  id: identifier,
  name: z.string().max(200).optional(),
  agents: z
    .array(AgentSeedConfig)
    .max(10_000)
    .optional()
    .superRefine((agents, context) => {
      const ids = (agents ?? []).map((agent) => agent.id);
      const repeated = ids.find((id, index) => ids.indexOf(id) !== index);
      if (repeated !== undefined) context.addIssue({ code: 'custom', message: `agent ${repeated} is listed twice` });
    }),
});

/** What a tenant's customers and agents may upload (cell/attachments, docs/operations.md). */
export const DEFAULT_ATTACHMENT_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'application/pdf', 'text/plain'] as const;
export const AttachmentsConfig = strict({
  /** Largest upload, in bytes. */
  maxBytes: z.number().int().min(1).max(100 * 1024 * 1024).default(10 * 1024 * 1024),
  /** Media types accepted, as sniffed from the bytes (never the declared Content-Type). */
  types: z
    .array(z.string().regex(/^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/, 'must be a media type like image/png'))
    .max(100)
    .default([...DEFAULT_ATTACHMENT_TYPES]),
});

/** How long a tenant keeps what its conversations hold (cell/attachments/attachment-sweeper.ts). */
export const RetentionConfig = strict({
  /** Days an attachment stays in a conversation after its upload; absent: kept for good. */
  attachmentsDays: z.number().int().min(1).max(36_500).optional(),
});

const tenantSecret = z.string().min(MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} characters`);

export const TenantConfig = strict({
  id: identifier,
  /** HS256 secret that signs this tenant's tokens (tokens without `kid`). */
  secret: tenantSecret.optional(),
  /**
   * Instead of `secret`: one or two secrets named by `kid`, which tokens carry in their header.
   * Two during a rotation (docs/operations.md, "Rotating secrets"); tokens without `kid` are
   * checked against both.
   */
  secrets: z
    .array(strict({ kid: identifier, secret: tenantSecret }))
    .min(1, 'needs at least one secret')
    .max(2, 'holds at most two secrets: the current one and the one being rotated in or out')
    .optional(),
  /**
   * Browser origins allowed to open WebSockets, matched exactly. Requests without an Origin
   * header (native apps, servers) are allowed; browsers always send one.
   */
  origins: z.array(z.string().url()).default([]),
  merchants: z.array(MerchantConfig).default([]),
  /** Absent: the defaults of AttachmentsConfig (attachmentsConfigOf). */
  attachments: AttachmentsConfig.optional(),
  /** Absent: everything is kept. */
  retention: RetentionConfig.optional(),
}).superRefine((tenant, context) => {
  if ((tenant.secret === undefined) === (tenant.secrets === undefined)) {
    context.addIssue({ code: 'custom', path: ['secret'], message: 'give exactly one of secret (a single secret) and secrets (secrets named by kid)' });
  }
  const kids = tenant.secrets?.map((entry) => entry.kid) ?? [];
  if (new Set(kids).size !== kids.length) {
    context.addIssue({ code: 'custom', path: ['secrets'], message: `every secret needs its own kid (${kids.join(', ')})` });
  }
});

export const LimitsConfig = strict({
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

/** The service desk of every merchant with registered agents (docs/desk.md, "Settings"). */
export const DeskConfig = strict({
  /** A returning customer goes back to the agent of its last consultation within this window, if that agent is free. */
  stickyWindowMs: z.number().int().min(0).default(24 * 3_600_000),
  /** Handling time assumed for a group before any consultation of it closed, for estimated waits. */
  initialHandlingMs: z.number().int().min(1).default(5 * 60_000),
  /** An agent whose devices all left keeps its consultations this long, then they are reassigned. */
  graceMs: z.number().int().min(0).default(2 * 60_000),
  /** An assigned consultation without any message for this long is closed. */
  inactivityCloseMs: z.number().int().min(1_000).default(30 * 60_000),
});

/**
 * How people get tokens from the cell (cell/access/login-routes.ts): agents log in with a
 * password, pages of shoppers without an account get guest tokens. Rates are per minute, since
 * logins are rare per person; each has a burst, what may come at once.
 */
export const LoginsConfig = strict({
  /** Lifetime of an agent's access token; the SDK refreshes it before it expires. */
  accessTokenTtlSeconds: z.number().int().min(60).max(24 * 3600).default(15 * 60),
  /** Lifetime of a refresh token (agents and guests); each refresh starts a new one. */
  refreshTokenTtlSeconds: z.number().int().min(3600).max(365 * 24 * 3600).default(30 * 24 * 3600),
  /** Lifetime of a guest's access token. */
  guestTokenTtlSeconds: z.number().int().min(60).max(24 * 3600).default(60 * 60),
  /** Logins from one client address... */
  loginsPerMinutePerAddress: z.number().positive().default(20),
  loginBurstPerAddress: z.number().int().positive().default(40),
  /** ...and for one agent (right or wrong password): what bounds guessing an agent's password. */
  loginsPerMinutePerAgent: z.number().positive().default(5),
  loginBurstPerAgent: z.number().int().positive().default(5),
  /** Guest tokens (new or refreshed) for one client address. */
  guestsPerMinutePerAddress: z.number().positive().default(20),
  guestBurstPerAddress: z.number().int().positive().default(40),
  /** Addresses and agents each rate limit remembers at most (idle ones are forgotten first). */
  maxTrackedClients: z.number().int().min(100).max(1_000_000).default(10_000),
});

export type TenantConfig = z.infer<typeof TenantConfig>;
export type DeskConfig = z.infer<typeof DeskConfig>;
export type AgentSeedConfig = z.infer<typeof AgentSeedConfig>;
export type LimitsConfig = z.infer<typeof LimitsConfig>;
export type AttachmentsConfig = z.infer<typeof AttachmentsConfig>;

/** A tenant's attachment limits, with the defaults where its config has none. */
export function attachmentsConfigOf(tenant: Pick<TenantConfig, 'attachments'>): AttachmentsConfig {
  return tenant.attachments ?? AttachmentsConfig.parse({});
}
export type LoginsConfig = z.infer<typeof LoginsConfig>;
