/**
 * The transport port of the client SDK: one text-framed, bidirectional connection to a cell.
 *
 * Semantics every implementation keeps (the client logic depends on them):
 * - A connection is ordered and reliable while it is open: text passed to `send` arrives at the
 *   server whole, once, and in the order of the calls; text from the server reaches `onMessage`
 *   the same way. Nothing survives the connection: what was in flight when it closed may or may
 *   not have arrived, which is why the client resends by client message id.
 * - Events reach the listener in this order: at most one `onOpen`, then any number of
 *   `onMessage`, then exactly one `onClose`. `onError` may come at any point before `onClose`
 *   (a failed connection attempt reports `onError` and then `onClose`, never `onOpen`).
 * - No listener method is called from inside `connect` itself; events are delivered later (the
 *   real adapters deliver them from the event loop, a simulator from its scheduler). `onClose`
 *   may be called from inside `close`.
 * - `send` before `onOpen` or after the connection began closing drops the text; the client
 *   never depends on such a frame arriving.
 * - Listener methods must not throw; the adapters do not catch for them.
 */
export interface ClientTransport {
  /**
   * Starts opening a connection to `url` (a `ws:` or `wss:` URL that already carries the token),
   * offering the WebSocket subprotocols `protocols`, and reports its events to `listener`.
   */
  connect(url: string, protocols: readonly string[], listener: ConnectionListener): ClientConnection;
}

export interface ClientConnection {
  /** Sends one text frame; see the port's semantics for when it is dropped. */
  send(text: string): void;
  /**
   * Starts closing the connection (abandons the attempt if it is still opening). `code` is a
   * WebSocket close code the application may send (1000 or 3000-4999); `reason` at most 123
   * bytes of UTF-8. `onClose` follows once, unless it was already delivered.
   */
  close(code?: number, reason?: string): void;
}

export interface ConnectionListener {
  /** The connection is open; the server's first frame follows. */
  onOpen(): void;
  /** One text frame from the server. */
  onMessage(text: string): void;
  /** The connection closed, or the attempt to open it failed (then the code is typically 1006). */
  onClose(code: number, reason: string): void;
  /** Something went wrong; `onClose` follows. Details are best-effort and per transport. */
  onError(info: TransportErrorInfo): void;
}

export interface TransportErrorInfo {
  /** A readable description for logs. */
  message: string;
  /**
   * The HTTP status of a rejected upgrade (401, 403, 409, 426...), when the transport can see
   * it. Browsers cannot: their WebSocket reports every failed upgrade the same way.
   */
  httpStatus?: number;
  /** The stable error code from the JSON body of a rejected upgrade, when there was one. */
  code?: string;
}
