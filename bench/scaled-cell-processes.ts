/**
 * The cells of the scaled-cell benchmark: the embedded LevelDB cell, and a cell on a Redis run as
 * one process or several (docs/operations.md, "A cell of several processes"), each process a real
 * `node bin/cellmesh.js cell` child; the Redis is a real `redis-server` (testing/redis-server.ts)
 * with the durable default, `appendfsync always`. Everything started here is stopped by `stop()`,
 * and killed on the benchmark's exit whatever way it ends (servers.ts and testing/redis-server.ts).
 */
import { closeSync, fdatasyncSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../testing/redis-server.js';
import { TENANT, benchCellConfig, merchantIdOf, type Fixture, type ObservedProcess } from './in-cell.js';
import { REPOSITORY_ROOT, freePort, startServer, type ServerProcess } from './servers.js';

export interface ScaledCellSettings {
  merchants: number;
  /** `processes.leaseTtlMs` and `processes.renewIntervalMs` of every process. */
  leaseTtlMs: number;
  renewIntervalMs: number;
  readyTimeoutMs: number;
}

const CELL_ID = 'bench';
const OWNER_POLL_MS = 100;
const STOP_POLL_MS = 20;

/** The directories of the Redis servers started here: testing/redis-server.ts kills the servers on exit, this removes their data. */
const liveRedisServers = new Set<RedisServer>();
process.on('exit', () => {
  for (const server of liveRedisServers) rmSync(server.dir, { recursive: true, force: true });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * What one small append plus fdatasync costs on the disk under `directory` (the one the LevelDB
 * store and the Redis AOF are on), ms, sorted: the floor under every durable ack.
 */
export function measureFsyncMs(directory: string, count: number): number[] {
  const path = join(directory, 'fsync-probe');
  const descriptor = openSync(path, 'a');
  const block = Buffer.alloc(256, 'x');
  const times: number[] = [];
  try {
    for (let index = 0; index < count; index++) {
      writeSync(descriptor, block);
      const startedMs = performance.now();
      fdatasyncSync(descriptor);
      times.push(performance.now() - startedMs);
    }
  } finally {
    closeSync(descriptor);
    rmSync(path, { force: true });
  }
  return times.sort((left, right) => left - right);
}

/** Counters of a redis-server (INFO), to divide by the messages acknowledged. */
export interface RedisCounters {
  commands: number;
  /** Calls of scripts (EVAL, EVALSHA) and the time Redis spent in them, microseconds. */
  scriptCalls: number;
  scriptMicros: number;
}

/** Sends SIGKILL and waits until the process is gone. */
export async function killProcess(server: ServerProcess): Promise<void> {
  try {
    process.kill(server.pid, 'SIGKILL');
  } catch {
    return;
  }
  while (!server.hasExited()) await sleep(STOP_POLL_MS);
}

/** The embedded LevelDB cell, fsync on: one process. */
export async function startLevelCell(fixture: Fixture, settings: ScaledCellSettings, directory: string): Promise<ServerProcess> {
  const port = await freePort();
  const configPath = join(directory, 'level.json');
  const store = { kind: 'level', directory: join(directory, 'level-store'), sync: true };
  writeFileSync(configPath, JSON.stringify(benchCellConfig(fixture, settings.merchants, port, store)));
  return startServer({
    label: 'level cell',
    nodeArguments: [join(REPOSITORY_ROOT, 'bin', 'cellmesh.js'), 'cell', '--config', configPath],
    readiness: { kind: 'http', url: `http://127.0.0.1:${port}/v1/readyz`, port },
    readyTimeoutMs: settings.readyTimeoutMs,
  });
}

/** A cell on its own redis-server, run as processes that share it; `processIds` are started in order. */
export class RedisCell {
  readonly processes = new Map<string, ServerProcess>();
  private constructor(
    private readonly fixture: Fixture,
    private readonly settings: ScaledCellSettings,
    private readonly directory: string,
    readonly redisServer: RedisServer,
    private readonly client: Redis,
  ) {}

  static async start(fixture: Fixture, settings: ScaledCellSettings, directory: string, processIds: readonly string[]): Promise<RedisCell> {
    mkdirSync(directory, { recursive: true });
    const redisServer = await startRedisServer();
    liveRedisServers.add(redisServer);
    const cell = new RedisCell(fixture, settings, directory, redisServer, new Redis(redisServer.url, { lazyConnect: true }));
    try {
      for (const id of processIds) await cell.startProcess(id);
    } catch (error) {
      await cell.stop();
      throw error;
    }
    return cell;
  }

  /** Starts (or restarts, under the same id and port) one process of the cell. */
  async startProcess(id: string, port?: number): Promise<ServerProcess> {
    const listenPort = port ?? (await freePort());
    const configPath = join(this.directory, `redis-${id}.json`);
    const store = { kind: 'redis', redis: { url: this.redisServer.url } };
    const processes = { id, leaseTtlMs: this.settings.leaseTtlMs, renewIntervalMs: this.settings.renewIntervalMs };
    writeFileSync(configPath, JSON.stringify(benchCellConfig(this.fixture, this.settings.merchants, listenPort, store, { cell: { id: CELL_ID }, processes })));
    const server = await startServer({
      label: `redis cell process ${id}`,
      nodeArguments: [join(REPOSITORY_ROOT, 'bin', 'cellmesh.js'), 'cell', '--config', configPath],
      readiness: { kind: 'http', url: `http://127.0.0.1:${listenPort}/v1/readyz`, port: listenPort },
      readyTimeoutMs: this.settings.readyTimeoutMs,
    });
    this.processes.set(id, server);
    return server;
  }

  process(id: string): ServerProcess {
    const server = this.processes.get(id);
    if (server === undefined) throw new Error(`no process ${id}`);
    return server;
  }

  /** The cell's processes and its redis-server, as a phase observes their CPU. */
  observed(): ObservedProcess[] {
    const observed = [...this.processes].map(([id, server]) => ({ label: id, pid: server.pid }));
    const redisPid = this.redisServer.pid();
    if (redisPid !== undefined) observed.push({ label: 'redis-server', pid: redisPid });
    return observed;
  }

  /** The owner process of each merchant, as recorded in Redis (`owner/<tenant>/<merchant>`). */
  async owners(): Promise<Map<string, string | undefined>> {
    const merchants = Array.from({ length: this.settings.merchants }, (_, index) => merchantIdOf(index));
    const values = await this.client.mget(...merchants.map((merchant) => `cellmesh:${CELL_ID}:owner/${TENANT}/${merchant}`));
    return new Map(merchants.map((merchant, index) => [merchant, values[index]?.split(' ')[0]]));
  }

  /**
   * Waits until every merchant is owned by a live process and the owners are spread over
   * `processIds` (each owns its share, rounded down), then lets every process see the others'
   * claims (a few rounds). Returns the owners.
   */
  async waitForSpread(processIds: readonly string[], timeoutMs: number): Promise<Map<string, string>> {
    const deadlineMs = performance.now() + timeoutMs;
    const share = Math.floor(this.settings.merchants / processIds.length);
    for (;;) {
      const owners = await this.owners();
      const counts = new Map(processIds.map((id) => [id, 0]));
      for (const owner of owners.values()) if (owner !== undefined && counts.has(owner)) counts.set(owner, counts.get(owner)! + 1);
      const allOwned = [...owners.values()].every((owner) => owner !== undefined && counts.has(owner));
      if (allOwned && [...counts.values()].every((count) => count >= share)) {
        await sleep(this.settings.renewIntervalMs * 3);
        return owners as Map<string, string>;
      }
      if (performance.now() > deadlineMs) {
        throw new Error(`the merchants were not spread over ${processIds.join(', ')} within ${timeoutMs} ms: ${JSON.stringify(Object.fromEntries(owners))}`);
      }
      await sleep(OWNER_POLL_MS);
    }
  }

  /** The last lines each process wrote to stderr (warnings and errors), for a phase that went wrong. */
  logTails(): string {
    return [...this.processes].map(([id, server]) => `--- ${id}:\n${server.stderrTail().slice(-1500)}`).join('\n');
  }

  async counters(): Promise<RedisCounters> {
    const info = await this.client.info('all');
    const field = (name: string): number => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
    let scriptCalls = 0;
    let scriptMicros = 0;
    for (const match of info.matchAll(/^cmdstat_(?:eval|evalsha|eval_ro|evalsha_ro):calls=(\d+),usec=(\d+)/gm)) {
      scriptCalls += Number(match[1]);
      scriptMicros += Number(match[2]);
    }
    return { commands: field('total_commands_processed'), scriptCalls, scriptMicros };
  }

  async stop(): Promise<void> {
    await Promise.all([...this.processes.values()].map((server) => server.stop()));
    this.client.disconnect();
    await this.redisServer.stop();
    liveRedisServers.delete(this.redisServer);
  }
}
