import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { connectNode } from './index.js';
import type { ConnectionListener, TransportErrorInfo } from './transport.js';
import { WsTransport, errorCodeOf } from './ws-transport.js';

type TransportEvent =
  | { type: 'open' }
  | { type: 'message'; text: string }
  | { type: 'error'; info: TransportErrorInfo }
  | { type: 'close'; code: number; reason: string };

/** A listener that records events and resolves `closed` on the close event. */
function recorder(): { listener: ConnectionListener; events: TransportEvent[]; closed: Promise<void>; opened: Promise<void> } {
  const events: TransportEvent[] = [];
  let onClosed = () => {};
  let onOpened = () => {};
  const closed = new Promise<void>((resolve) => (onClosed = resolve));
  const opened = new Promise<void>((resolve) => (onOpened = resolve));
  const listener: ConnectionListener = {
    onOpen: () => {
      events.push({ type: 'open' });
      onOpened();
    },
    onMessage: (text) => events.push({ type: 'message', text }),
    onError: (info) => events.push({ type: 'error', info }),
    onClose: (code, reason) => {
      events.push({ type: 'close', code, reason });
      onClosed();
    },
  };
  return { listener, events, closed, opened };
}

interface TestServer {
  url: string;
  sockets: WebSocket[];
  received: string[];
  protocols: string[];
  /** Upgrades with token `drop`, whose sockets the server destroyed at once. */
  readonly dropped: number;
  stop(): Promise<void>;
}

/**
 * An HTTP server that rejects upgrades with token `expired` the way a cell does (401 and a JSON
 * error body), drops those with token `drop` (destroys the socket) and otherwise accepts them,
 * greeting with `hello` and recording what it receives.
 * `onText` lets a test script replies.
 */
async function startServer(onText: (socket: WebSocket, text: string) => void = () => {}): Promise<TestServer> {
  const server: Server = createServer();
  const sockets: WebSocket[] = [];
  const received: string[] = [];
  const protocols: string[] = [];
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => (offered.has('cellmesh.v1') ? 'cellmesh.v1' : false),
  });
  let dropped = 0;
  server.on('upgrade', (request, socket, head) => {
    const token = new URL(request.url ?? '/', 'http://localhost').searchParams.get('token');
    if (token === 'drop') {
      dropped += 1;
      socket.destroy();
      return;
    }
    if (token === 'expired') {
      const body = JSON.stringify({ error: { code: 'TOKEN_EXPIRED', message: 'the token expired' } });
      socket.end(
        `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      sockets.push(ws);
      protocols.push(ws.protocol);
      ws.on('message', (data) => {
        const text = data.toString();
        received.push(text);
        onText(ws, text);
      });
      if (token !== 'cell') ws.send('hello');
      else onText(ws, '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    sockets,
    received,
    protocols,
    get dropped() {
      return dropped;
    },
    stop: async () => {
      for (const socket of sockets) socket.terminate();
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

describe('WsTransport', () => {
  it('reports a rejected upgrade with its HTTP status and error code, once, then closes', async () => {
    const server = await startServer();
    servers.push(server);
    const { listener, events, closed } = recorder();
    new WsTransport().connect(`${server.url}?token=expired`, ['cellmesh.v1'], listener);
    await closed;
    expect(events).toEqual([
      { type: 'error', info: { message: 'upgrade rejected with HTTP 401 (TOKEN_EXPIRED)', httpStatus: 401, code: 'TOKEN_EXPIRED' } },
      { type: 'close', code: 1006, reason: '' },
    ]);
  });

  it('opens with the subprotocol, carries text both ways in order, and closes normally', async () => {
    const server = await startServer((socket, text) => socket.send(`echo ${text}`));
    servers.push(server);
    const { listener, events, closed, opened } = recorder();
    const connection = new WsTransport().connect(`${server.url}?token=good`, ['cellmesh.v1'], listener);
    await opened;
    connection.send('one');
    connection.send('two');
    await waitFor(() => events.filter((event) => event.type === 'message').length === 3);
    connection.close(1000, 'bye');
    await closed;
    expect(server.protocols).toEqual(['cellmesh.v1']);
    expect(server.received).toEqual(['one', 'two']);
    expect(events).toEqual([
      { type: 'open' },
      { type: 'message', text: 'hello' },
      { type: 'message', text: 'echo one' },
      { type: 'message', text: 'echo two' },
      { type: 'close', code: 1000, reason: 'bye' },
    ]);
  });

  it('reports a refused connection without an HTTP status', async () => {
    const server = await startServer();
    const url = server.url;
    await server.stop();
    const { listener, events, closed } = recorder();
    new WsTransport().connect(`${url}?token=good`, ['cellmesh.v1'], listener);
    await closed;
    expect(events).toHaveLength(2);
    const [error, close] = events;
    expect(error?.type).toBe('error');
    expect(error?.type === 'error' ? error.info.httpStatus : 'missing').toBeUndefined();
    expect(close).toEqual({ type: 'close', code: 1006, reason: '' });
  });

  it('abandons an attempt that is still opening when closed', async () => {
    const server = await startServer();
    servers.push(server);
    const { listener, events, closed } = recorder();
    const connection = new WsTransport().connect(`${server.url}?token=good`, ['cellmesh.v1'], listener);
    connection.close(1000, 'never mind');
    await closed;
    expect(events.some((event) => event.type === 'open')).toBe(false);
    expect(events.at(-1)?.type).toBe('close');
  });
});

describe('errorCodeOf', () => {
  it('reads the code of both error body shapes and nothing else', () => {
    expect(errorCodeOf('{"error":{"code":"DEVICE_LIMIT","message":"x"}}')).toBe('DEVICE_LIMIT');
    expect(errorCodeOf('{"code":"ORIGIN_FORBIDDEN"}')).toBe('ORIGIN_FORBIDDEN');
    expect(errorCodeOf('Unauthorized')).toBeUndefined();
    expect(errorCodeOf('{"error":"nope"}')).toBeUndefined();
  });
});

describe('connectNode', () => {
  it('opens a session on the real ports and gets a send confirmed', async () => {
    const server = await startServer((socket, text) => {
      if (text === '') {
        socket.send(
          JSON.stringify({
            t: 'welcome',
            v: 1,
            cell: 'cell-t',
            tenant: 'mall',
            user: 'alice',
            role: 'customer',
            device: 'laptop',
            session: 'session-1',
            limits: { maxFrameBytes: 65_536, maxBodyChars: 16_384, ratePerSecond: 50, rateBurst: 100, deliveryWindow: 256 },
          }),
        );
        return;
      }
      const frame = JSON.parse(text) as { op: string; id?: string; conv?: string; cmid?: string };
      if (frame.op === 'send') {
        socket.send(JSON.stringify({ t: 'sent', id: frame.id, conv: frame.conv, cmid: frame.cmid, seq: 1, ts: 1_700_000_000_000 }));
      }
    });
    servers.push(server);
    const client = await connectNode({ url: server.url, token: 'cell', signal: AbortSignal.timeout(5_000) });
    expect(client.session).toMatchObject({ user: 'alice', device: 'laptop' });
    await expect(client.send('shop1:alice', 'hello')).resolves.toMatchObject({ conv: 'shop1:alice', seq: 1 });
    await client.close();
    expect(client.state).toBe('closed');
  });

  it('closes the client when the wait for the first session is aborted', async () => {
    const server = await startServer();
    servers.push(server);
    const controller = new AbortController();
    const pending = connectNode({ url: server.url, token: 'drop', signal: controller.signal, backoff: { initialDelayMs: 10 } });
    pending.catch(() => undefined);
    // Aborted while it retries: two attempts have failed by then.
    await waitFor(() => server.dropped >= 2);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ABORTED' });
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
