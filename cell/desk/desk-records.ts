import { z } from 'zod';
import type { StoreOp } from '../../platform/store/store.js';
import { keys } from '../messaging/keys.js';
import { AGENT_STATUSES, IDENTIFIER_PATTERN, MAX_NOTE_CHARS, type AgentStatus } from '../protocol/frames.js';

/**
 * What a merchant's desk keeps in the store, under the merchant's desk range (keys.ts
 * `k/<tenant>/<merchant>/...`, which a move copies whole):
 *
 *   consultation/<customer>    the customer's open consultation (at most one per conversation)
 *   last/<customer>            the customer's last closed consultation and its agent (sticky rule, rating)
 *   status/<agent>             the status the agent chose (online, busy, away), applied when it connects
 *   rating/<consultation>      the customer's rating of a closed consultation
 *
 * A consultation record is written in the same store batch as the message that changes it (the
 * customer's first message, or the desk's system message), so the two never disagree.
 */
const identifier = z.string().regex(IDENTIFIER_PATTERN);
/** Ms since the epoch as the clock port gives them: not always whole (the simulator's virtual clock is not). */
const time = z.number().min(0);

export const ConsultationRecord = z.object({
  id: identifier,
  customer: identifier,
  group: identifier,
  state: z.enum(['waiting', 'assigned']),
  agent: identifier.optional(),
  openedAtMs: time,
  /** When it joined its queue: queues are restored in this order. */
  queuedAtMs: time,
  /** Waiting because its agent was released: restored ahead of the queue, as it waited before. */
  putBack: z.literal(true).optional(),
  assignedAtMs: time.optional(),
  /** When an agent first took it (time to first assignment); kept through transfers and releases. */
  firstAssignedAtMs: time.optional(),
});
export type ConsultationRecord = z.infer<typeof ConsultationRecord>;

export const LastConsultation = z.object({ consultation: identifier, agent: identifier.optional(), closedAtMs: time, rated: z.boolean().default(false) });
export type LastConsultation = z.infer<typeof LastConsultation>;

export const Rating = z.object({
  consultation: identifier,
  customer: identifier,
  agent: identifier.optional(),
  score: z.number().int().min(1).max(5),
  comment: z.string().max(MAX_NOTE_CHARS).optional(),
  atMs: time,
});
export type Rating = z.infer<typeof Rating>;

const ChosenStatus = z.enum(AGENT_STATUSES);

export const deskKeys = {
  consultation: (tenant: string, merchant: string, customer: string) => `${keys.merchantDeskTable(tenant, merchant, 'consultation').gte}${customer}`,
  consultations: (tenant: string, merchant: string) => keys.merchantDeskTable(tenant, merchant, 'consultation'),
  last: (tenant: string, merchant: string, customer: string) => `${keys.merchantDeskTable(tenant, merchant, 'last').gte}${customer}`,
  lasts: (tenant: string, merchant: string) => keys.merchantDeskTable(tenant, merchant, 'last'),
  status: (tenant: string, merchant: string, agent: string) => `${keys.merchantDeskTable(tenant, merchant, 'status').gte}${agent}`,
  statuses: (tenant: string, merchant: string) => keys.merchantDeskTable(tenant, merchant, 'status'),
  rating: (tenant: string, merchant: string, consultation: string) => `${keys.merchantDeskTable(tenant, merchant, 'rating').gte}${consultation}`,
};

export function putRecord(tenant: string, merchant: string, record: ConsultationRecord): StoreOp {
  return { type: 'put', key: deskKeys.consultation(tenant, merchant, record.customer), value: JSON.stringify(record) };
}

export function deleteRecord(tenant: string, merchant: string, customer: string): StoreOp {
  return { type: 'del', key: deskKeys.consultation(tenant, merchant, customer) };
}

export function putLast(tenant: string, merchant: string, customer: string, last: LastConsultation): StoreOp {
  return { type: 'put', key: deskKeys.last(tenant, merchant, customer), value: JSON.stringify(last) };
}

/** Parses a stored value with `schema`; a value that does not parse is a corrupt store, named with its key. */
export function parseStored<Schema extends z.ZodType>(schema: Schema, key: string, value: string): z.output<Schema> {
  const result = schema.safeParse(JSON.parse(value));
  if (!result.success) throw new Error(`the desk's entry ${key} is corrupt: ${result.error.issues[0]?.message ?? 'invalid'}`);
  return result.data;
}

/** A stored status the agent chose (a JSON string). */
export function parseChosenStatus(key: string, value: string): AgentStatus {
  return parseStored(ChosenStatus, key, value);
}
