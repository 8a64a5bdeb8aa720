/**
 * How the load generator speaks to each server under test over a plain `ws` WebSocket: the URL,
 * the handshake, and the encoding of a customer's send and an agent's cumulative ack.
 *
 * The Socket.IO baseline is driven by a minimal Engine.IO v4 / Socket.IO v5 client written here
 * over `ws` rather than by `socket.io-client`, so that all three targets cost the generator the
 * same (one JSON encode per send, one JSON parse per frame) and the comparison measures the
 * servers, not the client libraries.
 */
import type WebSocket from 'ws';
import type { TargetKind } from './load-protocol.js';

/** Where a decoded frame goes: the generator's bookkeeping for one socket. */
export interface FrameSink {
  /** The server acknowledged (durably, for the cell and the relay) the send numbered `sendNumber`. */
  sent(sendNumber: number): void;
  /** The server refused a send (or sent an error frame with no request, when `sendNumber` is undefined). */
  failed(sendNumber: number | undefined, code: string, retryAfterMs: number | undefined): void;
  /** A message was pushed to this device; it must be acknowledged. */
  delivery(conv: string, seq: number): void;
}

export type HandshakeStep = { kind: 'ready' } | { kind: 'pending' } | { kind: 'error'; message: string };

export interface Codec {
  url(baseUrl: string, token: string): string;
  protocols: string[];
  /** True when the WebSocket open itself completes the handshake (no server greeting). */
  readyOnOpen: boolean;
  /** Handles a frame that arrives before the handshake completed. */
  handshake(socket: WebSocket, text: string, token: string): HandshakeStep;
  encodeSend(conv: string, sendNumber: number, body: string): string;
  /** One frame acknowledging every conversation of `acks` (conversation to highest seq). */
  encodeAcks(acks: ReadonlyMap<string, number>): string;
  decode(socket: WebSocket, text: string, sink: FrameSink): void;
}

interface CellFrame {
  t?: string;
  op?: string;
  id?: string;
  cmid?: string;
  code?: string;
  message?: string;
  retryAfterMs?: number;
  conv?: string;
  seq?: number;
}

/** The cell's own protocol (cell/protocol/frames.ts): the send number is both `id` and `cmid`. */
const cellCodec: Codec = {
  url: (baseUrl, token) => `${baseUrl}/v1/ws?token=${encodeURIComponent(token)}`,
  protocols: ['cellmesh.v1'],
  readyOnOpen: false,
  handshake(_socket, text) {
    const frame = JSON.parse(text) as CellFrame;
    if (frame.t === 'welcome') return { kind: 'ready' };
    if (frame.t === 'error') return { kind: 'error', message: `${frame.code ?? '?'}: ${frame.message ?? ''}` };
    return { kind: 'pending' };
  },
  encodeSend: (conv, sendNumber, body) =>
    JSON.stringify({ op: 'send', id: String(sendNumber), conv, cmid: String(sendNumber), body }),
  encodeAcks: (acks) => JSON.stringify({ op: 'ack', acks: Object.fromEntries(acks) }),
  decode(_socket, text, sink) {
    const frame = JSON.parse(text) as CellFrame;
    switch (frame.t) {
      case 'sent':
        sink.sent(Number(frame.cmid));
        return;
      case 'msg':
        if (typeof frame.conv === 'string' && typeof frame.seq === 'number') sink.delivery(frame.conv, frame.seq);
        return;
      case 'error':
        sink.failed(frame.id === undefined ? undefined : Number(frame.id), frame.code ?? 'UNKNOWN', frame.retryAfterMs);
        return;
      default:
        return;
    }
  },
};

const ENGINE_PING = '2';
const ENGINE_PONG = '3';

/**
 * Socket.IO over Engine.IO v4 on the websocket transport: `0{...}` opens the engine session, the
 * client answers `40{auth}` to join the default namespace, `40{sid}` confirms and `44{...}`
 * refuses; `42<ackId>["send",{...}]` is an event with an ack, answered by `43<ackId>[{...}]`;
 * the server pings with `2` and expects `3`.
 */
const socketIoCodec: Codec = {
  url: (baseUrl) => `${baseUrl}/socket.io/?EIO=4&transport=websocket`,
  protocols: [],
  readyOnOpen: false,
  handshake(socket, text, token) {
    if (text === ENGINE_PING) {
      socket.send(ENGINE_PONG);
      return { kind: 'pending' };
    }
    if (text.startsWith('0')) {
      socket.send(`40${JSON.stringify({ token })}`);
      return { kind: 'pending' };
    }
    if (text.startsWith('40')) return { kind: 'ready' };
    if (text.startsWith('44')) return { kind: 'error', message: `CONNECT_ERROR ${text.slice(2)}` };
    return { kind: 'pending' };
  },
  encodeSend: (conv, sendNumber, body) =>
    `42${sendNumber}["send",${JSON.stringify({ conv, cmid: String(sendNumber), body })}]`,
  encodeAcks: (acks) => `42["ack",${JSON.stringify(Object.fromEntries(acks))}]`,
  decode(socket, text, sink) {
    if (text === ENGINE_PING) {
      socket.send(ENGINE_PONG);
      return;
    }
    if (text.startsWith('43')) {
      const bracketAt = text.indexOf('[');
      const sendNumber = Number(text.slice(2, bracketAt));
      const answer = (JSON.parse(text.slice(bracketAt)) as Array<{ error?: string }>)[0];
      if (answer?.error !== undefined) sink.failed(sendNumber, answer.error, undefined);
      else sink.sent(sendNumber);
      return;
    }
    if (text.startsWith('42[')) {
      const [event, payload] = JSON.parse(text.slice(2)) as [string, { conv?: string; seq?: number }];
      if (event === 'msg' && typeof payload?.conv === 'string' && typeof payload.seq === 'number') {
        sink.delivery(payload.conv, payload.seq);
      }
    }
  },
};

/** The echo server returns the cell's send frame unchanged; its `cmid` closes the loop. */
const echoCodec: Codec = {
  url: (baseUrl) => `${baseUrl}/`,
  protocols: [],
  readyOnOpen: true,
  handshake: () => ({ kind: 'ready' }),
  encodeSend: cellCodec.encodeSend,
  encodeAcks: cellCodec.encodeAcks,
  decode(_socket, text, sink) {
    const frame = JSON.parse(text) as CellFrame;
    if (frame.op === 'send') sink.sent(Number(frame.cmid));
  },
};

export function codecOf(target: TargetKind): Codec {
  switch (target) {
    case 'cell':
      return cellCodec;
    case 'socketio':
      return socketIoCodec;
    case 'uws-echo':
      return echoCodec;
  }
}
