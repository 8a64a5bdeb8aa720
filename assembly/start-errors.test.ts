import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CellStartError, listenStartError } from './start-errors.js';

const SETTINGS = { host: 'listen.host', port: 'listen.port' };
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

async function occupiedPort(): Promise<number> {
  const server = createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

describe('listenStartError', () => {
  it('names the port setting when another process listens there', async () => {
    const port = await occupiedPort();
    const error = await listenStartError(SETTINGS, '127.0.0.1', port, new Error('listen failed'));
    expect(error).toBeInstanceOf(CellStartError);
    expect((error as CellStartError).message).toBe(`listen.port: port ${port} is in use on 127.0.0.1 (another cell or process listens there)`);
  });

  it('names the host setting for an address that is not this machine\'s', async () => {
    // TEST-NET-1 (RFC 5737) is never assigned to a host.
    const error = await listenStartError(SETTINGS, '192.0.2.1', 0, new Error('listen failed'));
    expect((error as CellStartError).message).toBe('listen.host: 192.0.2.1 is not an address of this machine');
  });

  it('hands back the original error when the address can be listened on (the cause lies elsewhere)', async () => {
    const cause = new Error('something else');
    expect(await listenStartError(SETTINGS, '127.0.0.1', 0, cause)).toBe(cause);
  });
});
