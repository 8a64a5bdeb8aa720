import { z } from 'zod';

/**
 * The wire format of user location (location.ts): a query broadcast on a gossipsub topic,
 * replies and notices as request/response protocols. JSON, UTF-8; unknown fields are ignored,
 * so a later minor version may add some.
 */

/** The gossipsub topic of location queries. */
export const LOCATE_TOPIC = 'cellmesh/locate/v1';
/** The request/response protocol on which holding cells answer the asker. */
export const LOCATE_REPLY_PROTOCOL = '/cellmesh/locate-reply/1.0.0';
/** The request/response protocol on which a cell tells watchers that a watched user connected to it. */
export const LOCATE_NOTICE_PROTOCOL = '/cellmesh/locate-notice/1.0.0';

/** Most users a query or a reply may carry on the wire; larger messages are rejected. */
export const LOCATE_WIRE_MAX_USERS = 1_024;
/** Largest query or reply accepted, in bytes, checked before parsing. */
export const LOCATE_WIRE_MAX_BYTES = 256 * 1024;
/** Longest watch a query may ask for; it bounds how long an asker may serve a cached answer. */
export const LOCATE_WIRE_MAX_WATCH_MS = 10 * 60_000;

/** A tenant or user id. */
export const IDENTIFIER = /^[A-Za-z0-9_.-]{1,64}$/;
const identifier = z.string().regex(IDENTIFIER);
/** Cell ids come from configuration; bounded and printable, nothing more is assumed here. */
const cellIdSchema = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/);
const queryIdSchema = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/);
const userRef = z.object({ tenant: identifier, userId: identifier });

/**
 * `cellmesh/locate/v1`: {queryId, fromCellId, users:[{tenant,userId}], watchMs?}. `watchMs` asks
 * every cell that hears it to tell the asker, for that long, when a device of one of the users
 * connects there; a query without it (from a cell of an earlier version) sets no watch.
 */
export const LocateQuery = z.object({
  queryId: queryIdSchema,
  fromCellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
  watchMs: z.number().int().min(0).max(LOCATE_WIRE_MAX_WATCH_MS).optional(),
});
export type LocateQuery = z.infer<typeof LocateQuery>;

/** `/cellmesh/locate-reply/1.0.0` request: {queryId, cellId, users:[{tenant,userId}]}, the users of the query held by `cellId`. */
export const LocateReply = z.object({
  queryId: queryIdSchema,
  cellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
});
export type LocateReply = z.infer<typeof LocateReply>;

/** `/cellmesh/locate-notice/1.0.0` request: {cellId, users:[{tenant,userId}]}, watched users a device of which just connected to `cellId`. */
export const LocateNotice = z.object({
  cellId: cellIdSchema,
  users: z.array(userRef).min(1).max(LOCATE_WIRE_MAX_USERS),
});
export type LocateNotice = z.infer<typeof LocateNotice>;

/** The key of a user in the cache, the watches and the queries in flight. */
export function userKey(tenant: string, userId: string): string {
  return `${tenant}/${userId}`;
}
