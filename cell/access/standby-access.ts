import uWS from 'uWebSockets.js';
import type { Logger } from '../../platform/logger.js';
import type { MetricsExposition } from '../../platform/metrics.js';
import type { LimitsConfig } from '../settings.js';
import { CellError, CloseCode, ErrorCode } from '../protocol/errors.js';
import { respondJson, watchAbort, writeError } from './http-router.js';
import { RELAYED_BY_HEADER, SiblingLink, type RelayRequest } from './sibling-relay.js';
import { deviceSocketSettings, listenExclusively } from './uws-server.js';

/**
 * The access layer of a standby process of a cell in a mesh (docs/operations.md, "A cell of
 * several processes"): it runs no core, so every device and every HTTP call goes to the speaker,
 * the process that runs the cell. Devices are relayed as siblings relay them (sibling-relay.ts:
 * the speaker's own answer to the upgrade, then frames and close codes untouched); an HTTP call
 * is sent on as it came and answered with the speaker's status, headers and body. Only the
 * probes and the metrics are the standby's own. When it becomes the speaker, it stops: relayed
 * devices are closed with 1001 and reconnect, to the cell this process then runs.
 */
export interface StandbyAccessOptions {
  readonly host: string;
  readonly port: number;
  readonly logger: Logger;
  readonly limits: LimitsConfig;
  /** The largest HTTP body sent on (the largest attachment the cell takes, say). */
  readonly maxBodyBytes: number;
  /** What `GET /v1/metrics` answers: this process's own figures. */
  readonly exposition: MetricsExposition;
  /** The relay marker names this process. */
  readonly processId: string;
  /** Where the speaker is reached, as of the last round of the lease; undefined while none is known. */
  readonly speaker: () => { readonly ws: string; readonly http: string } | undefined;
}

const RELAY_CONNECT_TIMEOUT_MS = 5_000;
const FORWARD_TIMEOUT_MS = 10_000;
const RETRY_MS = 500;

/** Headers of one hop (RFC 9110 7.6.1) and those the HTTP client sets itself: never passed on. */
const HOP_HEADERS = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length', 'expect', 'date', 'content-encoding']);

type SocketData = { relay: SiblingLink };

export class StandbyAccess {
  private readonly app: uWS.TemplatedApp;
  private listenSocket: uWS.us_listen_socket | undefined;
  private readonly relays = new Set<SiblingLink>();
  private stopped = false;

  constructor(private readonly options: StandbyAccessOptions) {
    this.app = uWS.App();
    this.routeWebSocket();
    this.routeHttp();
  }

  /** Ready once the speaker is known, until it stops. */
  isReady(): boolean {
    return !this.stopped && this.options.speaker() !== undefined;
  }

  /** Listens exclusively (no SO_REUSEPORT), as the access server does; answers the port. */
  async listen(): Promise<number> {
    const listening = await listenExclusively(this.app, this.options.host, this.options.port);
    this.listenSocket = listening.socket;
    return listening.port;
  }

  /** Stops listening and ends every relayed device with 1001: they reconnect. */
  stop(): void {
    this.stopped = true;
    if (this.listenSocket !== undefined) {
      uWS.us_listen_socket_close(this.listenSocket);
      this.listenSocket = undefined;
    }
    for (const link of this.relays) link.shutDown();
    this.relays.clear();
  }

  private speakerOrRefuse(): { readonly ws: string; readonly http: string } {
    const speaker = this.options.speaker();
    if (this.stopped) throw new CellError(ErrorCode.ShuttingDown, 'this process is taking over the cell; reconnect shortly');
    if (speaker === undefined) throw new CellError(ErrorCode.OwnerUnavailable, 'no process of this cell speaks for it right now (failing over); retry', { retryAfterMs: RETRY_MS });
    return speaker;
  }

  private routeWebSocket(): void {
    const { limits } = this.options;
    this.app.ws<SocketData>('/v1/ws', {
      ...deviceSocketSettings(limits),
      upgrade: (res, req, context) => {
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');
        let request: RelayRequest;
        try {
          // A relayed device reached a standby: the view that sent it here is stale; the client retries.
          if (req.getHeader(RELAYED_BY_HEADER) !== '') throw new CellError(ErrorCode.OwnerUnavailable, 'this process does not run the cell; reconnect', { retryAfterMs: RETRY_MS });
          const speaker = this.speakerOrRefuse();
          const query = req.getQuery();
          const headers: Record<string, string> = { [RELAYED_BY_HEADER]: this.options.processId };
          for (const name of ['authorization', 'origin', 'user-agent']) if (req.getHeader(name) !== '') headers[name] = req.getHeader(name);
          headers['x-forwarded-for'] = forwardedFor(req.getHeader('x-forwarded-for'), res);
          const protocols = req.getHeader('sec-websocket-protocol').split(',').map((protocol) => protocol.trim()).filter((protocol) => protocol !== '');
          request = { url: query === '' ? speaker.ws : `${speaker.ws}?${query}`, protocols, headers, maxBufferedBytes: limits.maxBackpressureBytes, connectTimeoutMs: RELAY_CONNECT_TIMEOUT_MS };
        } catch (error) {
          writeError(res, error as CellError);
          return;
        }
        const state = watchAbort(res);
        const link = new SiblingLink(request);
        void link.dialled.then((dial) => {
          if (state.aborted) {
            link.closedByDevice(CloseCode.GoingAway, 'the device left before the relay opened');
            return;
          }
          res.cork(() => {
            if (dial.kind === 'open') res.upgrade<SocketData>({ relay: link }, key, dial.protocol, extensions, context);
            else if (dial.kind === 'refused') res.writeStatus(`${dial.status} ${dial.statusText}`).writeHeader('content-type', dial.contentType).end(dial.body);
            else writeError(res, new CellError(ErrorCode.OwnerUnavailable, `the process that speaks for this cell cannot be reached (${dial.message}); retry`, { retryAfterMs: RETRY_MS }));
          });
        });
      },
      open: (socket) => {
        const { relay } = socket.getUserData();
        if (this.stopped) {
          relay.attach(socket as uWS.WebSocket<unknown>);
          relay.shutDown();
          return;
        }
        this.relays.add(relay);
        relay.attach(socket as uWS.WebSocket<unknown>);
      },
      message: (socket, message, isBinary) => socket.getUserData().relay.fromDevice(message, isBinary),
      drain: (socket) => socket.getUserData().relay.deviceDrained(),
      close: (socket, code, message) => {
        const { relay } = socket.getUserData();
        this.relays.delete(relay);
        relay.closedByDevice(code, Buffer.from(message).toString('utf8'));
      },
    });
  }

  private routeHttp(): void {
    const { exposition } = this.options;
    this.app.get('/v1/healthz', (res) => respondJson(res, 200, { status: 'ok' }));
    this.app.get('/v1/readyz', (res) => {
      if (this.stopped) this.refuseStopped(res);
      else if (this.isReady()) respondJson(res, 200, { status: 'ready', role: 'standby' });
      else respondJson(res, 503, { status: 'starting', role: 'standby' });
    });
    this.app.get('/v1/metrics', (res) => {
      const state = watchAbort(res);
      exposition.render().then(
        (text) => !state.aborted && res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', exposition.contentType).end(text)),
        () => !state.aborted && res.cork(() => writeError(res, new CellError(ErrorCode.Internal, 'internal error'))),
      );
    });
    this.app.any('/*', (res, req) => this.forward(res, req));
  }

  /**
   * A request on a connection kept alive from before the stop: refused, and the connection
   * closed, so that the client's next request opens one to the cell that listens there now.
   */
  private refuseStopped(res: uWS.HttpResponse): void {
    res.writeStatus('503 Service Unavailable').writeHeader('content-type', 'application/json').writeHeader('retry-after', '1');
    res.end(JSON.stringify({ error: { code: ErrorCode.ShuttingDown, message: 'this process is taking over the cell; retry' } }), true);
  }

  /** Sends the request on to the speaker as it came, and its answer back as it is. */
  private forward(res: uWS.HttpResponse, req: uWS.HttpRequest): void {
    if (this.stopped) {
      this.refuseStopped(res);
      return;
    }
    const method = req.getMethod().toUpperCase();
    const target = `${req.getUrl()}${req.getQuery() ? `?${req.getQuery()}` : ''}`;
    const headers: Record<string, string> = {};
    req.forEach((name, value) => {
      if (!HOP_HEADERS.has(name)) headers[name] = value;
    });
    const state = watchAbort(res);
    let speaker: { readonly http: string };
    try {
      if (headers[RELAYED_BY_HEADER] !== undefined) throw new CellError(ErrorCode.OwnerUnavailable, 'this process does not run the cell; retry', { retryAfterMs: RETRY_MS });
      speaker = this.speakerOrRefuse();
    } catch (error) {
      writeError(res, error as CellError);
      return;
    }
    headers['x-forwarded-for'] = forwardedFor(headers['x-forwarded-for'] ?? '', res);
    headers[RELAYED_BY_HEADER] = this.options.processId;
    const url = `${speaker.http}${target}`;
    // As the access server's router: GET, HEAD, DELETE and OPTIONS carry no body it reads.
    if (['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(method)) {
      void this.send(res, state, url, method, headers, undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    res.onData((chunk, isLast) => {
      if (state.aborted || bytes > this.options.maxBodyBytes) return;
      bytes += chunk.byteLength;
      if (bytes > this.options.maxBodyBytes) {
        res.cork(() => writeError(res, new CellError(ErrorCode.PayloadTooLarge, `the request body exceeds ${this.options.maxBodyBytes} bytes`)));
        return;
      }
      // The chunk is valid only during this callback.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (isLast) void this.send(res, state, url, method, headers, Buffer.concat(chunks));
    });
  }

  private async send(res: uWS.HttpResponse, state: { aborted: boolean }, url: string, method: string, headers: Record<string, string>, body: Buffer | undefined): Promise<void> {
    let status: number;
    let statusText: string;
    let answerHeaders: Array<[string, string]>;
    let answer: Buffer;
    try {
      const response = await fetch(url, {
        method,
        headers,
        redirect: 'manual',
        ...(body === undefined ? {} : { body: new Uint8Array(body) }),
        signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
      });
      status = response.status;
      statusText = response.statusText;
      answerHeaders = [];
      response.headers.forEach((value, name) => {
        if (!HOP_HEADERS.has(name)) answerHeaders.push([name, value]);
      });
      answer = Buffer.from(await response.arrayBuffer());
    } catch (error) {
      if (!state.aborted) {
        const message = error instanceof Error ? error.message : String(error);
        res.cork(() => writeError(res, new CellError(ErrorCode.OwnerUnavailable, `the process that speaks for this cell cannot be reached (${message}); retry`, { retryAfterMs: RETRY_MS })));
      }
      return;
    }
    if (state.aborted) return;
    if (this.stopped) {
      res.cork(() => this.refuseStopped(res));
      return;
    }
    res.cork(() => {
      res.writeStatus(`${status} ${statusText}`);
      for (const [name, value] of answerHeaders) res.writeHeader(name, value);
      res.end(answer);
    });
  }
}

/** The client chain with the peer that reached this process appended. */
function forwardedFor(forwarded: string, res: uWS.HttpResponse): string {
  const client = Buffer.from(res.getRemoteAddressAsText()).toString('utf8');
  return forwarded === '' ? client : `${forwarded}, ${client}`;
}
