import WebSocket from 'ws';
import type uWS from 'uWebSockets.js';
import { CloseCode } from '../protocol/errors.js';

/**
 * A device's WebSocket relayed to the sibling process that owns its merchant (docs/operations.md,
 * "A cell of several processes"). The sibling is dialled before the device's upgrade is
 * answered, so the sibling's own refusal (a bad token, a device limit, no owner right now) goes
 * back to the device as it is. Once both are open, frames pass both ways untouched (text stays
 * text, binary stays binary), and so do close codes; a sibling that dies or closes abnormally
 * ends the device with 1001, on which clients reconnect (to any process).
 */

/** Where the devices of a merchant are served, in a cell of several processes. */
export interface SiblingAccess {
  /** This process's id: the relay marker names it. */
  readonly processId: string;
  /**
   * Here, or the WebSocket URL (`ws://host:port/v1/ws`) and HTTP base of the sibling that owns the merchant.
   * Throws OWNER_UNAVAILABLE when no live process owns it right now.
   */
  serverOf(tenant: string, merchant: string): SiblingServer;
  /**
   * The process that applies changes of the cell's tenants and merchants, and erasures: here in
   * a standalone cell (every process may, one at a time under the cell's catalogue lock); in a
   * mesh, the speaker, the only process that claims and withdraws merchants in the mesh and whose
   * outbox asks the other cells to erase.
   */
  catalogueApplier(): SiblingServer;
  /**
   * Where what the speaker serves in a mesh goes: a customer's device not routed for a merchant
   * (the speaker holds the conversations homed in other cells) and the mesh's own API. Here
   * outside a mesh (such a customer talks with the merchants this process owns). Throws
   * OWNER_UNAVAILABLE while no process speaks.
   */
  speakerServer(): SiblingServer;
}

/** Here, or a sibling's WebSocket URL (`ws://host:port/v1/ws`) and HTTP base. */
export type SiblingServer = { readonly here: true } | { readonly here: false; readonly ws: string; readonly http: string };

/** The header a relaying process adds: the sibling serves such a connection itself or refuses it, never relays it again. */
export const RELAYED_BY_HEADER = 'x-cellmesh-relayed-by';

export interface RelayRequest {
  /** The sibling's WebSocket URL with the device's path and query (token included). */
  readonly url: string;
  /** Subprotocols the device offered (`sec-websocket-protocol`), empty for none. */
  readonly protocols: readonly string[];
  /** Headers to pass on: authorization, origin, the relay marker, X-Forwarded-For. */
  readonly headers: Record<string, string>;
  /** Bytes buffered towards either side beyond which that side is slowed or dropped. */
  readonly maxBufferedBytes: number;
  /** How long the sibling may take to accept. */
  readonly connectTimeoutMs: number;
}

/** How the dial ended: the sibling accepted (answer the device's upgrade), or refused over HTTP, or could not be reached. */
export type RelayDial =
  | { readonly kind: 'open'; readonly protocol: string }
  | { readonly kind: 'refused'; readonly status: number; readonly statusText: string; readonly contentType: string; readonly body: Buffer }
  | { readonly kind: 'unreachable'; readonly message: string };

/** One relayed device: the sibling's socket, and the device's uWS socket once it opened. */
export class SiblingLink {
  private device: uWS.WebSocket<unknown> | undefined;
  private deviceClosed = false;
  private readonly early: Array<{ data: Buffer; isBinary: boolean }> = [];
  /** How the sibling ended before the device's socket opened: passed on once it has. */
  private earlyEnd: { code: number; reason: string } | undefined;
  private readonly sibling: WebSocket;
  private siblingOpen = false;
  /** Resolves once the sibling accepted, refused, or could not be reached. */
  readonly dialled: Promise<RelayDial>;

  constructor(private readonly request: RelayRequest) {
    this.sibling = new WebSocket(request.url, [...request.protocols], { headers: request.headers, perMessageDeflate: false, handshakeTimeout: request.connectTimeoutMs });
    this.dialled = new Promise((resolve) => {
      this.sibling.once('open', () => {
        this.siblingOpen = true;
        resolve({ kind: 'open', protocol: this.sibling.protocol });
      });
      this.sibling.once('unexpected-response', (request, response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.once('end', () => {
          // The handshake failed: its HTTP connection is of no further use.
          request.destroy();
          resolve({
            kind: 'refused',
            status: response.statusCode ?? 502,
            statusText: response.statusMessage ?? '',
            contentType: String(response.headers['content-type'] ?? 'application/json'),
            body: Buffer.concat(chunks),
          });
        });
        response.once('error', (error) => resolve({ kind: 'unreachable', message: error.message }));
      });
      this.sibling.on('error', (error) => {
        resolve({ kind: 'unreachable', message: error.message });
        this.endDevice(CloseCode.GoingAway, 'the process serving this merchant is gone; reconnect');
      });
    });
    this.sibling.on('message', (data: Buffer, isBinary: boolean) => this.toDevice(data, isBinary));
    this.sibling.on('close', (code: number, reason: Buffer) => {
      // 1005 (no code) and 1006 (the sibling died) cannot be sent on: the device reconnects.
      const abnormal = code === 1005 || code === 1006 || code < 1000;
      this.endDevice(abnormal ? CloseCode.GoingAway : code, abnormal ? 'the process serving this merchant is gone; reconnect' : reason.toString('utf8'));
    });
  }

  /** The device's socket opened (its upgrade was answered with the sibling's protocol). */
  attach(device: uWS.WebSocket<unknown>): void {
    this.device = device;
    for (const frame of this.early.splice(0)) this.toDevice(frame.data, frame.isBinary);
    // The sibling ended between its accept and the device's open (a refusal in band, say).
    // While it is CLOSING its close event follows, with the code, and ends the device then.
    if (this.earlyEnd !== undefined) this.endDevice(this.earlyEnd.code, this.earlyEnd.reason);
    else if (this.sibling.readyState === WebSocket.CLOSED) this.endDevice(CloseCode.GoingAway, 'the process serving this merchant is gone; reconnect');
  }

  /** A frame from the device; `message` is valid only during uWS's callback, so it is copied. */
  fromDevice(message: ArrayBuffer, isBinary: boolean): void {
    if (!this.siblingOpen || this.sibling.readyState !== WebSocket.OPEN) return;
    if (isBinary) this.sibling.send(Buffer.from(new Uint8Array(message)), { binary: true });
    else this.sibling.send(Buffer.from(message).toString('utf8'));
    // The device writes faster than the sibling reads: like a device that does not read, it is
    // dropped and resyncs when it reconnects.
    if (this.sibling.bufferedAmount > this.request.maxBufferedBytes) this.endDevice(CloseCode.Backpressure, 'the relay to the owning process is congested; reconnect');
  }

  /** The device's network took what was buffered: read from the sibling again. */
  deviceDrained(): void {
    if (this.sibling.isPaused) this.sibling.resume();
  }

  /** The device's socket closed (`code` as uWS reports it): the sibling's follows with the same code. */
  closedByDevice(code: number, reason: string): void {
    this.deviceClosed = true;
    if (this.sibling.readyState === WebSocket.CONNECTING) this.sibling.terminate();
    else if (this.sibling.readyState === WebSocket.OPEN) this.sibling.close(sendableCode(code) ? code : CloseCode.GoingAway, reason.slice(0, 120));
  }

  /** Ends the device with 1001 (the process stops relaying); the sibling side follows. */
  shutDown(): void {
    this.endDevice(CloseCode.GoingAway, 'this process is shutting down; reconnect');
  }

  private toDevice(data: Buffer, isBinary: boolean): void {
    if (this.deviceClosed) return;
    const device = this.device;
    if (device === undefined) {
      this.early.push({ data, isBinary });
      return;
    }
    device.send(data, isBinary, false);
    if (device.getBufferedAmount() > this.request.maxBufferedBytes) this.sibling.pause();
  }

  private endDevice(code: number, reason: string): void {
    if (this.deviceClosed) return;
    if (this.device === undefined) {
      // Accepted by the sibling, not opened to the device yet: this end follows its frames once it is.
      if (this.siblingOpen) this.earlyEnd ??= { code, reason };
      return;
    }
    this.deviceClosed = true;
    this.device.end(code, reason.slice(0, 120));
    if (this.sibling.readyState === WebSocket.OPEN || this.sibling.readyState === WebSocket.CONNECTING) this.sibling.terminate();
  }
}

/** Close codes a WebSocket endpoint may send (RFC 6455 7.4): not 1004-1006 nor 1015, nothing below 1000 or above 4999. */
function sendableCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}
