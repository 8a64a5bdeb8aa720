import type { ClientConnection, ClientTransport, ConnectionListener } from './transport.js';

/** The part of the WHATWG WebSocket constructor this adapter uses. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/**
 * The browser adapter of the transport port, over the standard `WebSocket` (also present in
 * Deno, Bun and Node 22+). A browser reports a rejected upgrade only as a failed connection, so
 * `onError` never carries an HTTP status here.
 */
export class BrowserTransport implements ClientTransport {
  private readonly webSocket: WebSocketConstructor;

  /** `webSocket` defaults to `globalThis.WebSocket`, looked up now so a missing one fails early. */
  constructor(webSocket?: WebSocketConstructor) {
    const found = webSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (found === undefined) throw new TypeError('no WebSocket implementation: pass one to BrowserTransport');
    this.webSocket = found;
  }

  connect(url: string, protocols: readonly string[], listener: ConnectionListener): ClientConnection {
    const socket = new this.webSocket(url, [...protocols]);
    socket.onopen = () => listener.onOpen();
    socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== 'string') {
        listener.onError({ message: 'the server sent a binary frame; the protocol is text only' });
        return;
      }
      listener.onMessage(event.data);
    };
    socket.onerror = () => listener.onError({ message: 'WebSocket error (the browser gives no details)' });
    socket.onclose = (event: CloseEvent) => listener.onClose(event.code, event.reason);

    return {
      send: (text: string) => {
        if (socket.readyState === socket.OPEN) socket.send(text);
      },
      close: (code?: number, reason?: string) => {
        if (socket.readyState === socket.CLOSING || socket.readyState === socket.CLOSED) return;
        socket.close(code, reason);
      },
    };
  }
}
