/**
 * A TCP proxy for tests that need a network to lose bytes at a chosen moment: every connection
 * it accepts is piped to `target`, and `mode` says what happens to the bytes as they arrive.
 *
 *   const proxy = await startTcpProxy(redis.port);
 *   new RedisStore({ url: `redis://127.0.0.1:${proxy.port}`, ... });
 *   proxy.mode = 'dropReplies';   // requests reach Redis, its replies are swallowed
 *   proxy.mode = 'dropRequests';  // requests are swallowed (kept in heldRequests())
 *   proxy.cut();                  // closes every connection open now, both sides
 *   await proxy.close();
 *
 * Listens on 127.0.0.1 only.
 */
import { createConnection, createServer, type Socket } from 'node:net';

export type ProxyMode = 'pass' | 'dropReplies' | 'dropRequests';

export interface TcpProxy {
  readonly port: number;
  mode: ProxyMode;
  /** The request bytes swallowed in 'dropRequests' mode, in arrival order. */
  heldRequests(): Buffer;
  /** Destroys every connection open now (client and target sides). */
  cut(): void;
  /** Cuts, then stops listening. */
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const held: Buffer[] = [];
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A cut or a target that went away: the other side is destroyed too, errors are expected.
    socket.on('error', () => {});
  };
  let mode: ProxyMode = 'pass';
  const cut = (): void => {
    for (const socket of sockets) socket.destroy();
  };
  const server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
    track(client);
    track(upstream);
    client.on('data', (chunk: Buffer) => {
      if (mode === 'dropRequests') held.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (mode !== 'dropReplies') client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    get mode() {
      return mode;
    },
    set mode(next: ProxyMode) {
      mode = next;
    },
    heldRequests: () => Buffer.concat(held),
    cut,
    close: async () => {
      cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
