/**
 * Baseline 2: a raw uWebSockets.js echo server, the ceiling of what one Node process on this
 * machine can move through WebSockets with this load generator. It does no work per message but
 * send the same bytes back: no parsing, no auth, no storage, no fan-out.
 *
 * Run as a child process by the benchmark:
 *   node --import tsx bench/baselines/uws-echo.ts [--port N]
 * It prints one JSON line `{"event":"ready","port":N}` on stdout once it listens.
 */
import uWS from 'uWebSockets.js';

function portOf(argv: readonly string[]): number {
  const index = argv.indexOf('--port');
  const value = index >= 0 ? Number(argv[index + 1]) : 0;
  if (!Number.isInteger(value) || value < 0 || value > 65535) throw new Error('--port must be 0..65535');
  return value;
}

const app = uWS.App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024,
    maxBackpressure: 1024 * 1024,
    idleTimeout: 120,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .get('/readyz', (response) => {
    response.end('ok');
  })
  .any('/*', (response) => {
    response.writeStatus('404 Not Found').end();
  });

app.listen('127.0.0.1', portOf(process.argv), (listenSocket) => {
  if (listenSocket === false) {
    process.stderr.write('uws-echo: listen failed\n');
    process.exit(1);
  }
  const port = uWS.us_socket_local_port(listenSocket as unknown as uWS.us_socket);
  process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`);
  const shutdown = (): void => {
    uWS.us_listen_socket_close(listenSocket);
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
});
