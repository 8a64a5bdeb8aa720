/**
 * A cell on Redis in a mesh, of several processes (docs/operations.md, "A cell of several
 * processes"): one process at a time speaks for the cell, holding the speaker lease in its Redis.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Cleanup, freePort, type ChildCell } from './harness.js';
import { redisServerMissing, startRedisServer, type RedisServer } from '../testing/redis-server.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`speaker-cell.test.ts: skipped: ${skipReason}`);

const LEASE = { leaseTtlMs: 1500, renewIntervalMs: 300 };

interface MeshProcessOptions {
  cellId: string;
  processId: string;
  url: string;
  directory: string;
  /** The cell's balancer, which its record names (mesh.advertise). */
  balancerPort: number;
  port?: number;
  merchants?: readonly string[];
  bootstrap?: readonly string[];
}

/** Starts one process of a cell on Redis in a mesh: the shared key file, the balancer's address. */
export function startMeshProcess(cleanup: Cleanup, options: MeshProcessOptions): Promise<ChildCell> {
  const balancer = `127.0.0.1:${options.balancerPort}`;
  return cleanup.childCell({
    directory: options.directory,
    configDir: options.directory,
    cellId: options.cellId,
    ...(options.port === undefined ? {} : { port: options.port }),
    merchants: options.merchants ?? ['m1'],
    store: { kind: 'redis', redis: { url: options.url } },
    processes: { id: options.processId, ...LEASE },
    mesh: { bootstrap: options.bootstrap ?? [], keyFile: join(options.directory, `${options.cellId}.key`), advertise: { ws: `ws://${balancer}/v1/ws`, http: `http://${balancer}` } },
  });
}

describe.skipIf(skipReason !== undefined)(`a cell on Redis in a mesh${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  const cleanup = new Cleanup();
  let server: RedisServer;
  let redis: Redis;

  beforeAll(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    await cleanup.run();
    redis?.disconnect();
    await server?.stop();
  });

  test('one process speaks for it, holding the speaker lease; a second process is refused in one line while it does, and speaks once it left', async () => {
    const directory = await cleanup.tempDir();
    const balancerPort = await freePort();
    const first = await startMeshProcess(cleanup, { cellId: 'cell-b', processId: 'b-1', url: server.url, directory, balancerPort });
    expect((await redis.get('cellmesh:cell-b:speaker'))?.split(' ')[0]).toBe('b-1');
    const refused = await startMeshProcess(cleanup, { cellId: 'cell-b', processId: 'b-2', url: server.url, directory, balancerPort }).then(
      () => undefined,
      (error: Error) => error.message,
    );
    expect(refused).toMatch(/exited \(code 2, signal null\) before listening; stderr:\ncellmesh cell: processes\.id: another process of cell cell-b speaks for it in the mesh already \(it holds the speaker lease in Redis\)[^\n]*$/);
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(await redis.get('cellmesh:cell-b:speaker')).toBeNull();
    await startMeshProcess(cleanup, { cellId: 'cell-b', processId: 'b-2', url: server.url, directory, balancerPort });
    expect((await redis.get('cellmesh:cell-b:speaker'))?.split(' ')[0]).toBe('b-2');
  });
});
