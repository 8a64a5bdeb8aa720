/**
 * A real `redis-server` for tests: its own process, free port and temporary directory.
 *
 *   const reason = redisServerMissing();             // undefined when the binary is there
 *   describe.skipIf(reason !== undefined)(`... ${reason ? `(skipped: ${reason})` : ''}`, ...)
 *   const redis = await startRedisServer();          // durable by default
 *   new RedisStore({ url: redis.url, ... });
 *   await redis.kill('SIGKILL'); await redis.restart();  // same port, same directory
 *   await redis.stop();                              // final: ends it and removes the directory
 *   await startRedisServer({ replicaOfPort: redis.port });  // a replica, for WAIT
 *
 * By default the server keeps the durable ack of the Store port: `appendonly yes` with
 * `appendfsync always` (Redis fsyncs the AOF before it replies), no RDB snapshots, bound to
 * 127.0.0.1 in protected mode. The options weaken it on purpose, to test the refusal at start.
 * The binary is `/usr/bin/redis-server` (Debian's), or `$CELLMESH_REDIS_SERVER` when set.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServerOptions {
  /** `appendonly` (default true). */
  appendonly?: boolean;
  /** `appendfsync` (default 'always'). */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** `save`, RDB snapshot points such as '60 1' (default '': no snapshots). */
  save?: string;
  /** Renames CONFIG away, as managed Redis services do (default false). */
  disableConfigCommand?: boolean;
  /** Starts a replica of the server on this port (`replicaof 127.0.0.1 <port>`). */
  replicaOfPort?: number;
}

export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** The server's working directory (its AOF and snapshots), kept across restart(). */
  readonly dir: string;
  /** Sends `signal` (default SIGKILL) and waits for the process to end; the directory stays. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and directory (after kill()), once it answers PING. */
  restart(): Promise<void>;
  /** Shuts the server down (if it runs) and removes its directory. Final and idempotent. */
  stop(): Promise<void>;
  /** The server's last lines of output, for failure messages. */
  logTail(): string;
}

const DEFAULT_BINARY = '/usr/bin/redis-server';
const READY_TIMEOUT_MS = 10_000;
const LOG_TAIL_CHARS = 4_000;

/** Servers still running, killed when the test process exits so that none outlives a failed run. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function binaryPath(): string {
  return process.env['CELLMESH_REDIS_SERVER'] ?? DEFAULT_BINARY;
}

/** Why tests cannot start a Redis here, or undefined when they can. */
export function redisServerMissing(): string | undefined {
  const binary = binaryPath();
  try {
    accessSync(binary, fsConstants.X_OK);
    return undefined;
  } catch {
    return `${binary} is not installed (Debian: apt-get install redis-server; or set CELLMESH_REDIS_SERVER)`;
  }
}

/** Starts a redis-server and resolves once it answers PING. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const missing = redisServerMissing();
  if (missing !== undefined) throw new Error(`cannot start Redis: ${missing}`);
  const dir = await mkdtemp(join(tmpdir(), 'cellmesh-redis-'));
  const port = await freePort();
  const args = serverArguments(port, dir, options);
  let log = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  const launch = async (): Promise<void> => {
    const spawned = spawn(binaryPath(), args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = spawned;
    running.add(spawned);
    const append = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-LOG_TAIL_CHARS);
    };
    spawned.stdout!.on('data', append);
    spawned.stderr!.on('data', append);
    exited = new Promise((resolve) =>
      spawned.once('exit', () => {
        running.delete(spawned);
        resolve();
      }),
    );
    await waitForPong(port, spawned, () => log);
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };

  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    kill,
    restart: async () => {
      if (stopped) throw new Error('restart() after stop(): the directory is gone');
      await kill('SIGKILL');
      await launch();
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // SIGTERM: Redis flushes its AOF and exits; nothing is left to keep anyway.
      await kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
    logTail: () => log,
  };
}

function serverArguments(port: number, dir: string, options: RedisServerOptions): string[] {
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--protected-mode', 'yes',
    '--dir', dir,
    '--daemonize', 'no',
    '--logfile', '',
    '--appendonly', options.appendonly === false ? 'no' : 'yes',
    '--appendfsync', options.appendfsync ?? 'always',
    '--save', options.save ?? '',
    // A replica's first synchronisation starts at once, not after Redis's default 5 s wait.
    '--repl-diskless-sync-delay', '0',
  ];
  if (options.disableConfigCommand === true) args.push('--rename-command', 'CONFIG', '');
  if (options.replicaOfPort !== undefined) args.push('--replicaof', '127.0.0.1', String(options.replicaOfPort));
  return args;
}

/** Polls with a raw PING until the server answers +PONG (not -LOADING while it replays its AOF). */
async function waitForPong(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}) before answering PING:\n${log()}`);
    }
    if (await answersPong(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer PING within ${READY_TIMEOUT_MS} ms:\n${log()}`);
}

function answersPong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
  });
}

/** A port nothing listens on right now (bound by the kernel, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
