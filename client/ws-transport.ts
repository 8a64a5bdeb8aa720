import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import type { ClientConnection, ClientTransport, ConnectionListener } from './transport.js';

export interface WsTransportInit {
  /** How long the HTTP upgrade may take before the attempt fails. The client has its own
   * connect timeout as well; this one only stops a hung handshake from holding a socket. */
  handshakeTimeoutMs?: number;
  /** Largest frame accepted from the server; a larger one closes the connection (1009). */
  maxPayloadBytes?: number;
  /** Sent as the `Origin` header, for cells that check origins of non-browser clients too. */
  origin?: string;
  /** Extra HTTP headers for the upgrade request. */
  headers?: Record<string, string>;
}

/** A rejected upgrade's body is read only this far: enough for a JSON error, no more. */
const REJECTION_BODY_BYTES_MAX = 4_096;

const wsTransportDefaults = {
  handshakeTimeoutMs: 10_000,
  maxPayloadBytes: 1_048_576,
} as const;

/**
 * The Node.js adapter of the transport port, over the `ws` package. It can see the HTTP status
 * and JSON error body of a rejected upgrade, which browsers hide.
 */
export class WsTransport implements ClientTransport {
  private readonly init: WsTransportInit;

  constructor(init: WsTransportInit = {}) {
    this.init = init;
  }

  connect(url: string, protocols: readonly string[], listener: ConnectionListener): ClientConnection {
    const socket = new WebSocket(url, [...protocols], {
      handshakeTimeout: this.init.handshakeTimeoutMs ?? wsTransportDefaults.handshakeTimeoutMs,
      maxPayload: this.init.maxPayloadBytes ?? wsTransportDefaults.maxPayloadBytes,
      // Chat frames are small JSON; compression would cost more CPU than it saves.
      perMessageDeflate: false,
      ...(this.init.origin === undefined ? {} : { origin: this.init.origin }),
      ...(this.init.headers === undefined ? {} : { headers: this.init.headers }),
    });
    // After a rejected upgrade is reported with its status, the generic error that `ws` raises
    // when the attempt is torn down would only repeat it with less information.
    let rejectionReported = false;

    socket.on('open', () => listener.onOpen());
    socket.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) {
        listener.onError({ message: 'the server sent a binary frame; the protocol is text only' });
        return;
      }
      listener.onMessage(rawDataToText(data));
    });
    socket.on('unexpected-response', (_request, response: IncomingMessage) => {
      readRejection(response, (status, body) => {
        if (rejectionReported) return;
        rejectionReported = true;
        const code = errorCodeOf(body);
        listener.onError({
          message: `upgrade rejected with HTTP ${status}${code === undefined ? '' : ` (${code})`}`,
          httpStatus: status,
          ...(code === undefined ? {} : { code }),
        });
        // Tearing down the attempt makes `ws` emit 'close', which reports the end to the client.
        socket.terminate();
      });
    });
    socket.on('error', (error: Error) => {
      if (rejectionReported) return;
      listener.onError({ message: error.message });
    });
    socket.on('close', (code: number, reason: Buffer) => listener.onClose(code, reason.toString('utf8')));

    return {
      send: (text: string) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(text);
      },
      close: (code?: number, reason?: string) => {
        if (socket.readyState === WebSocket.CONNECTING) {
          socket.terminate();
          return;
        }
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.close(code, reason);
      },
    };
  }
}

function rawDataToText(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

/** Collects at most REJECTION_BODY_BYTES_MAX of the response body, then reports once. */
function readRejection(response: IncomingMessage, report: (status: number, body: string) => void): void {
  const status = response.statusCode ?? 0;
  const chunks: Buffer[] = [];
  let collectedBytes = 0;
  let reported = false;
  const finish = () => {
    if (reported) return;
    reported = true;
    report(status, Buffer.concat(chunks).toString('utf8'));
  };
  response.on('data', (chunk: Buffer) => {
    if (collectedBytes >= REJECTION_BODY_BYTES_MAX) return;
    const kept = chunk.subarray(0, REJECTION_BODY_BYTES_MAX - collectedBytes);
    chunks.push(kept);
    collectedBytes += kept.length;
    if (collectedBytes >= REJECTION_BODY_BYTES_MAX) finish();
  });
  response.on('end', finish);
  // An aborted or broken response still has a status worth reporting.
  response.on('close', finish);
  response.on('error', finish);
}

/** Reads `code` from `{"code": ...}` or `{"error": {"code": ...}}`; anything else has none. */
export function errorCodeOf(body: string): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const record = value as Record<string, unknown>;
  if (typeof record.code === 'string') return record.code;
  const nested = record.error;
  if (typeof nested === 'object' && nested !== null) {
    const code = (nested as Record<string, unknown>).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}
