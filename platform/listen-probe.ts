import { createServer } from 'node:net';

/**
 * Why `host:port` cannot be listened on, as the OS tells it (`EADDRINUSE`, `EADDRNOTAVAIL`,
 * `EACCES`, `ENOTFOUND`...), or undefined when it can be now. Used after a listener that does
 * not say why it failed (uWS answers only `false`; libp2p folds the cause into a long message):
 * a plain Node listener on the same address gets the OS's own reason, and is closed at once.
 */
export function listenFailureOf(host: string, port: number): Promise<string | undefined> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}
