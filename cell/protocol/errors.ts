/**
 * Stable error codes of the wire protocol and the HTTP API. Clients match on `code`, never on
 * the message. Every code is documented in docs/protocol.md; add a row there with a new code.
 */
export const ErrorCode = {
  BadJson: 'BAD_JSON',
  BadFrame: 'BAD_FRAME',
  UnknownOp: 'UNKNOWN_OP',
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
  BinaryNotSupported: 'BINARY_NOT_SUPPORTED',
  RateLimited: 'RATE_LIMITED',
  Unauthenticated: 'UNAUTHENTICATED',
  TokenInvalid: 'TOKEN_INVALID',
  TokenExpired: 'TOKEN_EXPIRED',
  OriginForbidden: 'ORIGIN_FORBIDDEN',
  UnsupportedVersion: 'UNSUPPORTED_VERSION',
  DeviceLimit: 'DEVICE_LIMIT',
  ConversationForbidden: 'CONVERSATION_FORBIDDEN',
  MerchantNotHosted: 'MERCHANT_NOT_HOSTED',
  /**
   * The merchant lives in another serving cell of the cluster: `details.home` names it
   * (`cellId`, `ws`, `http`, `epoch`); connect (or send the request) there (docs/routing.md).
   */
  MerchantElsewhere: 'MERCHANT_ELSEWHERE',
  /**
   * The merchant's home cell is down (dead, or stopped still claiming it): its customers leave
   * messages at a fallback cell, but its agents work only at the home; retry (docs/routing.md).
   */
  HomeUnavailable: 'HOME_UNAVAILABLE',
  SeqOutOfRange: 'SEQ_OUT_OF_RANGE',
  NotFound: 'NOT_FOUND',
  MethodNotAllowed: 'METHOD_NOT_ALLOWED',
  /** HTTP: a plain request to the WebSocket endpoint, without the upgrade. */
  UpgradeRequired: 'UPGRADE_REQUIRED',
  StoreUnavailable: 'STORE_UNAVAILABLE',
  ShuttingDown: 'SHUTTING_DOWN',
  Internal: 'INTERNAL',
  MerchantUnknown: 'MERCHANT_UNKNOWN',
  MeshDisabled: 'MESH_DISABLED',
  AdminForbidden: 'ADMIN_FORBIDDEN',
  /**
   * HTTP only: the message is durable in this (access) cell's outbox and waits for its
   * conversation's home cell, which assigns its seq; resend with the same cmid to learn it.
   */
  ForwardPending: 'FORWARD_PENDING',
  MoveInProgress: 'MOVE_IN_PROGRESS',
  MoveFailed: 'MOVE_FAILED',
  /** A resend of a client message id with another body than the stored message's: the second body is not stored. */
  IdempotencyConflict: 'IDEMPOTENCY_CONFLICT',
  /** HTTP admin: a placement not signed by a configured operator key, or for another cell. */
  PlacementInvalid: 'PLACEMENT_INVALID',
  /** HTTP admin: a placement whose epoch is not above every claim of the merchant. */
  PlacementStale: 'PLACEMENT_STALE',
  /** An upload larger than its tenant's `attachments.maxBytes`. */
  AttachmentTooLarge: 'ATTACHMENT_TOO_LARGE',
  /** An upload whose bytes (sniffed, whatever the request declares) are not of a type its tenant accepts. */
  AttachmentTypeRefused: 'ATTACHMENT_TYPE_REFUSED',
  /** An attachment id that was not uploaded to this conversation (or no longer is kept). */
  AttachmentUnknown: 'ATTACHMENT_UNKNOWN',
  /** Attachments of a conversation hosted on another cell: not served across cells yet. */
  AttachmentCrossCell: 'ATTACHMENT_CROSS_CELL',
  /** The desk: an agent acted on a consultation assigned to another agent (supervisors may). */
  NotAssigned: 'NOT_ASSIGNED',
  /** The desk: the conversation has no open (or, for `rate`, no closed) consultation. */
  ConsultationUnknown: 'CONSULTATION_UNKNOWN',
  /** The desk: the consultation was rated already. */
  ConsultationRated: 'CONSULTATION_RATED',
  /** The desk: a transfer to an agent who is not online with free capacity, or not at this desk. */
  AgentUnavailable: 'AGENT_UNAVAILABLE',
  /** A desk operation for a merchant that has no agents registered (an open desk). */
  NoDesk: 'NO_DESK',
  /** HTTP login: no such agent, or a wrong password (the same answer for both). */
  LoginFailed: 'LOGIN_FAILED',
  /** HTTP login: too many logins from this address or for this agent; `retryAfterMs` says when to retry. */
  LoginRateLimited: 'LOGIN_RATE_LIMITED',
  /** HTTP: a refresh token that is unknown, expired, revoked, or was used already (which revokes its login). */
  RefreshInvalid: 'REFRESH_INVALID',
  /** HTTP guest tokens: too many from this address; `retryAfterMs` says when to retry. */
  GuestRateLimited: 'GUEST_RATE_LIMITED',
  /** HTTP `/v1/route` and `/v1/connect`: too many route requests from this client address; `retryAfterMs` (and `Retry-After`) say when to retry. */
  RouteRateLimited: 'ROUTE_RATE_LIMITED',
  /** HTTP admin: this cell serves no tenant of this id. */
  TenantUnknown: 'TENANT_UNKNOWN',
  /** HTTP admin: the merchant has an agent of this id already. */
  AgentExists: 'AGENT_EXISTS',
  /** HTTP admin: the merchant has no agent of this id. */
  AgentUnknown: 'AGENT_UNKNOWN',
  /** The customer is blocked by the conversation's merchant: its sends there are refused. */
  CustomerBlocked: 'CUSTOMER_BLOCKED',
  /** HTTP admin: the tenant or merchant is defined in the config file, which the admin API may not change: edit the file. */
  ConfigOwned: 'CONFIG_OWNED',
  /** HTTP admin: this cell serves a tenant of this id already. */
  TenantExists: 'TENANT_EXISTS',
  /** HTTP admin: a merchant of this id is hosted already, here or by another cell (the message names it). */
  MerchantExists: 'MERCHANT_EXISTS',
  /** HTTP admin: a tenant cannot be removed while this cell hosts merchants of it (the message lists them). */
  TenantNotEmpty: 'TENANT_NOT_EMPTY',
  /** HTTP admin: the cell is still joining its cluster; retry in a moment. */
  CellStarting: 'CELL_STARTING',
  /** HTTP admin: the cell is draining (`cellmesh drain`): it takes no new merchants, created or moved in. */
  CellDraining: 'CELL_DRAINING',
  /** HTTP admin: a drain found no live cell of the cluster to move the merchants to. */
  NoDrainTarget: 'NO_DRAIN_TARGET',
  /** HTTP admin: the cell's store cannot be read from a snapshot while the cell runs (Redis): back it up with the store's own tools. */
  BackupUnsupported: 'BACKUP_UNSUPPORTED',
  /** HTTP admin: a backup of this cell is being streamed already; one at a time. */
  BackupInProgress: 'BACKUP_IN_PROGRESS',
  /**
   * A cell of several processes: no live process owns the merchant right now (its owner died
   * and the lease has not moved yet, or it is being handed over); `retryAfterMs`, then retry.
   */
  OwnerUnavailable: 'OWNER_UNAVAILABLE',
  /**
   * HTTP admin, a cell of several processes: another process holds the cell's catalogue lock (a
   * change of tenants or merchants under way there) for longer than a change waits; retry.
   */
  CatalogueBusy: 'CATALOGUE_BUSY',
  /**
   * HTTP internal (`/v1/internal/...`, between the processes of a cell): the calling process does
   * not hold its lease with the fencing token it names (it lost it, or it is not of the cell).
   */
  ProcessFenced: 'PROCESS_FENCED',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** HTTP status for each code, used by the HTTP API and by rejected WebSocket upgrades. */
export const httpStatusOf: Record<ErrorCode, number> = {
  BAD_JSON: 400,
  BAD_FRAME: 400,
  UNKNOWN_OP: 400,
  PAYLOAD_TOO_LARGE: 413,
  BINARY_NOT_SUPPORTED: 400,
  RATE_LIMITED: 429,
  UNAUTHENTICATED: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  ORIGIN_FORBIDDEN: 403,
  UNSUPPORTED_VERSION: 426,
  DEVICE_LIMIT: 409,
  CONVERSATION_FORBIDDEN: 403,
  MERCHANT_NOT_HOSTED: 404,
  MERCHANT_ELSEWHERE: 421,
  HOME_UNAVAILABLE: 503,
  SEQ_OUT_OF_RANGE: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  UPGRADE_REQUIRED: 426,
  STORE_UNAVAILABLE: 503,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
  MERCHANT_UNKNOWN: 404,
  MESH_DISABLED: 404,
  ADMIN_FORBIDDEN: 403,
  FORWARD_PENDING: 503,
  MOVE_IN_PROGRESS: 409,
  MOVE_FAILED: 502,
  IDEMPOTENCY_CONFLICT: 409,
  PLACEMENT_INVALID: 403,
  PLACEMENT_STALE: 409,
  ATTACHMENT_TOO_LARGE: 413,
  ATTACHMENT_TYPE_REFUSED: 415,
  ATTACHMENT_UNKNOWN: 404,
  ATTACHMENT_CROSS_CELL: 409,
  NOT_ASSIGNED: 403,
  CONSULTATION_UNKNOWN: 404,
  CONSULTATION_RATED: 409,
  AGENT_UNAVAILABLE: 409,
  NO_DESK: 409,
  LOGIN_FAILED: 401,
  LOGIN_RATE_LIMITED: 429,
  REFRESH_INVALID: 401,
  GUEST_RATE_LIMITED: 429,
  ROUTE_RATE_LIMITED: 429,
  TENANT_UNKNOWN: 404,
  AGENT_EXISTS: 409,
  AGENT_UNKNOWN: 404,
  CUSTOMER_BLOCKED: 403,
  CONFIG_OWNED: 409,
  TENANT_EXISTS: 409,
  MERCHANT_EXISTS: 409,
  TENANT_NOT_EMPTY: 409,
  CELL_STARTING: 503,
  CELL_DRAINING: 409,
  NO_DRAIN_TARGET: 409,
  BACKUP_UNSUPPORTED: 501,
  BACKUP_IN_PROGRESS: 409,
  OWNER_UNAVAILABLE: 503,
  CATALOGUE_BUSY: 503,
  PROCESS_FENCED: 409,
};

/** An operating error with a stable code: answered to the client, never a crash. */
export class CellError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable details (for example `retryAfterMs`). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'CellError';
    this.code = code;
    this.details = details;
  }
}

/**
 * WebSocket close codes the cell uses. 1xxx are the standard ones; 4xxx are ours, and a client
 * must not reconnect on the 44xx ones without changing something (token, device).
 */
export const CloseCode = {
  /** The cell is shutting down or draining: reconnect (with backoff), the session resumes. */
  GoingAway: 1001,
  /** The device did not read fast enough; reconnect and resync from the delivery cursor. */
  Backpressure: 4008,
  /** The token expired during the session, or (for browsers) was refused: get a new token, then reconnect. */
  TokenExpired: 4401,
  /** (For browsers) the connection is forbidden: origin not allowed, merchant not hosted, agent not registered (or removed). Do not retry. */
  Forbidden: 4403,
  /**
   * The merchant of this connection lives in another cell (it moved, or the device came to the
   * wrong one): the `error` frame before it (MERCHANT_ELSEWHERE) names the new home; reconnect there.
   */
  MerchantElsewhere: 4307,
  /** The same device connected again elsewhere; this older connection is replaced. */
  Replaced: 4409,
  /** The connection used up its error allowance: protocol errors, refused ack entries, rate-limit violations. */
  PolicyViolation: 4429,
} as const;

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * Browsers cannot read the HTTP error of a refused WebSocket upgrade. For them (requests with an
 * Origin header) the cell accepts the upgrade, sends one `error` frame and closes with the code
 * below; the codes missing here are answered over HTTP to everyone. MERCHANT_ELSEWHERE is
 * answered in band to every client, browser or not: its frame carries the new home.
 */
export const inBandRejectionCloseCodes: Partial<Record<ErrorCode, CloseCode>> = {
  UNAUTHENTICATED: CloseCode.TokenExpired,
  TOKEN_INVALID: CloseCode.TokenExpired,
  TOKEN_EXPIRED: CloseCode.TokenExpired,
  ORIGIN_FORBIDDEN: CloseCode.Forbidden,
  MERCHANT_NOT_HOSTED: CloseCode.Forbidden,
  MERCHANT_ELSEWHERE: CloseCode.MerchantElsewhere,
  AGENT_UNKNOWN: CloseCode.Forbidden,
  DEVICE_LIMIT: CloseCode.PolicyViolation,
};
