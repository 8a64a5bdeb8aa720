import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 between a browser and a cell, for taking the page's network away:
 * Chromium's offline emulation (`context.setOffline`) does not touch WebSockets that are already
 * open, so the test cuts the connection here instead.
 *
 * - `muteDownstream()` keeps forwarding what the browser sends but drops what the cell answers,
 *   like a link that fails while a frame is in flight (the cell stores a send, its `sent` is lost).
 * - `cut()` drops every open connection and refuses new ones (each is closed at once), like a
 *   device that went offline; `restore()` brings the network back.
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private offline = false;
  private downstreamMuted = false;
  /** Connections the proxy accepted and forwarded (for diagnostics). */
  forwarded = 0;

  private constructor(
    private readonly targetPort: number,
    readonly port: number,
    server: Server,
  ) {
    this.server = server;
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy has no TCP address');
    const proxy = new TcpProxy(targetPort, address.port, server);
    server.on('connection', (client) => proxy.accept(client));
    return proxy;
  }

  private accept(client: Socket): void {
    if (this.offline) {
      client.resetAndDestroy();
      return;
    }
    this.forwarded++;
    const upstream = connect(this.targetPort, '127.0.0.1');
    this.sockets.add(client);
    this.sockets.add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (!this.downstreamMuted) client.write(chunk);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  }

  muteDownstream(): void {
    this.downstreamMuted = true;
  }

  cut(): void {
    this.offline = true;
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
  }

  restore(): void {
    this.offline = false;
    this.downstreamMuted = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
