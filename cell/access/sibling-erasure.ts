import { z } from 'zod';
import type { LocalErasure } from '../customer-data.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { RELAYED_BY_HEADER } from './sibling-relay.js';

/**
 * A process's share of an erasure asked of another process of its cell (cell/customer-erasure.ts,
 * eraseInEveryProcess), over the admin API: `DELETE /v1/admin/tenants/{tenant}/customers/{customer}`
 * with the relay marker and `merchants=` naming the merchants whose conversations are its share.
 * With the marker, a process erases only its share and records nothing (admin-customer-routes.ts).
 */

const TIMEOUT_MS = 30_000;
const RETRY_MS = 1_000;

const Counts = z.object({
  conversations: z.number(),
  messages: z.number(),
  idempotencyRecords: z.number(),
  readCursors: z.number(),
  deliveryCursors: z.number(),
  deskRecords: z.number(),
  ratings: z.number(),
  attachments: z.number(),
});
/** A process's answer with its share of an erasure (here and on the internal channel). */
export const ShareAnswer = z.object({ deleted: Counts, devicesClosed: z.number() });
const ErrorAnswer = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

/** Asks the sibling at `http` for its share; its refusal comes back as its own error (OWNER_UNAVAILABLE, say). */
export async function eraseAtSibling(processId: string, http: string, tenant: string, customer: string, merchants: readonly string[], adminToken: string): Promise<LocalErasure> {
  const url = `${http}/v1/admin/tenants/${encodeURIComponent(tenant)}/customers/${encodeURIComponent(customer)}?merchants=${encodeURIComponent(merchants.join(','))}`;
  let response: Response;
  try {
    response = await fetch(url, { method: 'DELETE', headers: { authorization: `Bearer ${adminToken}`, [RELAYED_BY_HEADER]: processId }, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    throw unreachable(http, error instanceof Error ? error.message : String(error));
  }
  const body: unknown = await response.json().catch(() => undefined);
  if (response.status === 200) {
    const share = ShareAnswer.safeParse(body);
    if (share.success) return share.data;
    throw unreachable(http, 'its answer is not a share of an erasure');
  }
  const refusal = ErrorAnswer.safeParse(body);
  const code = refusal.success ? Object.values(ErrorCode).find((known) => known === refusal.data.error.code) : undefined;
  if (code === undefined || !refusal.success) throw unreachable(http, `it answered ${response.status}`);
  throw new CellError(code, `another process of this cell refused its share of the erasure: ${refusal.data.error.message}`, code === ErrorCode.OwnerUnavailable ? { retryAfterMs: RETRY_MS } : undefined);
}

function unreachable(http: string, why: string): CellError {
  return new CellError(ErrorCode.OwnerUnavailable, `the process of this cell at ${http} could not erase its share of the customer's conversations (${why}); erase again`, { retryAfterMs: RETRY_MS });
}
