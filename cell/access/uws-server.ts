import uWS from 'uWebSockets.js';
import { recordOutcome, requestDetails, type AuditLog } from '../audit-log.js';
import type { CellCore } from '../cell-core.js';
import type { LimitsConfig } from '../settings.js';
import type { Logger } from '../../platform/logger.js';
import type { MetricsExposition } from '../../platform/metrics.js';
import type { DeviceConnection, DevicePort } from '../messaging/device.js';
import type { CellMetrics } from '../metrics.js';
import { CellError, CloseCode, ErrorCode, inBandRejectionCloseCodes } from '../protocol/errors.js';
import { IDENTIFIER_PATTERN, PROTOCOL_VERSION, SUBPROTOCOL_V1, parseConversationId } from '../protocol/frames.js';
import { HttpCapacityBody, HttpCellList, HttpMoveBody, HttpPlaceBody, HttpHistoryQuery, HttpLocateQuery, HttpReadBody, HttpSendBody } from '../protocol/http.js';
import type { Identity } from './tokens.js';
import type { Readiness } from './probes.js';
import type { LivenessVerdict } from '../../platform/event-loop-watchdog.js';
import { errorFrameOf } from '../routing/merchant-redirects.js';
import { forwardToOwner } from './sibling-forwarding.js';
import { RELAYED_BY_HEADER, SiblingLink, type RelayRequest, type SiblingAccess } from './sibling-relay.js';
import { isOwnOrigin } from './own-origin.js';
import { HttpRouter, asCellError, bearerToken, parseJsonBody, parseWith, requireAdmin, respondJson, watchAbort, writeError, type HttpMethod, type HttpRequestData } from './http-router.js';

export interface AccessServerOptions {
  core: CellCore;
  metrics: CellMetrics;
  /** What `GET /v1/metrics` answers: the text of every metric of the cell's metrics port. */
  exposition: MetricsExposition;
  logger: Logger;
  limits: LimitsConfig;
  host: string;
  port: number;
  /** Whether the cell takes traffic (`/v1/readyz`): serving its merchants, not starting nor shutting down. */
  readiness: () => Readiness;
  /** Whether the process is live (`/v1/healthz`): its event loop is not stuck. Live when absent. */
  liveness?: (() => LivenessVerdict) | undefined;
  /** The cluster API of a cell in a mesh; a standalone cell answers MESH_DISABLED. */
  cluster?: ClusterApi | undefined;
  /**
   * Bearer tokens of the admin API (`/v1/admin/...`): the configured one and any accepted during
   * a rotation. Empty: the admin API refuses everything.
   */
  adminTokens: readonly string[];
  /** Where the cluster's admin actions (moves, placements, capacity, blocks) are recorded with their outcome. */
  audit: AuditLog;
  /** Route modules of other concerns (people, logins, attachments), registered before the catch-all. */
  routeModules?: readonly RouteModule[] | undefined;
  /** A cell of several processes: devices of a merchant a sibling owns are relayed to it (sibling-relay.ts). */
  siblings?: SiblingAccess | undefined;
}

/** Registers one concern's HTTP routes. */
export type RouteModule = (router: HttpRouter) => void;

/**
 * What the HTTP API needs from the mesh, as plain JSON-able values: the access layer never sees
 * a mesh type.
 */
export interface ClusterApi {
  /** This cell's view of the cluster: cells, liveness, merchants, conflicts. */
  view(): object;
  /** The cells holding devices of a user (this one included), by the mesh's location broadcast. */
  locate(tenant: string, user: string): Promise<object>;
  /** Moves a merchant this cell hosts to cell `to` (conversations, history, cursors); answers when routing switched. */
  moveMerchant(tenant: string, merchant: string, to: string): Promise<object>;
  /** Takes a merchant in on an operator's signed placement (cell/merchant-placement.ts). */
  placeMerchant(placement: { tenant: string; merchant: string; cell: string; epoch: number; key: string; signature: string }): Promise<object>;
  /** Sets the device capacity this cell gossips (routers weigh cells by it); answers the new record version. */
  setCapacity(maxDevices: number): Promise<object>;
  /** Simulates a partition from this side: drops and refuses the libp2p connections of these cells. */
  block(cellIds: readonly string[]): Promise<object>;
  unblock(cellIds: readonly string[]): Promise<object>;
}

type SocketData =
  | { identity: Identity; routedFor: string | undefined; port?: UwsDevicePort; connection?: DeviceConnection }
  /** An upgrade refused in band, for a browser: one error frame, then the close code. */
  | { rejection: CellError; closeCode: number }
  /** A device relayed to the sibling process that owns its merchant. */
  | { relay: SiblingLink };

/** How long a relayed device's sibling may take to accept it, and when a refused one should retry. */
const RELAY_CONNECT_TIMEOUT_MS = 5_000;
const RELAY_RETRY_MS = 500;

/** The hard transport limit is this many times the frame limit; beyond it uWS drops the connection. */
const HARD_PAYLOAD_FACTOR = 16;

/** The transport settings of a device's WebSocket, the same on every process that accepts devices. */
export function deviceSocketSettings(limits: LimitsConfig): Pick<uWS.WebSocketBehavior<unknown>, 'maxPayloadLength' | 'idleTimeout' | 'sendPingsAutomatically' | 'maxBackpressure' | 'closeOnBackpressureLimit'> {
  return {
    maxPayloadLength: limits.maxFrameBytes * HARD_PAYLOAD_FACTOR,
    idleTimeout: limits.idleTimeoutSeconds,
    sendPingsAutomatically: true,
    // Our own limit (checked after every send) closes slow devices first; uWS must never
    // silently drop a frame, which would break per-device order.
    maxBackpressure: limits.maxBackpressureBytes * 4 + limits.maxFrameBytes * HARD_PAYLOAD_FACTOR,
    closeOnBackpressureLimit: 0,
  };
}

/**
 * A device port over one uWS WebSocket; guards against use after close, which uWS forbids.
 * Frames sent in one turn of the event loop (a fan-out, a page of catch-up) are written
 * together inside one cork, so a busy device costs one syscall per turn, not one per frame.
 */
class UwsDevicePort implements DevicePort {
  closed = false;
  onDrained: (() => void) | undefined;
  private pending: string[] = [];
  private pendingBytes = 0;

  constructor(private readonly socket: uWS.WebSocket<SocketData>) {}

  send(text: string): void {
    if (this.closed) return;
    if (this.pending.length === 0) queueMicrotask(this.flush);
    this.pending.push(text);
    this.pendingBytes += text.length;
  }

  bufferedBytes(): number {
    return this.closed ? 0 : this.socket.getBufferedAmount() + this.pendingBytes;
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    // Frames queued before the close (a last `sent`, say) still go out ahead of it.
    this.flush();
    this.closed = true;
    this.socket.end(code, reason);
  }

  private readonly flush = (): void => {
    if (this.closed || this.pending.length === 0) return;
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.socket.cork(() => {
      for (const frame of frames) this.socket.send(frame, false, false);
    });
    // uWS reports a drain only after backpressure built up; a flush the network took at once
    // is a drain too.
    if (this.socket.getBufferedAmount() === 0) this.onDrained?.();
  };
}

/**
 * The access layer: WebSocket and HTTP over uWebSockets.js. It only turns connections and
 * requests into calls of the core; all rules live there.
 */
export class AccessServer {
  private listenSocket: uWS.us_listen_socket | undefined;
  private readonly app: uWS.TemplatedApp;
  /** Devices relayed to siblings: ended when this process stops accepting (their state lives at the sibling). */
  private readonly relays = new Set<SiblingLink>();
  /** Where every HTTP route is registered; route modules of other concerns register here too. */
  readonly router: HttpRouter;
  boundPort = 0;

  constructor(private readonly options: AccessServerOptions) {
    this.app = uWS.App();
    this.router = new HttpRouter(this.app, { logger: options.logger, metrics: options.metrics, maxBodyBytes: options.limits.maxFrameBytes });
    const { siblings } = options;
    if (siblings !== undefined) this.router.forwardWith((pattern, request, context) => forwardToOwner(siblings, pattern, request, context));
    this.routeWebSocket();
    this.routeHttp();
  }

  /**
   * Listens without SO_REUSEPORT: a second cell started on a busy port must fail, not share it
   * with the first and get a share of its devices from the kernel.
   */
  async listen(): Promise<number> {
    const { host, port } = this.options;
    const listening = await listenExclusively(this.app, host, port);
    this.listenSocket = listening.socket;
    this.boundPort = listening.port;
    return this.boundPort;
  }

  /** Stops accepting connections; open sockets stay until the core closes them. */
  stopListening(): void {
    if (this.listenSocket !== undefined) {
      uWS.us_listen_socket_close(this.listenSocket);
      this.listenSocket = undefined;
    }
    for (const link of this.relays) link.shutDown();
  }

  private routeWebSocket(): void {
    const { core, limits, metrics, logger } = this.options;
    this.router.recordRoute('get', '/v1/ws');
    this.app.ws<SocketData>('/v1/ws', {
      ...deviceSocketSettings(limits),
      // Decided synchronously, inside uWS's callback: tokens verify without awaiting (tokens.ts).
      upgrade: (res, req, context) => {
        const token = req.getQuery('token') || bearerToken(req.getHeader('authorization'));
        const origin = req.getHeader('origin');
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');
        let protocol = '';
        try {
          protocol = negotiateProtocol(req.getHeader('sec-websocket-protocol'));
          const identity = core.authenticate(token || undefined);
          const routed = routedMerchant(req.getQuery('merchant'));
          const relay = this.relayOf(identity, routed, req, res);
          if (relay !== undefined) {
            this.relayUpgrade(res, context, relay, key, extensions);
            return;
          }
          // A page this cell served (/app/) is of its own origin; other pages need the tenant's allowed origins.
          const routedFor = core.admit(identity, origin === '' || isOwnOrigin(origin, req.getHeader('host')) ? undefined : origin, routed);
          res.upgrade<SocketData>({ identity, routedFor }, key, protocol, extensions, context);
        } catch (error) {
          const cellError = asCellError(error, logger);
          metrics.upgradesRejected.labels({ code: cellError.code }).inc();
          const closeCode = inBandRejectionCloseCodes[cellError.code];
          // A redirect is read in band by every client: its frame carries the new home.
          if (closeCode !== undefined && (origin !== '' || cellError.code === ErrorCode.MerchantElsewhere)) {
            res.upgrade<SocketData>({ rejection: cellError, closeCode }, key, protocol, extensions, context);
          } else {
            writeError(res, cellError);
          }
        }
      },
      open: (socket) => {
        const data = socket.getUserData();
        if ('relay' in data) {
          this.relays.add(data.relay);
          data.relay.attach(socket as uWS.WebSocket<unknown>);
          return;
        }
        if ('rejection' in data) {
          socket.send(JSON.stringify(errorFrameOf(data.rejection)));
          socket.end(data.closeCode, data.rejection.code);
          return;
        }
        data.port = new UwsDevicePort(socket);
        data.connection = core.connect(data.identity, data.port, data.routedFor);
      },
      message: (socket, message, isBinary) => {
        const data = socket.getUserData();
        if ('relay' in data) {
          data.relay.fromDevice(message, isBinary);
          return;
        }
        const connection = 'connection' in data ? data.connection : undefined;
        if (connection === undefined) return;
        if (isBinary) {
          core.refuse(connection, new CellError(ErrorCode.BinaryNotSupported, 'frames are JSON text; binary frames are not accepted'));
        } else if (message.byteLength > limits.maxFrameBytes) {
          core.refuse(
            connection,
            new CellError(ErrorCode.PayloadTooLarge, `frame of ${message.byteLength} bytes exceeds the limit of ${limits.maxFrameBytes}`),
          );
        } else {
          // The ArrayBuffer is only valid during this callback; decoding copies it.
          core.receive(connection, Buffer.from(message).toString('utf8'));
        }
      },
      drain: (socket) => {
        const data = socket.getUserData();
        if ('relay' in data) data.relay.deviceDrained();
        if ('port' in data) data.port?.onDrained?.();
      },
      close: (socket, code, message) => {
        const data = socket.getUserData();
        if ('relay' in data) {
          this.relays.delete(data.relay);
          data.relay.closedByDevice(code, Buffer.from(message).toString('utf8'));
          return;
        }
        if ('rejection' in data) return;
        if (data.port !== undefined) data.port.closed = true;
        if (data.connection !== undefined) core.disconnect(data.connection);
      },
    });
  }

  /**
   * The relay of a device whose merchant a sibling process owns; undefined when this process
   * serves it (no siblings, a merchant owned here, or a customer not routed for a merchant
   * outside a mesh; in a mesh such a customer goes to the speaker).
   * Reads everything it needs from `req` now: uWS invalidates it when the callback returns.
   */
  private relayOf(identity: Identity, routed: string | undefined, req: uWS.HttpRequest, res: uWS.HttpResponse): RelayRequest | undefined {
    const { siblings, core, limits } = this.options;
    const merchant = identity.merchant ?? routed;
    if (siblings === undefined) return undefined;
    const server = merchant === undefined ? siblings.speakerServer() : siblings.serverOf(identity.tenant, merchant);
    if (server.here) return undefined;
    // A sibling relayed it here on a view that is stale now: never relay twice, the client retries.
    if (req.getHeader(RELAYED_BY_HEADER) !== '') throw new CellError(ErrorCode.OwnerUnavailable, `merchant ${merchant} is changing owner; reconnect`, { retryAfterMs: RELAY_RETRY_MS });
    if (core.isDraining) throw new CellError(ErrorCode.ShuttingDown, 'the cell is shutting down; reconnect shortly');
    const query = req.getQuery();
    const headers: Record<string, string> = { [RELAYED_BY_HEADER]: siblings.processId };
    for (const name of ['authorization', 'origin', 'user-agent']) if (req.getHeader(name) !== '') headers[name] = req.getHeader(name);
    const forwarded = req.getHeader('x-forwarded-for');
    const client = Buffer.from(res.getRemoteAddressAsText()).toString('utf8');
    headers['x-forwarded-for'] = forwarded === '' ? client : `${forwarded}, ${client}`;
    const protocols = req.getHeader('sec-websocket-protocol').split(',').map((protocol) => protocol.trim()).filter((protocol) => protocol !== '');
    return { url: query === '' ? server.ws : `${server.ws}?${query}`, protocols, headers, maxBufferedBytes: limits.maxBackpressureBytes, connectTimeoutMs: RELAY_CONNECT_TIMEOUT_MS };
  }

  /** Dials the sibling first, then answers the device's upgrade as the sibling answered. */
  private relayUpgrade(res: uWS.HttpResponse, context: uWS.us_socket_context_t, request: RelayRequest, key: string, extensions: string): void {
    let aborted = false;
    res.onAborted(() => (aborted = true));
    const link = new SiblingLink(request);
    void link.dialled.then((dial) => {
      if (aborted) {
        link.closedByDevice(CloseCode.GoingAway, 'the device left before the relay opened');
        return;
      }
      res.cork(() => {
        if (dial.kind === 'open') res.upgrade<SocketData>({ relay: link }, key, dial.protocol, extensions, context);
        else if (dial.kind === 'refused') res.writeStatus(`${dial.status} ${dial.statusText}`).writeHeader('content-type', dial.contentType).end(dial.body);
        else writeError(res, new CellError(ErrorCode.OwnerUnavailable, `the process that owns this merchant cannot be reached (${dial.message}); retry`, { retryAfterMs: RELAY_RETRY_MS }));
      });
    });
  }

  private routeHttp(): void {
    const { core, exposition } = this.options;
    this.router.on('get', '/v1/healthz', (res) => {
      const verdict = this.options.liveness?.() ?? { live: true };
      if (verdict.live) respondJson(res, 200, { status: 'ok' });
      else respondJson(res, 503, { status: 'stalled', stalledMs: verdict.stalledMs });
    });
    this.router.on('get', '/v1/readyz', (res) => {
      const readiness = this.options.readiness();
      respondJson(res, readiness === 'ready' ? 200 : 503, { status: readiness });
    });
    this.router.on('get', '/v1/info', (res) =>
      respondJson(res, 200, { protocolVersions: [PROTOCOL_VERSION], subprotocols: [SUBPROTOCOL_V1], connections: core.presence.connections }),
    );
    this.router.on('get', '/v1/metrics', (res) => {
      const state = watchAbort(res);
      exposition.render().then(
        (text) => {
          if (state.aborted) return;
          res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', exposition.contentType).end(text));
        },
        (error: unknown) => !state.aborted && res.cork(() => writeError(res, asCellError(error, this.options.logger))),
      );
    });
    this.handle('get', '/v1/inbox', async (identity, request) => {
      const after = request.query.get('after') ?? undefined;
      if (after !== undefined && parseConversationId(after) === undefined) throw new CellError(ErrorCode.BadFrame, `after: '${after.slice(0, 200)}' is not a conversation id (<merchant>:<customer>)`);
      return { status: 200, body: await core.inbox(identity, undefined, after) };
    });
    this.handle('get', '/v1/presence', async (identity, request) => ({
      status: 200,
      body: core.presenceOf(identity, { users: listParameter(request.query, 'users'), merchants: listParameter(request.query, 'merchants') }),
    }));
    this.handle('get', '/v1/conversations/:conv/messages', async (identity, request) => {
      const query = parseWith(HttpHistoryQuery, { before: request.query.get('before') ?? undefined, limit: request.query.get('limit') ?? undefined });
      const conv = conversationParameter(request.parameters[0]);
      const page = await core.history(identity, { conv, before: query.before, limit: query.limit });
      return { status: 200, body: { conv, ...page } };
    });
    this.handle('post', '/v1/conversations/:conv/messages', async (identity, request) => {
      const body = parseWith(HttpSendBody, parseJsonBody(request.body));
      const conv = conversationParameter(request.parameters[0]);
      const { message, duplicate } = await core.send(identity, conv, body.cmid, body.body, { attachments: body.attachments });
      return { status: duplicate ? 200 : 201, body: { conv, cmid: message.cmid, seq: message.seq, ts: message.ts, duplicate } };
    });
    this.handle('post', '/v1/conversations/:conv/read', async (identity, request) => {
      const body = parseWith(HttpReadBody, parseJsonBody(request.body));
      const conv = conversationParameter(request.parameters[0]);
      await core.markRead(identity, conv, body.seq);
      return { status: 200, body: { conv, seq: body.seq } };
    });
    this.handleAdmin('get', '/v1/admin/cluster', async (cluster) => ({ status: 200, body: cluster.view() }));
    this.handleAdmin('get', '/v1/admin/locate', async (cluster, request) => {
      const query = parseWith(HttpLocateQuery, { tenant: request.query.get('tenant') ?? undefined, user: request.query.get('user') ?? undefined });
      return { status: 200, body: await cluster.locate(query.tenant, query.user) };
    });
    this.handleAdmin('post', '/v1/admin/merchants/move', async (cluster, request) => {
      const body = parseWith(HttpMoveBody, parseJsonBody(request.body));
      return { status: 200, body: await cluster.moveMerchant(body.tenant, body.merchant, body.to) };
    }, 'merchant.move');
    this.handleAdmin('post', '/v1/admin/merchants/place', async (cluster, request) => {
      const body = parseWith(HttpPlaceBody, parseJsonBody(request.body));
      return { status: 200, body: await cluster.placeMerchant(body) };
    }, 'merchant.place');
    this.handleAdmin('post', '/v1/admin/capacity', async (cluster, request) => {
      const body = parseWith(HttpCapacityBody, parseJsonBody(request.body));
      return { status: 200, body: await cluster.setCapacity(body.maxDevices) };
    }, 'cell.capacity');
    this.handleAdmin('post', '/v1/admin/mesh/block', async (cluster, request) => {
      const body = parseWith(HttpCellList, parseJsonBody(request.body));
      return { status: 200, body: await cluster.block(body.cells) };
    }, 'mesh.block');
    this.handleAdmin('post', '/v1/admin/mesh/unblock', async (cluster, request) => {
      const body = parseWith(HttpCellList, parseJsonBody(request.body));
      return { status: 200, body: await cluster.unblock(body.cells) };
    }, 'mesh.unblock');
    for (const register of this.options.routeModules ?? []) register(this.router);
    this.app.any('/*', (res, req) => {
      const method = req.getMethod().toUpperCase();
      const url = req.getUrl();
      const allowed = this.router.methodsAllowedOn(url);
      if (allowed.length === 0) {
        writeError(res, new CellError(ErrorCode.NotFound, `no route ${method} ${url}`));
      } else if (allowed.includes(method)) {
        // Only the WebSocket route lets a request of its own method through: one without the upgrade.
        writeError(res, new CellError(ErrorCode.UpgradeRequired, `${url} takes a WebSocket upgrade (Upgrade: websocket)`), { upgrade: 'websocket' });
      } else {
        writeError(res, new CellError(ErrorCode.MethodNotAllowed, `${method} is not allowed on ${url}; it takes ${allowed.join(', ')}`), { allow: allowed.join(', ') });
      }
    });
  }

  /** A JSON endpoint for devices: authenticated by the device's token. */
  private handle(method: HttpMethod, pattern: string, handler: (identity: Identity, request: HttpRequestData) => Promise<{ status: number; body: unknown }>): void {
    const { core } = this.options;
    this.router.handle(method, pattern, (request) => handler(core.authenticate(request.token || undefined), request));
  }

  /**
   * A JSON endpoint of the cluster's admin API: needs the configured admin token and a mesh. An
   * `action` changes something: once the token is accepted, it is recorded in the audit log with
   * what was asked (the body) and its outcome.
   */
  private handleAdmin(
    method: HttpMethod,
    pattern: string,
    handler: (cluster: ClusterApi, request: HttpRequestData) => Promise<{ status: number; body: unknown }>,
    action?: string,
  ): void {
    this.router.handle(method, pattern, async (request) => {
      const { adminTokens } = this.options;
      requireAdmin(request.token, adminTokens);
      const run = (): Promise<{ status: number; body: unknown }> => {
        const { cluster } = this.options;
        if (cluster === undefined) throw new CellError(ErrorCode.MeshDisabled, 'this cell runs standalone (no mesh section in its config)');
        return handler(cluster, request);
      };
      if (action === undefined) return run();
      const details = requestDetails(request.body);
      const field = (name: string): string | undefined => (typeof details?.[name] === 'string' ? (details[name] as string) : undefined);
      return recordOutcome(this.options.audit, { actor: 'admin', action, tenant: field('tenant'), merchant: field('merchant'), details }, run);
    });
  }
}

/**
 * Picks the subprotocol: a client that offers none gets version 1 (browsers that cannot set
 * it); a client that offers only versions we do not speak is refused with 426.
 */
export function negotiateProtocol(offered: string): string {
  const protocols = offered
    .split(',')
    .map((protocol) => protocol.trim())
    .filter((protocol) => protocol !== '');
  if (protocols.length === 0) return '';
  if (protocols.includes(SUBPROTOCOL_V1)) return SUBPROTOCOL_V1;
  throw new CellError(ErrorCode.UnsupportedVersion, `none of the offered subprotocols (${protocols.join(', ')}) is supported; this cell speaks ${SUBPROTOCOL_V1}`);
}

export function conversationParameter(raw: string | undefined): string {
  let conv: string;
  try {
    conv = decodeURIComponent(raw ?? '');
  } catch {
    // Bad percent-encoding (`%zz`, an escape of invalid UTF-8): a malformed conversation id.
    throw new CellError(ErrorCode.BadFrame, `'${raw ?? ''}' is not a conversation id: bad percent-encoding`);
  }
  if (parseConversationId(conv) === undefined) throw new CellError(ErrorCode.BadFrame, `'${conv}' is not a conversation id (<merchant>:<customer>)`);
  return conv;
}

/** The `merchant` a customer's WebSocket URL is routed for (docs/routing.md); undefined when absent. */
function routedMerchant(raw: string | undefined): string | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (!IDENTIFIER_PATTERN.test(raw)) throw new CellError(ErrorCode.BadFrame, `merchant: '${raw.slice(0, 64)}' is not a merchant id (1-64 characters of [A-Za-z0-9_.-])`);
  return raw;
}

function listParameter(query: URLSearchParams, name: string): string[] | undefined {
  const value = query.get(name);
  return value === null || value === '' ? undefined : value.split(',').slice(0, 100);
}

/** uWS's exclusive-port option; its typings declare it only for the listen form without a host. */
const LIBUS_LISTEN_EXCLUSIVE_PORT = (uWS as unknown as { LIBUS_LISTEN_EXCLUSIVE_PORT: number }).LIBUS_LISTEN_EXCLUSIVE_PORT;

/** Listens without SO_REUSEPORT: a second server on a busy port fails instead of sharing it. */
export function listenExclusively(app: uWS.TemplatedApp, host: string, port: number): Promise<{ socket: uWS.us_listen_socket; port: number }> {
  const listen = app.listen.bind(app) as unknown as (host: string, port: number, options: number, callback: (socket: uWS.us_listen_socket | false) => void) => void;
  return new Promise((resolve, reject) => {
    listen(host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, (socket) => {
      if (socket === false) reject(new Error(`cannot listen on ${host}:${port} (in use or not permitted)`));
      else resolve({ socket, port: uWS.us_socket_local_port(socket as unknown as uWS.us_socket) });
    });
  });
}

