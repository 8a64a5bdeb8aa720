/**
 * The key layout of a cell's store. Every key starts with a one-letter table and the tenant, so
 * one tenant's data can never be read through another tenant's key. Identifiers never contain
 * '/', so '/' separates fields unambiguously; sequence numbers are zero-padded to sort as
 * strings. All keys are ASCII (stores compare bytes or UTF-16 units; both agree on ASCII).
 *
 *   m/<tenant>/<conv>/<seq>              a message (JSON)
 *   i/<tenant>/<conv>/<party>/<cmid>     idempotency: the seq a sender's client message id got
 *   r/<tenant>/<conv>/<party>            a party's read cursor in a conversation
 *   d/<tenant>/<party>/<device>/<conv>   a device's delivery cursor in a conversation
 *   uc/<tenant>/<customer>/<conv>        index: a customer's conversations
 *   mc/<tenant>/<merchant>/<conv>        index: a merchant's conversations
 *   k/<tenant>/<merchant>/<table>/...    the merchant's desk: agents, consultations, queues (cell/desk);
 *                                        everything under it travels with the merchant when it moves
 *   k/<tenant>/<merchant>/refresh/<hash> a refresh token of an agent's login or a guest, by the SHA-256
 *                                        of its secret: {family, expiresAtMs} (cell/access/refresh-tokens.ts)
 *   k/<tenant>/<merchant>/session/<family> a login or guest (a family of refresh tokens): whom it is
 *                                        for and the hash of its current token
 *   fb/<tenant>/<id>                     an attachment's content, by SHA-256 (hex) of its bytes: its
 *                                        meta (JSON: type, bytes, chunks, createdAtMs)...
 *   fb/<tenant>/<id>/<chunk>             ...and its bytes, base64, in chunks of at most 256 KiB
 *   fa/<tenant>/<conv>/<id>              an attachment uploaded to a conversation (JSON: name, type,
 *                                        bytes, from): what lets the conversation's parties read it
 *   fx/<tenant>/<id>/<conv>              index: the conversations that reference an attachment
 *   t/<tenant>                           a tenant created through the admin API (JSON: name, origins, secrets,
 *                                        settings; cell/tenant-catalogue.ts); config-file tenants have none
 *   t/<tenant>/<merchant>                a merchant created through the admin API (JSON: name); travels with
 *                                        the merchant when it moves, and so does its tenant's record
 *   v/layout                             the layout version of the keys above (key-layout.ts)
 *   audit/<ms>/<counter>                 the cell's audit log of admin actions (cell/audit-log.ts)
 *
 * `<party>` is a user's whole identity inside the tenant (principal.ts: `c:<user>` or
 * `a:<merchant>:<user>`), never the bare user id, which customers and agents may share.
 */
const SEQ_DIGITS = 16;
/** Digits of an attachment's chunk index (a chunk is 256 KiB: far more than any size limit). */
const CHUNK_DIGITS = 6;
/** Sorts after every character used in keys, to close a prefix range. */
const PREFIX_END = '\x7f';

export function encodeSeq(seq: number): string {
  return seq.toString().padStart(SEQ_DIGITS, '0');
}

export interface KeyRange {
  gte: string;
  lt: string;
}

export function prefixRange(prefix: string): KeyRange {
  return { gte: prefix, lt: prefix + PREFIX_END };
}

export const keys = {
  message: (tenant: string, conv: string, seq: number) => `m/${tenant}/${conv}/${encodeSeq(seq)}`,
  /** Messages with from <= seq < to. */
  messageRange: (tenant: string, conv: string, fromSeq: number, toSeq: number): KeyRange => ({
    gte: `m/${tenant}/${conv}/${encodeSeq(fromSeq)}`,
    lt: `m/${tenant}/${conv}/${encodeSeq(toSeq)}`,
  }),
  allMessages: (tenant: string, conv: string) => prefixRange(`m/${tenant}/${conv}/`),
  clientMessageId: (tenant: string, conv: string, senderParty: string, cmid: string) =>
    `i/${tenant}/${conv}/${senderParty}/${encodeURIComponent(cmid)}`,
  readCursor: (tenant: string, conv: string, party: string) => `r/${tenant}/${conv}/${party}`,
  readCursors: (tenant: string, conv: string) => prefixRange(`r/${tenant}/${conv}/`),
  deliveryCursor: (tenant: string, party: string, device: string, conv: string) => `d/${tenant}/${party}/${device}/${conv}`,
  deliveryCursors: (tenant: string, party: string, device: string) => prefixRange(`d/${tenant}/${party}/${device}/`),
  customerConversation: (tenant: string, customer: string, conv: string) => `uc/${tenant}/${customer}/${conv}`,
  customerConversations: (tenant: string, customer: string) => prefixRange(`uc/${tenant}/${customer}/`),
  merchantConversation: (tenant: string, merchant: string, conv: string) => `mc/${tenant}/${merchant}/${conv}`,
  merchantConversations: (tenant: string, merchant: string) => prefixRange(`mc/${tenant}/${merchant}/`),
  /** One table of a merchant's desk (`agent`, `consultation`...): a key under it is `<prefix><id>`. */
  merchantDeskTable: (tenant: string, merchant: string, table: string) => prefixRange(`k/${tenant}/${merchant}/${table}/`),
  /** Everything of a merchant's desk, which a move copies whole. */
  merchantDesk: (tenant: string, merchant: string) => prefixRange(`k/${tenant}/${merchant}/`),
  /** An attachment's meta; its chunks follow under `attachmentChunks`. */
  attachmentBlob: (tenant: string, id: string) => `fb/${tenant}/${id}`,
  attachmentChunk: (tenant: string, id: string, index: number) => `fb/${tenant}/${id}/${index.toString().padStart(CHUNK_DIGITS, '0')}`,
  attachmentChunks: (tenant: string, id: string) => prefixRange(`fb/${tenant}/${id}/`),
  attachmentReference: (tenant: string, conv: string, id: string) => `fa/${tenant}/${conv}/${id}`,
  attachmentReferences: (tenant: string, conv: string) => prefixRange(`fa/${tenant}/${conv}/`),
  attachmentReferrer: (tenant: string, id: string, conv: string) => `fx/${tenant}/${id}/${conv}`,
  attachmentReferrers: (tenant: string, id: string) => prefixRange(`fx/${tenant}/${id}/`),
  /** A runtime tenant's record; its runtime merchants follow under `tenantMerchants`. */
  tenantRecord: (tenant: string) => `t/${tenant}`,
  tenantMerchant: (tenant: string, merchant: string) => `t/${tenant}/${merchant}`,
  tenantMerchants: (tenant: string) => prefixRange(`t/${tenant}/`),
  /** Every runtime tenant and merchant of the cell. */
  catalogue: () => prefixRange('t/'),
  layoutVersion: () => 'v/layout',
  /** An entry of the audit log: by time, then by a counter that only grows, so order is stable. */
  auditEntry: (atMs: number, counter: number) => `audit/${encodeSeq(atMs)}/${encodeSeq(counter)}`,
  auditLog: () => prefixRange('audit/'),
};

/** The last '/'-separated field of a key (the conversation of an index or cursor key, a user...). */
export function lastField(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}
