import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { stringHash32 } from '../../platform/string-hash.js';
import { clusterErrorCode, type ClusterPort, type JsonValue } from '../messaging/cluster-port.js';
import type { LocalErasure } from '../customer-data.js';
import { IDENTIFIER_PATTERN, parseConversationId } from '../protocol/frames.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ProcessClusterPort } from '../processes/process-cluster-port.js';
import { LocationHint, type HomesSnapshot } from '../processes/speaker-channel.js';
import { parseJsonBody, parseWith, type HttpRequestData } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/** The headers of every internal call: the cell's secret, and the caller's process lease ("<id> <token>"). */
export const CELL_SECRET_HEADER = 'x-cellmesh-cell-secret';
export const PROCESS_HEADER = 'x-cellmesh-process';

/** The paths of the internal channel (cell/processes/speaker-channel.ts). */
export const INTERNAL_PATHS = {
  locate: '/v1/internal/speaker/locate',
  hint: '/v1/internal/speaker/hint',
  enqueue: '/v1/internal/speaker/enqueue',
  request: '/v1/internal/speaker/request',
  homes: '/v1/internal/speaker/homes',
  forward: '/v1/internal/owner/forward',
  serve: '/v1/internal/owner/request',
  localUsers: '/v1/internal/owner/local-users',
  eraseShare: '/v1/internal/owner/erase',
} as const;

/** Largest body of an internal call: a batch of entries, or a request to another cell, with room to spare. */
const MAX_INTERNAL_BODY_BYTES = 16 * 1024 * 1024;

export interface InternalRoutesComponents {
  /** The cell's secret, shared by its processes through its Redis. */
  readonly secret: string;
  /** True when `processId` holds its lease with `token` now: a stale process is refused. */
  isLive(processId: string, token: number): Promise<boolean>;
  /** This process's cluster port: its core's handlers, and whether it speaks. */
  readonly port: ProcessClusterPort;
  /** The mesh side while this process speaks for the cell; undefined otherwise. */
  speaker(): { readonly port: ClusterPort; homes(): HomesSnapshot } | undefined;
  /** True when this process serves `merchant` now (it owns it, or the merchant is not the cell's and this process speaks). */
  servesHere(tenant: string, merchant: string): boolean;
  /** Which of `users` hold devices at this process. */
  localUsers(tenant: string, users: readonly string[], askerCellId: string): readonly string[];
  /** This process's share of an erasure another process of the cell runs (CustomerErasure.eraseShare). */
  eraseShare(tenant: string, customer: string, merchants: readonly string[]): Promise<LocalErasure>;
}

const entry = z.object({ key: z.string(), payload: z.custom<JsonValue>((value) => value !== undefined) });
const EnqueueBody = z.object({ destination: z.string(), entries: z.array(entry).min(1) });
const RequestBody = z.object({ cellId: z.string(), protocol: z.string(), data: z.string(), timeoutMs: z.number().int().positive().max(600_000) });
const LocateBody = z.object({ tenant: z.string(), user: z.string() });
const ForwardBody = z.object({ source: z.string(), entries: z.array(entry.extend({ seq: z.number().int() })) });
const ServeBody = z.object({ from: z.string(), protocol: z.string(), data: z.string() });
const LocalUsersBody = z.object({ tenant: z.string(), users: z.array(z.string()).max(10_000), asker: z.string() });
const EraseShareBody = z.object({ tenant: z.string().regex(IDENTIFIER_PATTERN), customer: z.string().regex(IDENTIFIER_PATTERN), merchants: z.array(z.string().regex(IDENTIFIER_PATTERN)).max(10_000) });

/**
 * `/v1/internal/...`: the channel between the processes of a cell of several processes in a mesh
 * (docs/operations.md, "In a mesh: owners spread, one speaker"). `speaker/*` serves the other
 * processes' cores their way to the mesh (at the speaker only; elsewhere OWNER_UNAVAILABLE, and
 * the caller finds the new speaker); `owner/*` serves the speaker's dispatch and its erasures. Every call needs the
 * cell's secret (UNAUTHENTICATED) and a caller whose lease holds the token it names
 * (PROCESS_FENCED): a process that lost its lease must not enqueue, nor apply entries.
 */
export function internalRoutes(components: InternalRoutesComponents): RouteModule {
  const secret = Buffer.from(components.secret);
  const authorize = async (request: HttpRequestData): Promise<void> => {
    const given = Buffer.from(request.headers[CELL_SECRET_HEADER] ?? '');
    if (given.length !== secret.length || !timingSafeEqual(given, secret)) throw new CellError(ErrorCode.Unauthenticated, "an internal call needs the cell's secret");
    const [processId, token] = (request.headers[PROCESS_HEADER] ?? '').split(' ');
    const tokenNumber = Number(token);
    if (processId === undefined || processId === '' || !Number.isSafeInteger(tokenNumber) || !(await components.isLive(processId, tokenNumber))) {
      throw new CellError(ErrorCode.ProcessFenced, `process ${processId ?? '?'} does not hold its lease with token ${token ?? '?'}: a stale process is refused`);
    }
  };
  const atSpeaker = (): { readonly port: ClusterPort; homes(): HomesSnapshot } => {
    const speaker = components.speaker();
    if (speaker === undefined) throw new CellError(ErrorCode.OwnerUnavailable, 'this process does not speak for the cell (any more); ask the speaker', { retryAfterMs: 500 });
    return speaker;
  };
  const options = { maxBodyBytes: MAX_INTERNAL_BODY_BYTES, headers: [CELL_SECRET_HEADER, PROCESS_HEADER] };
  const body = <Schema extends z.ZodType>(schema: Schema, request: HttpRequestData): z.output<Schema> => parseWith(schema, parseJsonBody(request.body));
  return (router) => {
    const post = (path: string, handler: (request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void => {
      router.handle('post', path, async (request) => {
        await authorize(request);
        return handler(request);
      }, options);
    };
    post(INTERNAL_PATHS.locate, async (request) => {
      const { tenant, user } = body(LocateBody, request);
      return { status: 200, body: { cells: await atSpeaker().port.locate(tenant, user) } };
    });
    post(INTERNAL_PATHS.hint, async (request) => {
      const hint = body(LocationHint, request);
      const { port } = atSpeaker();
      if (hint.kind === 'remember') port.remember(hint.tenant, hint.user, hint.cellId);
      else if (hint.kind === 'forget') port.forget(hint.tenant, hint.user, hint.cellId);
      else if (hint.kind === 'invalidate') port.invalidate(hint.tenant, hint.user);
      else port.userArrived(hint.tenant, hint.user);
      return { status: 200, body: {} };
    });
    post(INTERNAL_PATHS.enqueue, async (request) => {
      const { destination, entries } = body(EnqueueBody, request);
      const { port } = atSpeaker();
      try {
        await port.enqueue(destination, entries);
      } catch (error) {
        // The outbox's own code (OUTBOX_FULL...) goes back as it is: the caller's core matches on it.
        return { status: 503, body: { error: { code: clusterErrorCode(error) ?? 'OUTBOX_STORE_FAILED', message: error instanceof Error ? error.message : String(error) } } };
      }
      return { status: 200, body: {} };
    });
    post(INTERNAL_PATHS.request, async (request) => {
      const { cellId, protocol, data, timeoutMs } = body(RequestBody, request);
      const answer = await atSpeaker().port.request(cellId, protocol, Buffer.from(data, 'base64'), { timeoutMs });
      return { status: 200, body: { data: Buffer.from(answer).toString('base64') } };
    });
    router.handle('get', INTERNAL_PATHS.homes, async (request) => {
      await authorize(request);
      const snapshot = atSpeaker().homes();
      const digest = stringHash32(JSON.stringify(snapshot)).toString(16);
      return { status: 200, body: digest === request.query.get('have') ? { digest } : { digest, snapshot } };
    }, options);
    post(INTERNAL_PATHS.forward, async (request) => {
      const { source, entries } = body(ForwardBody, request);
      for (const forwarded of entries) {
        const merchant = merchantOfPayload(forwarded.payload);
        if (merchant !== undefined && !components.servesHere(merchant.tenant, merchant.merchant)) {
          throw new CellError(ErrorCode.OwnerUnavailable, `this process does not own merchant ${merchant.merchant} (any more); the speaker retries`, { retryAfterMs: 500 });
        }
      }
      await components.port.applyForwarded(source, entries);
      return { status: 200, body: {} };
    });
    post(INTERNAL_PATHS.serve, async (request) => {
      const { from, protocol, data } = body(ServeBody, request);
      const answer = await components.port.serve(from, protocol, Buffer.from(data, 'base64'));
      return { status: 200, body: { data: Buffer.from(answer).toString('base64') } };
    });
    post(INTERNAL_PATHS.localUsers, async (request) => {
      const { tenant, users, asker } = body(LocalUsersBody, request);
      return { status: 200, body: { users: components.localUsers(tenant, users, asker) } };
    });
    // The speaker applies an erasure another cell asked (no admin token travels with it): each owner erases its share.
    post(INTERNAL_PATHS.eraseShare, async (request) => {
      const { tenant, customer, merchants } = body(EraseShareBody, request);
      return { status: 200, body: await components.eraseShare(tenant, customer, merchants) };
    });
  };
}

/** The tenant and merchant a forwarded conversation entry is about (a `gone` or an erasure names none). */
function merchantOfPayload(payload: JsonValue): { tenant: string; merchant: string } | undefined {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined;
  const message = payload['message'];
  const conv = typeof payload['conv'] === 'string' ? payload['conv'] : typeof message === 'object' && message !== null && !Array.isArray(message) ? message['conv'] : undefined;
  const tenant = payload['tenant'];
  if (typeof conv !== 'string' || typeof tenant !== 'string') return undefined;
  const merchant = parseConversationId(conv)?.merchant;
  return merchant === undefined ? undefined : { tenant, merchant };
}
