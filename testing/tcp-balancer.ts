import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * What a Kubernetes Service does in front of the processes of a cell, for tests and benchmarks:
 * each TCP connection goes to the first backend, in order, that accepts it. Connections already
 * open stay where they are.
 */
export class TcpBalancer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly backends: readonly number[]) {
    this.server = createServer((client) => this.forward(client, 0));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private forward(client: Socket, index: number): void {
    const port = this.backends[index];
    if (port === undefined) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: '127.0.0.1', port });
    upstream.once('error', () => {
      if (!upstream.readyState.startsWith('open')) this.forward(client, index + 1);
      else client.destroy();
    });
    upstream.once('connect', () => {
      this.sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.once('error', () => upstream.destroy());
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
  }
}
