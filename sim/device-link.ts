import type { CellCore } from '../cell/cell-core.js';
import type { DeviceConnection, DevicePort } from '../cell/messaging/device.js';
import { CellError, ErrorCode, httpStatusOf, inBandRejectionCloseCodes } from '../cell/protocol/errors.js';
import { errorFrameOf } from '../cell/routing/merchant-redirects.js';
import type { ClientConnection, ClientTransport, ConnectionListener, TransportErrorInfo } from '../client/transport.js';
import type { Clock } from '../platform/clock.js';
import type { Life } from './sim-clock.js';

/** What a device link needs of the cell incarnation at the other end. */
export interface DeviceEndpoint {
  readonly core: CellCore;
  readonly life: Life;
  readonly maxFrameBytes: number;
  /** Open links of this incarnation, so a crash can break them. */
  readonly links: Set<DeviceLink>;
}

export interface DeviceNetwork {
  readonly clock: Clock;
  /** One-way latency of one frame between a device and its cell, in ms. */
  latencyMs(): number;
  /** The running incarnation of `cellId`, if it runs and accepts devices. */
  endpointOf(cellId: string): DeviceEndpoint | undefined;
  /** Told the code of every `error` frame a cell sends, for the report. */
  errorAnswered?(code: string): void;
}

type ServerToClient =
  | { readonly kind: 'open' }
  | { readonly kind: 'message'; readonly text: string }
  | { readonly kind: 'error'; readonly info: TransportErrorInfo }
  | { readonly kind: 'close'; readonly code: number; readonly reason: string };

/**
 * The SDK's transport in the simulator: a `ws://<cell id>.sim/v1/ws?token=…[&merchant=…]` URL
 * opens a link to that cell's core over virtual time, the way uWS (cell/access/uws-server.ts)
 * and the `ws` client (client/ws-transport.ts) do over TCP: the upgrade is authenticated and
 * admitted by the core (routed for the URL's `merchant`) or refused with the HTTP status and code
 * of the error, except a redirect, which is answered in band (its frame, then 4307) as uWS does;
 * frames travel in order in each direction, each after a drawn latency (FIFO: a frame never
 * overtakes the one before it).
 */
export class SimClientTransport implements ClientTransport {
  constructor(private readonly network: DeviceNetwork) {}

  connect(url: string, _protocols: readonly string[], listener: ConnectionListener): ClientConnection {
    const parsed = new URL(url);
    const cellId = parsed.hostname.split('.')[0] ?? '';
    const token = parsed.searchParams.get('token') ?? '';
    const merchant = parsed.searchParams.get('merchant');
    return new DeviceLink(this.network, cellId, token, listener, merchant === null || merchant === '' ? undefined : merchant);
  }
}

/** One WebSocket between a simulated device and a cell: both its client end and the cell's DevicePort. */
export class DeviceLink implements ClientConnection {
  private clientState: 'connecting' | 'open' | 'closing' | 'closed' = 'connecting';
  private serverState: 'none' | 'open' | 'closed' = 'none';
  private endpoint: DeviceEndpoint | undefined;
  private connection: DeviceConnection | undefined;
  private lastUpArrivalMs = 0;
  private lastDownArrivalMs = 0;
  /** Bumped when the link breaks: frames on the wire at that moment are lost. */
  private downEpoch = 0;
  private downBytes = 0;
  private downFrames = 0;

  constructor(
    private readonly network: DeviceNetwork,
    private readonly cellId: string,
    private readonly token: string,
    private readonly listener: ConnectionListener,
    /** The merchant the URL routes the connection for (the SDK's route mode), if any. */
    private readonly routedFor?: string | undefined,
  ) {
    this.up(() => this.arriveUpgrade());
  }

  // -- the client's end (ClientConnection) ----------------------------------------------------

  send(text: string): void {
    if (this.clientState !== 'open') return;
    this.up(() => {
      const { endpoint, connection } = this;
      if (this.serverState !== 'open' || endpoint === undefined || connection === undefined || !endpoint.life.alive) return;
      if (Buffer.byteLength(text, 'utf8') > endpoint.maxFrameBytes) {
        endpoint.core.refuse(connection, new CellError(ErrorCode.PayloadTooLarge, `frame exceeds the limit of ${endpoint.maxFrameBytes} bytes`));
        return;
      }
      endpoint.core.receive(connection, text);
    });
  }

  close(code = 1000, reason = ''): void {
    if (this.clientState === 'closed' || this.clientState === 'closing') return;
    if (this.clientState === 'connecting') {
      // Like ws's terminate(): the attempt is abandoned and 'close' follows on a later tick.
      this.clientState = 'closed';
      this.up(() => this.serverGone());
      this.network.clock.setTimer(0, () => this.listener.onClose(1006, ''));
      return;
    }
    this.clientState = 'closing';
    this.up(() => {
      if (this.serverState !== 'open') return;
      this.serverGone();
      // The cell answers the close frame with its own.
      this.down({ kind: 'close', code, reason });
    });
  }

  // -- the cell's end (DevicePort) ------------------------------------------------------------

  // DevicePort.send and ClientConnection.send share a name; the cell calls it through `port`.
  readonly port: DevicePort = {
    send: (text: string) => {
      if (this.serverState !== 'open') return;
      if (text.startsWith('{"t":"error"')) this.network.errorAnswered?.((JSON.parse(text) as { code: string }).code);
      this.down({ kind: 'message', text });
    },
    bufferedBytes: () => (this.serverState === 'open' ? this.downBytes : 0),
    close: (code: number, reason: string) => {
      if (this.serverState !== 'open') return;
      this.serverGone();
      this.down({ kind: 'close', code, reason });
    },
  };

  /** The cell's process died: no close frame, the client sees the TCP connection reset. */
  breakByCrash(): void {
    this.serverState = 'closed';
    this.endpoint?.links.delete(this);
    this.downEpoch++;
    this.downBytes = 0;
    this.downFrames = 0;
    this.down({ kind: 'close', code: 1006, reason: '' });
  }

  /** The network between the device and its cell failed: both ends see an abnormal close. */
  breakByNetwork(): void {
    if (this.serverState === 'open') this.serverGone();
    this.downEpoch++;
    this.downBytes = 0;
    this.downFrames = 0;
    this.down({ kind: 'close', code: 1006, reason: '' });
  }

  get isOpen(): boolean {
    return this.clientState === 'open';
  }

  // -- internals ------------------------------------------------------------------------------

  private arriveUpgrade(): void {
    if (this.clientState === 'closed') return;
    const endpoint = this.network.endpointOf(this.cellId);
    if (endpoint === undefined || !endpoint.life.alive) {
      this.down({ kind: 'error', info: { message: `connect ECONNREFUSED ${this.cellId}` } });
      this.down({ kind: 'close', code: 1006, reason: '' });
      return;
    }
    const { core } = endpoint;
    try {
      const identity = core.authenticate(this.token);
      const routedFor = core.admit(identity, undefined, this.routedFor);
      this.endpoint = endpoint;
      this.serverState = 'open';
      endpoint.links.add(this);
      this.down({ kind: 'open' });
      this.connection = core.connect(identity, this.port, routedFor);
    } catch (error) {
      const cellError = error instanceof CellError ? error : new CellError(ErrorCode.Internal, 'upgrade failed');
      if (cellError.code === ErrorCode.MerchantElsewhere) {
        // In band for every client: the frame carries the home the close sends the device to.
        this.network.errorAnswered?.(cellError.code);
        this.down({ kind: 'open' });
        this.down({ kind: 'message', text: JSON.stringify(errorFrameOf(cellError)) });
        this.down({ kind: 'close', code: inBandRejectionCloseCodes[cellError.code]!, reason: cellError.code });
        return;
      }
      this.down({
        kind: 'error',
        info: { message: `upgrade rejected with HTTP ${httpStatusOf[cellError.code]} (${cellError.code})`, httpStatus: httpStatusOf[cellError.code], code: cellError.code },
      });
      this.down({ kind: 'close', code: 1006, reason: '' });
    }
  }

  /** The cell's side of the socket closes: the core forgets the connection (uWS's close handler). */
  private serverGone(): void {
    if (this.serverState !== 'open') return;
    this.serverState = 'closed';
    const { endpoint, connection } = this;
    endpoint?.links.delete(this);
    if (endpoint !== undefined && connection !== undefined && endpoint.life.alive) endpoint.core.disconnect(connection);
  }

  /** Client to cell, in order. */
  private up(deliver: () => void): void {
    const { clock } = this.network;
    const arrivalMs = Math.max(this.lastUpArrivalMs, clock.now() + this.network.latencyMs());
    this.lastUpArrivalMs = arrivalMs;
    clock.setTimer(arrivalMs - clock.now(), deliver);
  }

  /** Cell to client, in order; frames on the wire when the link breaks are lost. */
  private down(event: ServerToClient): void {
    const { clock } = this.network;
    const arrivalMs = Math.max(this.lastDownArrivalMs, clock.now() + this.network.latencyMs());
    this.lastDownArrivalMs = arrivalMs;
    const epoch = this.downEpoch;
    const bytes = event.kind === 'message' ? event.text.length : 0;
    this.downBytes += bytes;
    this.downFrames++;
    clock.setTimer(arrivalMs - clock.now(), () => {
      if (epoch !== this.downEpoch) return;
      this.downBytes -= bytes;
      this.downFrames--;
      this.arriveAtClient(event);
      if (this.downFrames === 0 && this.serverState === 'open') this.port.onDrained?.();
    });
  }

  private arriveAtClient(event: ServerToClient): void {
    if (this.clientState === 'closed') return;
    switch (event.kind) {
      case 'open':
        if (this.clientState === 'connecting') {
          this.clientState = 'open';
          this.listener.onOpen();
        }
        return;
      case 'message':
        if (this.clientState === 'open') this.listener.onMessage(event.text);
        return;
      case 'error':
        this.listener.onError(event.info);
        return;
      case 'close':
        this.clientState = 'closed';
        this.listener.onClose(event.code, event.reason);
        return;
    }
  }
}
