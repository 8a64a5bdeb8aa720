import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Clock } from '../../platform/clock.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import { keys, type KeyRange } from '../messaging/keys.js';
import { KeyedSerializer, SerializerFullError } from '../messaging/keyed-serializer.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN } from '../protocol/frames.js';

/**
 * Refresh tokens: long-lived, single-use secrets that buy a new access token and a new refresh
 * token (rotation). The tokens of one login form a family; presenting a token of the family that
 * was already rotated means two parties hold it (one of them a thief), so the whole family is
 * revoked and both must log in again.
 *
 * A token is `<tenant>:<merchant>:<secret>`, the secret 32 bytes of the operating system's CSPRNG
 * (base64url). Only the SHA-256 of the secret is stored, in the merchant's desk range, so logins
 * and guests travel with the merchant when it moves (mesh/merchant-move.ts):
 *
 *   k/<tenant>/<merchant>/refresh/<sha256>   {family, expiresAtMs}: every token issued, until it expires
 *   k/<tenant>/<merchant>/session/<family>   the family: who it is for, and its current token's hash
 *
 * A rotated token's record stays until its own expiry, to recognise its reuse. Expired records
 * are deleted lazily: when presented, and by a sweep of the next few records of the tables with
 * each token issued, so the tables hold expired records in proportion to the live ones, not
 * without bound.
 */

/** Whom a family of refresh tokens is for. */
export interface RefreshSubject {
  kind: 'agent' | 'guest';
  tenant: string;
  merchant: string;
  user: string;
  device: string;
  /** For agents: a digest of the password hash at login, so a password change ends the family. */
  credential?: string | undefined;
}

export interface IssuedRefreshToken {
  refreshToken: string;
  refreshExpiresAtMs: number;
}

export interface RefreshTokensComponents {
  store: Store;
  clock: Clock;
  /** Lifetime of each refresh token; a rotation starts a new one. */
  ttlMs: number;
}

/** Whom a family's next token is for, given whom it was for; throws a CellError to refuse. */
export type RenewSubject = (subject: RefreshSubject) => RefreshSubject;

const SECRET_BYTES = 32;
/** Records looked at for expiry after each token issued. */
const SWEEP_RECORDS = 8;
/** Refreshes and logouts waiting at once, over all families. */
const MAX_PENDING_OPERATIONS = 10_000;

const TokenRecord = z.object({ family: z.string(), expiresAtMs: z.number() });
const SessionRecord = z.object({
  kind: z.enum(['agent', 'guest']),
  user: z.string(),
  device: z.string(),
  credential: z.string().optional(),
  current: z.string(),
  expiresAtMs: z.number(),
});
type SessionRecord = z.infer<typeof SessionRecord>;

const refreshTable = (tenant: string, merchant: string): KeyRange => keys.merchantDeskTable(tenant, merchant, 'refresh');
const sessionTable = (tenant: string, merchant: string): KeyRange => keys.merchantDeskTable(tenant, merchant, 'session');

/** A presented token, parsed. */
interface PresentedToken {
  tenant: string;
  merchant: string;
  hash: string;
}

function invalid(message = 'the refresh token is unknown, expired or revoked; log in again'): CellError {
  return new CellError(ErrorCode.RefreshInvalid, message);
}

function digest(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('base64url');
}

/** Parses `<tenant>:<merchant>:<secret>`; anything else is REFRESH_INVALID. */
function parseRefreshToken(token: string): PresentedToken {
  const [tenant, merchant, secret, extra] = token.split(':');
  if (tenant === undefined || merchant === undefined || secret === undefined || extra !== undefined) throw invalid('the refresh token is malformed');
  if (!IDENTIFIER_PATTERN.test(tenant) || !IDENTIFIER_PATTERN.test(merchant)) throw invalid('the refresh token is malformed');
  const bytes = Buffer.from(secret, 'base64url');
  if (bytes.length !== SECRET_BYTES || bytes.toString('base64url') !== secret) throw invalid('the refresh token is malformed');
  return { tenant, merchant, hash: digest(bytes) };
}

/** The tenant and merchant a refresh token is for, as it says (unverified); undefined when malformed. */
export function scopeOfRefreshToken(token: string): { tenant: string; merchant: string } | undefined {
  try {
    const { tenant, merchant } = parseRefreshToken(token);
    return { tenant, merchant };
  } catch {
    return undefined;
  }
}

export class RefreshTokens {
  /** One operation at a time per family: a rotation reads, then replaces, the family's current token. */
  private readonly families = new KeyedSerializer(MAX_PENDING_OPERATIONS);
  /** Where the next sweep of each table starts (one entry per table of a merchant that issued tokens). */
  private readonly sweepCursors = new Map<string, string>();

  constructor(private readonly components: RefreshTokensComponents) {}

  /** Starts a family for `subject` with its first token. */
  async issue(subject: RefreshSubject): Promise<IssuedRefreshToken> {
    const { secret, hash } = newSecret();
    // The first token's hash names the family: unique, and nothing else to draw.
    return this.write(subject, hash, secret, hash);
  }

  /**
   * Exchanges a family's current token for a new one. `kind` must match the family's. `renew`
   * decides whether the family may go on and for whom the new token is (a guest may name another
   * device); when it refuses with REFRESH_INVALID, the family is revoked.
   */
  async rotate(token: string, kind: RefreshSubject['kind'], renew: RenewSubject): Promise<{ subject: RefreshSubject } & IssuedRefreshToken> {
    const presented = parseRefreshToken(token);
    const { family } = await this.findFamily(presented);
    return this.serialized(presented, family, async () => {
      const { store, clock } = this.components;
      const session = await this.readSession(presented, family);
      if (session === undefined || session.expiresAtMs <= clock.now()) {
        await store.write([{ type: 'del', key: this.tokenKey(presented, presented.hash) }, { type: 'del', key: this.sessionKey(presented, family) }]);
        throw invalid();
      }
      if (session.current !== presented.hash) {
        await store.write(this.revocation(presented, family, session));
        throw invalid('the refresh token was used already: every token of this login is revoked; log in again');
      }
      if (session.kind !== kind) throw invalid(`this is the refresh token of ${session.kind === 'agent' ? 'an agent' : 'a guest'}`);
      let subject: RefreshSubject;
      try {
        subject = renew(subjectOf(presented, session));
      } catch (error) {
        if (error instanceof CellError && error.code === ErrorCode.RefreshInvalid) await store.write(this.revocation(presented, family, session));
        throw error;
      }
      const { secret, hash } = newSecret();
      return { subject, ...(await this.write(subject, family, secret, hash)) };
    });
  }

  /** Revokes the family of `token`, whichever of its tokens it is; unknown tokens are ignored. */
  async revoke(token: string): Promise<void> {
    let presented: PresentedToken;
    try {
      presented = parseRefreshToken(token);
    } catch {
      return;
    }
    const record = await this.readToken(presented);
    if (record === undefined) return;
    await this.serialized(presented, record.family, async () => {
      const session = await this.readSession(presented, record.family);
      const ops: StoreOp[] = [{ type: 'del', key: this.tokenKey(presented, presented.hash) }];
      await this.components.store.write(session === undefined ? ops : [...ops, ...this.revocation(presented, record.family, session)]);
    });
  }

  /** The family of a presented token that exists and has not expired (an expired one is deleted). */
  private async findFamily(presented: PresentedToken): Promise<{ family: string }> {
    const record = await this.readToken(presented);
    if (record === undefined) throw invalid();
    if (record.expiresAtMs <= this.components.clock.now()) {
      await this.components.store.write([{ type: 'del', key: this.tokenKey(presented, presented.hash) }]);
      throw invalid();
    }
    return { family: record.family };
  }

  private serialized<T>(presented: PresentedToken, family: string, task: () => Promise<T>): Promise<T> {
    return this.families.run(`${presented.tenant}/${presented.merchant}/${family}`, task).catch((error: unknown) => {
      if (error instanceof SerializerFullError) throw new CellError(ErrorCode.LoginRateLimited, 'too many refreshes under way; retry shortly', { retryAfterMs: 1000 });
      throw error;
    });
  }

  /** Writes a token of `family` for `subject` (a new family when `family` is the token's own hash), and the sweep's deletes. */
  private async write(subject: RefreshSubject, family: string, secret: string, hash: string): Promise<IssuedRefreshToken> {
    const { store, clock, ttlMs } = this.components;
    const nowMs = clock.now();
    const refreshExpiresAtMs = nowMs + ttlMs;
    const where = { tenant: subject.tenant, merchant: subject.merchant };
    const session: SessionRecord = { kind: subject.kind, user: subject.user, device: subject.device, current: hash, expiresAtMs: refreshExpiresAtMs };
    if (subject.credential !== undefined) session.credential = subject.credential;
    const swept = [...(await this.expiredRecords(refreshTable(where.tenant, where.merchant), nowMs)), ...(await this.expiredRecords(sessionTable(where.tenant, where.merchant), nowMs))];
    await store.write([
      ...swept.map((key): StoreOp => ({ type: 'del', key })),
      { type: 'put', key: this.tokenKey(where, hash), value: JSON.stringify({ family, expiresAtMs: refreshExpiresAtMs }) },
      { type: 'put', key: this.sessionKey(where, family), value: JSON.stringify(session) },
    ]);
    return { refreshToken: `${subject.tenant}:${subject.merchant}:${secret}`, refreshExpiresAtMs };
  }

  /**
   * Keys of expired records among the next SWEEP_RECORDS of `table`, from where the last sweep of
   * the table stopped (back at its start after its end): every record is looked at once in every
   * so many tokens issued, so expired records stay in proportion to the live ones.
   */
  private async expiredRecords(table: KeyRange, nowMs: number): Promise<string[]> {
    const from = this.sweepCursors.get(table.gte) ?? table.gte;
    const entries = await this.components.store.range({ gte: from, lt: table.lt, limit: SWEEP_RECORDS });
    if (entries.length < SWEEP_RECORDS) this.sweepCursors.delete(table.gte);
    else this.sweepCursors.set(table.gte, entries[entries.length - 1]![0]);
    return entries.filter(([, value]) => expiresAtMsOf(value) <= nowMs).map(([key]) => key);
  }

  /** Deletes a family: its session, its current token and the presented one. */
  private revocation(where: { tenant: string; merchant: string; hash: string }, family: string, session: SessionRecord): StoreOp[] {
    return [
      { type: 'del', key: this.sessionKey(where, family) },
      { type: 'del', key: this.tokenKey(where, session.current) },
      { type: 'del', key: this.tokenKey(where, where.hash) },
    ];
  }

  private async readToken(presented: PresentedToken): Promise<z.infer<typeof TokenRecord> | undefined> {
    const value = await this.components.store.get(this.tokenKey(presented, presented.hash));
    return value === undefined ? undefined : parseRecord(TokenRecord, value);
  }

  private async readSession(presented: PresentedToken, family: string): Promise<SessionRecord | undefined> {
    const value = await this.components.store.get(this.sessionKey(presented, family));
    return value === undefined ? undefined : parseRecord(SessionRecord, value);
  }

  private tokenKey(where: { tenant: string; merchant: string }, hash: string): string {
    return refreshTable(where.tenant, where.merchant).gte + hash;
  }

  private sessionKey(where: { tenant: string; merchant: string }, family: string): string {
    return sessionTable(where.tenant, where.merchant).gte + family;
  }
}

function newSecret(): { secret: string; hash: string } {
  const bytes = randomBytes(SECRET_BYTES);
  return { secret: bytes.toString('base64url'), hash: digest(bytes) };
}

function subjectOf(presented: PresentedToken, session: SessionRecord): RefreshSubject {
  return { kind: session.kind, tenant: presented.tenant, merchant: presented.merchant, user: session.user, device: session.device, credential: session.credential };
}

/** A stored record, or undefined when it does not parse (treated like a missing one). */
function parseRecord<Schema extends z.ZodType>(schema: Schema, value: string): z.output<Schema> | undefined {
  try {
    const parsed = schema.safeParse(JSON.parse(value));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** The expiry of a stored record; a record that does not parse counts as expired. */
function expiresAtMsOf(value: string): number {
  return parseRecord(z.object({ expiresAtMs: z.number() }), value)?.expiresAtMs ?? 0;
}
