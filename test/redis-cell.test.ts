/**
 * A one-process cell on the redis store (issue 19), through the real CLI: it keeps what it
 * acknowledged across a kill -9 and a restart, and refuses to start on a Redis that cannot keep
 * the durable ack (one line naming the setting and the fix, exit 2), unless told to accept it.
 * Each test starts its own redis-server; without the binary the file reports itself skipped.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, test } from 'vitest';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { redisServerMissing, startRedisServer, type RedisServer, type RedisServerOptions } from '../testing/redis-server.js';
import { Cleanup, REPO_ROOT, SECRET, freePort, killChildCell, sendMessage, tokenFor } from './harness.js';

const skipReason = redisServerMissing();
if (skipReason !== undefined) console.warn(`redis-cell.test.ts: skipped: ${skipReason}`);

const CONV = 'm1:alice';
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function redisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const server = await startRedisServer(options);
  cleanup.add(() => server.stop());
  return server;
}

describe.skipIf(skipReason !== undefined)(`a cell on the redis store${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`, () => {
  test('keeps every acknowledged message across a kill -9 and a restart of the cell', async () => {
    const redis = await redisServer();
    const configDir = await cleanup.tempDir();
    const start = (): ReturnType<typeof cleanup.childCell> =>
      cleanup.childCell({ directory: configDir, configDir, store: { kind: 'redis', redis: { url: redis.url } } });
    const token = await tokenFor({ user: 'alice' });

    const first = await start();
    const device = await cleanup.resettingClient(first.url, token);
    const bodies = Array.from({ length: 5 }, (_, index) => `message ${index + 1}`);
    for (const [index, body] of bodies.entries()) await sendMessage(device, CONV, `c${index}`, body);
    await killChildCell(first);

    const second = await start();
    const again = await cleanup.client(second.url, token);
    const history = (await again.request({ id: 'h', op: 'history', conv: CONV })) as Extract<ServerFrame, { t: 'history' }>;
    expect(history.messages.map((message) => [message.seq, message.body])).toEqual(bodies.map((body, index) => [index + 1, body]));
    // The conversation goes on after the last seq Redis kept.
    expect((await sendMessage(again, CONV, 'c-after', 'after the restart')).seq).toBe(bodies.length + 1);
  });

  test('keeps each cell under its own key prefix', async () => {
    const redis = await redisServer();
    const configDir = await cleanup.tempDir();
    await cleanup.childCell({ directory: configDir, configDir, cellId: 'cell-a', store: { kind: 'redis', redis: { url: redis.url } } });
    await cleanup.childCell({ directory: configDir, configDir, cellId: 'cell-b', store: { kind: 'redis', redis: { url: redis.url, keyPrefix: 'pod-b/' } } });
    const keys = await redisKeys(redis);
    // The store's two keys, and the processes' leases and merchant owners (docs/operations.md, "A cell of several processes").
    const store = keys.filter((key) => /(index|values)$/.test(key));
    expect(store).toEqual(['cellmesh:cell-a:index', 'cellmesh:cell-a:values', 'pod-b/index', 'pod-b/values']);
    expect(keys.filter((key) => !store.includes(key)).every((key) => /^(cellmesh:cell-a:|pod-b\/)(fence|(proc|addr|owner)\/.+)$/.test(key))).toBe(true);
  });

  test('refuses a Redis with appendfsync everysec in one line naming the fix, given by --store redis --redis-url', async () => {
    const redis = await redisServer({ appendfsync: 'everysec' });
    const ended = await runCell(await cleanup.tempDir(), {}, ['--store', 'redis', '--redis-url', redis.url]);
    expect(ended.code, `stdout: ${ended.stdout}\nstderr: ${ended.stderr}`).toBe(2);
    const lines = ended.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^cellmesh cell: store\\.redis: the Redis at 127\\.0\\.0\\.1:${redis.port} cannot keep the durable ack: appendfsync is everysec`));
    expect(lines[0]).toMatch(/fix: run Redis with appendfsync always/);
    expect(lines[0]).toMatch(/set store\.redis\.acceptWeakDurability: true$/);
  });

  test('starts on such a Redis with store.redis.acceptWeakDurability, and warns', async () => {
    const redis = await redisServer({ appendfsync: 'everysec' });
    const ended = await runCell(await cleanup.tempDir(), { store: { kind: 'redis', redis: { url: redis.url, acceptWeakDurability: true } } });
    expect(ended.stdout).toMatch(/"event":"listening"/);
    expect(ended.stderr).toMatch(/store\.redis\.acceptWeakDurability: this Redis cannot keep the durable ack.*appendfsync is everysec/);
  });

  test('names store.redis.url when nothing answers there', async () => {
    const port = await freePort();
    const ended = await runCell(await cleanup.tempDir(), {}, ['--store', 'redis', '--redis-url', `redis://127.0.0.1:${port}`]);
    expect(ended.code, ended.stderr).toBe(2);
    expect(ended.stderr.trimEnd()).toMatch(new RegExp(`^cellmesh cell: store\\.redis\\.url: cannot open the Redis store at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });
});

interface Ended {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cellmesh cell` with a config of one tenant plus `extra`, and `args`, until it exits; a
 * cell that starts listening is stopped (SIGTERM) once it has, so both outcomes end.
 */
async function runCell(configDir: string, extra: Record<string, unknown>, args: readonly string[] = []): Promise<Ended> {
  const file = join(configDir, 'cell.json');
  const config = { cell: { id: 'redis-cell' }, listen: { host: '127.0.0.1', port: await freePort() }, tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }], log: { level: 'warn' }, ...extra };
  await writeFile(file, JSON.stringify(config));
  const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'cellmesh.js'), 'cell', '--config', file, ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (stdout.includes('"event":"listening"')) child.kill('SIGTERM');
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Every key of a Redis, sorted (KEYS is fine on a test server). */
async function redisKeys(redis: RedisServer): Promise<string[]> {
  const client = new Redis(redis.url);
  try {
    return (await client.keys('*')).sort();
  } finally {
    client.disconnect();
  }
}
