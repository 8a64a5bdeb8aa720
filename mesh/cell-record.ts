import { z } from 'zod';
import { MembershipError } from './membership-errors.js';
import type { RecordSigner } from './record-signer.js';
import type { PeerId } from './transport.js';

/**
 * The cell record: what each cell tells the cluster about itself, written only by that cell and
 * gossiped to all. The directory (directory.ts) holds one per cell.
 *
 * Ordering: records of one cell order by (incarnation, version). The owner bumps `incarnation`
 * at every start (persisted in its Store) and to refute a suspicion, and resets `version` to 0;
 * it bumps `version` on every change within an incarnation. A receiver keeps the greater pair.
 *
 * Wire form: a SignedRecord envelope `{ record, signature }` whose `record` is the canonical JSON
 * text of the record (keys sorted, no spaces) and `signature` the base64 Ed25519 signature of
 * `SIGNING_CONTEXT + record` by the key of `record.peerId`. The text travels verbatim and is
 * verified as received, so relays never re-encode it and fields added by a newer version survive
 * relaying through an older cell (the schema strips unknown fields only from the parsed copy).
 */

/** Cell ids: lower-case letters, digits and dashes, up to 64 characters, not starting with a dash. */
export const CELL_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** Bounds of one record, so a record always fits one gossip message. */
export const RECORD_LIMITS = Object.freeze({
  maxNameLength: 128,
  maxUrlLength: 2_048,
  maxPeerIdLength: 256,
  maxP2pAddresses: 16,
  maxTenants: 1_024,
  maxMerchants: 4_096,
  /** Bytes of the record's JSON text. */
  maxRecordBytes: 512 * 1024,
});

/**
 * Domain separation: the same Ed25519 key signs libp2p traffic (gossipsub, noise), so record
 * signatures cover a context string that no other protocol signs.
 */
export const SIGNING_CONTEXT = 'cellmesh/cell-record/v1:';

export const CellIdSchema = z.string().regex(CELL_ID_PATTERN);
const NameSchema = z.string().min(1).max(RECORD_LIMITS.maxNameLength);
/** Counters are integers JSON carries exactly. */
const CounterSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const CellStatusSchema = z.enum(['alive', 'leaving', 'left']);
export type CellStatus = z.infer<typeof CellStatusSchema>;

/**
 * What a member of the mesh is. Absent: a cell, which hosts merchants (every record before
 * routers existed). `router`: an observer (`cellmesh router`) that keeps the directory to answer
 * route requests and hosts nothing: no tenants, no merchants, never a move target. A cell of an
 * older version strips the field and sees a member with no merchants, which routes nothing to it.
 */
export const MemberRoleSchema = z.enum(['router']);
export type MemberRole = z.infer<typeof MemberRoleSchema>;

/** A base64 Ed25519 signature: 64 bytes are 88 base64 characters. */
const SignatureSchema = z.base64().max(128);

/**
 * Why a claim may displace a live home (mesh/claim-proof.ts signs and checks them):
 * - handover: the previous home (`fromCell`, whose libp2p key is `fromPeer`, claiming it at
 *   `fromEpoch`) signed that it hands the merchant to this cell, this peer, at this epoch;
 * - placement: an operator key the cells are configured with (`mesh.operatorKeys`) signed that
 *   the merchant belongs on this cell at this epoch.
 * The proof travels in the claim, so every cell that receives the record, now or later, checks it.
 */
export const ClaimProofSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('handover'),
    fromCell: z.string().regex(CELL_ID_PATTERN),
    fromPeer: z.string().min(1).max(RECORD_LIMITS.maxPeerIdLength),
    fromEpoch: CounterSchema,
    signature: SignatureSchema,
  }),
  z.object({
    kind: z.literal('placement'),
    /** The operator's public key in its text form (`ed25519:<base64>`). */
    key: z.string().min(1).max(128),
    signature: SignatureSchema,
  }),
]);
export type ClaimProof = z.infer<typeof ClaimProofSchema>;

export const MerchantClaimSchema = z.object({
  tenant: NameSchema,
  merchant: NameSchema,
  /** Ownership epoch: a move to another cell claims epoch + 1; the highest epoch is home. */
  epoch: CounterSchema,
  /** Needed by a claim that displaces another cell's (directory.ts, "Home of a merchant"). */
  proof: ClaimProofSchema.optional(),
});
export type MerchantClaim = z.infer<typeof MerchantClaimSchema>;

/**
 * A merchant this cell handed over (the move protocol): the target and the epoch it claims. It
 * stays in the record while this cell does not claim the merchant, so a cell that sees the new
 * home's handover after this cell dropped its claim can tell that it came from the home.
 */
export const HandedOverSchema = z.object({
  tenant: NameSchema,
  merchant: NameSchema,
  toCell: z.string().regex(CELL_ID_PATTERN),
  epoch: CounterSchema,
});
export type HandedOver = z.infer<typeof HandedOverSchema>;

export const CellRecordSchema = z
  .object({
    cellId: CellIdSchema,
    peerId: z.string().min(1).max(RECORD_LIMITS.maxPeerIdLength),
    incarnation: CounterSchema,
    version: CounterSchema,
    status: CellStatusSchema,
    /** Absent for a cell; see MemberRoleSchema. */
    role: MemberRoleSchema.optional(),
    endpoints: z.object({
      ws: z.url({ protocol: /^wss?$/ }).max(RECORD_LIMITS.maxUrlLength),
      http: z.url({ protocol: /^https?$/ }).max(RECORD_LIMITS.maxUrlLength),
      p2p: z.array(z.string().min(1).max(RECORD_LIMITS.maxUrlLength)).max(RECORD_LIMITS.maxP2pAddresses),
    }),
    tenants: z.array(NameSchema).max(RECORD_LIMITS.maxTenants),
    merchants: z.array(MerchantClaimSchema).max(RECORD_LIMITS.maxMerchants),
    /** Absent in records of earlier versions. */
    handedOver: z.array(HandedOverSchema).max(RECORD_LIMITS.maxMerchants).optional(),
    load: z.object({
      devices: CounterSchema,
      messagesPerSecond: z.number().min(0).max(Number.MAX_SAFE_INTEGER),
    }),
    capacity: z.object({ maxDevices: CounterSchema }),
  })
  .superRefine((record, context) => {
    if (record.role === 'router' && (record.tenants.length > 0 || record.merchants.length > 0 || (record.handedOver?.length ?? 0) > 0)) {
      context.addIssue({ code: 'custom', message: 'a router hosts no tenants or merchants', path: ['role'] });
      return;
    }
    const seen = new Set<string>();
    for (const claim of record.merchants) {
      const key = merchantKey(claim.tenant, claim.merchant);
      if (seen.has(key)) {
        context.addIssue({ code: 'custom', message: `merchant ${claim.tenant}/${claim.merchant} is listed twice`, path: ['merchants'] });
        return;
      }
      seen.add(key);
    }
  });

export type CellRecord = z.infer<typeof CellRecordSchema>;

/** Whether a record is a router's (an observer that hosts nothing), not a cell's. */
export function isRouterRecord(record: { readonly role?: MemberRole | undefined }): boolean {
  return record.role === 'router';
}

/** What a cell says about itself beyond identity, order and status. */
export type CellRecordContent = Pick<CellRecord, 'endpoints' | 'tenants' | 'merchants' | 'handedOver' | 'load' | 'capacity'>;

/** The wire envelope of a record; see the module comment. */
export interface SignedRecord {
  /** Canonical JSON text of the CellRecord. */
  readonly record: string;
  /** Base64 Ed25519 signature over SIGNING_CONTEXT + record. */
  readonly signature: string;
}

export const SignedRecordSchema = z.object({
  record: z.string().min(2).max(RECORD_LIMITS.maxRecordBytes),
  signature: SignatureSchema,
});

/** A record whose signature verified, with the envelope it came in. */
export interface VerifiedRecord {
  readonly record: CellRecord;
  readonly signed: SignedRecord;
}

export type RecordOpenFailure = 'malformed' | 'bad-signature';

export type RecordOpenResult = { ok: true; verified: VerifiedRecord } | { ok: false; reason: RecordOpenFailure };

/** Orders records of one cell: negative when `a` is older than `b`, 0 when the same, positive when newer. */
export function compareRecordOrder(
  a: { readonly incarnation: number; readonly version: number },
  b: { readonly incarnation: number; readonly version: number },
): number {
  if (a.incarnation !== b.incarnation) return a.incarnation < b.incarnation ? -1 : 1;
  if (a.version !== b.version) return a.version < b.version ? -1 : 1;
  return 0;
}

/** The key of a (tenant, merchant) pair in maps; JSON keeps any characters unambiguous. */
export function merchantKey(tenant: string, merchant: string): string {
  return JSON.stringify([tenant, merchant]);
}

/** JSON with object keys sorted at every level: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`cannot encode ${typeof value} as JSON`);
    return text;
  }
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, item]) => item !== undefined)
    .sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0));
  return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
}

const encoder = new TextEncoder();

function signingBytes(recordText: string): Uint8Array {
  return encoder.encode(SIGNING_CONTEXT + recordText);
}

/**
 * Validates and signs an own record. An invalid own record is a programmer or configuration
 * error of this cell: it throws MembershipError INVALID_RECORD and is never published.
 */
export function signRecord(record: CellRecord, signer: RecordSigner): VerifiedRecord {
  const parsed = CellRecordSchema.safeParse(record);
  if (!parsed.success) {
    throw new MembershipError('INVALID_RECORD', `invalid cell record: ${z.prettifyError(parsed.error)}`);
  }
  const text = canonicalJson(parsed.data);
  if (Buffer.byteLength(text) > RECORD_LIMITS.maxRecordBytes) {
    throw new MembershipError('INVALID_RECORD', `the cell record is larger than ${RECORD_LIMITS.maxRecordBytes} bytes`);
  }
  const signature = Buffer.from(signer.sign(signingBytes(text))).toString('base64');
  return { record: parsed.data, signed: { record: text, signature } };
}

/**
 * Opens an envelope received from anyone: checks its shape, parses and validates the record,
 * then verifies the signature against the record's own peer id (the costly step last).
 * Never throws.
 */
export function openSignedRecord(envelope: unknown, signer: RecordSigner): RecordOpenResult {
  const shape = SignedRecordSchema.safeParse(envelope);
  if (!shape.success) return { ok: false, reason: 'malformed' };
  return openEnvelope(shape.data, signer);
}

/**
 * Opens an envelope that already passed SignedRecordSchema (as the output of
 * `decodeJson(bytes, SignedRecordSchema, ...)` has): what openSignedRecord does after its shape
 * check, so a decoded gossip message is not validated against the envelope schema twice.
 * Never throws.
 */
export function openEnvelope(envelope: SignedRecord, signer: RecordSigner): RecordOpenResult {
  let json: unknown;
  try {
    json = JSON.parse(envelope.record);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  const record = CellRecordSchema.safeParse(json);
  if (!record.success) return { ok: false, reason: 'malformed' };
  const signature = Buffer.from(envelope.signature, 'base64');
  if (!signer.verify(record.data.peerId as PeerId, signingBytes(envelope.record), signature)) {
    return { ok: false, reason: 'bad-signature' };
  }
  return { ok: true, verified: { record: record.data, signed: { record: envelope.record, signature: envelope.signature } } };
}
