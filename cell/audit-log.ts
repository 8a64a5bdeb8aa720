import type { Clock } from '../platform/clock.js';
import type { Store } from '../platform/store/store.js';
import { encodeSeq, keys } from './messaging/keys.js';
import { ErrorCode } from './protocol/errors.js';
import { operatingErrorOf } from './protocol/operating-errors.js';

/**
 * The cell's audit log: one durable entry per admin action (people created, changed, removed,
 * passwords set; merchant moves and placements; capacity; mesh blocks), whether it succeeded or
 * failed, listed by the admin API (docs/protocol.md, `GET /v1/admin/audit`).
 *
 * An entry's key is its time (the injected clock) and a counter that only grows, also across
 * restarts (`load` continues from the newest entry), so two entries of one millisecond keep the
 * order they were recorded in and never share a key. The log is the cell's own: it does not
 * travel with a merchant that moves.
 */

/** Who acted: `admin` for the admin token (agents' own actions will be `agent:<merchant>:<id>`). */
export type AuditActor = 'admin' | `agent:${string}:${string}`;

export interface AuditEntryInit {
  actor: AuditActor;
  /** What was done, `<subject>.<verb>`: `agent.create`, `merchant.move`... (docs/desk.md lists them). */
  action: string;
  tenant?: string | undefined;
  merchant?: string | undefined;
  /** What the action was about: an agent id, a cell id... */
  target?: string | undefined;
  /** The action's parameters (never a secret: a password is recorded as set, not as given). */
  details?: Record<string, unknown> | undefined;
  /** Absent: the action succeeded. */
  error?: { code: string; message: string } | undefined;
}

export interface AuditEntry extends Omit<AuditEntryInit, 'error'> {
  /** `<ms>-<counter>`, both zero-padded: sorts like the entries, and is the `after` of the next page. */
  id: string;
  atMs: number;
  outcome: 'ok' | 'failed';
  error?: { code: string; message: string } | undefined;
}

export interface AuditQuery {
  /** The id of the last entry of the previous page: the page continues with the entries before it. */
  after?: string | undefined;
  /** Entries per page, default DEFAULT_AUDIT_PAGE, at most MAX_AUDIT_PAGE. */
  limit?: number | undefined;
  tenant?: string | undefined;
  action?: string | undefined;
}

export interface AuditPage {
  /** Newest first. */
  entries: AuditEntry[];
  /** Where the next page starts (`after`) when there may be older entries; absent at the log's start. */
  next?: string | undefined;
}

export const DEFAULT_AUDIT_PAGE = 100;
export const MAX_AUDIT_PAGE = 1000;
/** Entries one `list` reads at most while filtering; then it answers what it found and where to go on. */
const MAX_SCANNED_ENTRIES = 10_000;
const MAX_DETAILS_BYTES = 4096;
export const AUDIT_ID_PATTERN = /^(\d{16})-(\d{16})$/;

export class AuditLog {
  private nextCounter = 0;

  constructor(private readonly components: { store: Store; clock: Clock }) {}

  /** Continues the counter after the newest entry in the store; call once the store is open. */
  async load(): Promise<void> {
    const [newest] = await this.components.store.range({ ...keys.auditLog(), reverse: true, limit: 1 });
    // The key's last field is the counter (keys.auditEntry).
    if (newest !== undefined) this.nextCounter = Number(newest[0].slice(newest[0].lastIndexOf('/') + 1)) + 1;
  }

  /** Records an entry; resolves once it is durable. */
  async record(init: AuditEntryInit): Promise<AuditEntry> {
    const atMs = this.components.clock.now();
    const counter = this.nextCounter++;
    const entry: AuditEntry = {
      id: `${encodeSeq(atMs)}-${encodeSeq(counter)}`,
      atMs,
      actor: init.actor,
      action: init.action,
      ...definedOnly({ tenant: init.tenant, merchant: init.merchant, target: init.target, details: init.details }),
      outcome: init.error === undefined ? 'ok' : 'failed',
      ...(init.error === undefined ? {} : { error: { code: init.error.code, message: init.error.message } }),
    };
    await this.components.store.write([{ type: 'put', key: keys.auditEntry(atMs, counter), value: JSON.stringify(entry) }]);
    return entry;
  }

  /** A page of entries, newest first, optionally of one tenant or one action. */
  async list(query: AuditQuery = {}): Promise<AuditPage> {
    const limit = Math.min(Math.max(1, query.limit ?? DEFAULT_AUDIT_PAGE), MAX_AUDIT_PAGE);
    const range = keys.auditLog();
    let lt = range.lt;
    if (query.after !== undefined) {
      const match = AUDIT_ID_PATTERN.exec(query.after);
      if (match === null) throw new RangeError(`not an audit entry id: ${query.after}`);
      lt = keys.auditEntry(Number(match[1]), Number(match[2]));
    }
    const entries: AuditEntry[] = [];
    let scanned = 0;
    for (;;) {
      const pageLimit = Math.min(MAX_AUDIT_PAGE, MAX_SCANNED_ENTRIES - scanned);
      const page = await this.components.store.range({ gte: range.gte, lt, reverse: true, limit: pageLimit });
      for (const [, value] of page) {
        const entry = JSON.parse(value) as AuditEntry;
        scanned++;
        if ((query.tenant === undefined || entry.tenant === query.tenant) && (query.action === undefined || entry.action === query.action)) entries.push(entry);
        if (entries.length === limit) return { entries, next: entry.id };
      }
      if (page.length < pageLimit) return { entries };
      lt = page[page.length - 1]![0];
      if (scanned >= MAX_SCANNED_ENTRIES) return { entries, next: idOfKey(lt) };
    }
  }
}

/**
 * Runs an admin action and records it with its outcome: the answer waits for the entry to be
 * durable. A failed action is recorded with its error code, then fails as it would have; should
 * the record itself fail too, the action's own error is the one that propagates.
 */
export async function recordOutcome<T>(audit: AuditLog, init: Omit<AuditEntryInit, 'error'>, action: () => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await action();
  } catch (error) {
    const known = operatingErrorOf(error);
    const failure = known === undefined ? { code: ErrorCode.Internal, message: 'internal error' } : { code: known.code, message: known.message };
    await audit.record({ ...init, error: failure }).catch(() => undefined);
    throw error;
  }
  await audit.record(init);
  return result;
}

/** What an entry keeps of a request's JSON body: the object as asked, or its size alone past 4 KiB. */
export function requestDetails(body: string): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const bytes = Buffer.byteLength(body);
  return bytes <= MAX_DETAILS_BYTES ? (parsed as Record<string, unknown>) : { bodyBytes: bytes };
}

function idOfKey(key: string): string {
  const [, atMs, counter] = key.split('/');
  return `${atMs}-${counter}`;
}

function definedOnly(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}
