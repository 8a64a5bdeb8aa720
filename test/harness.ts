import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import WebSocket from 'ws';
import { mintToken } from '../cell/access/tokens.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { parseCellConfig, type CellConfig } from '../assembly/config.js';
import { silentLogger, type Logger } from '../platform/logger.js';
import type { Clock } from '../platform/clock.js';
import type { Role, ServerFrame } from '../cell/protocol/frames.js';
import { LevelStore, MemoryStore, StoreError, type RangeQuery, type Store, type StoreOp } from '../platform/store/index.js';

const logLine =
  (level: string) =>
  (fields: object, message?: string): void => {
    console.log(`[cell ${level}] ${message ?? ''} ${JSON.stringify(fields, (_key, value: unknown) => (value instanceof Error ? value.stack : value))}`);
  };
/** Set CELLMESH_TEST_LOG=1 to see the logs of in-process cells. */
const consoleLogger: Logger = { debug: () => {}, info: logLine('info'), warn: logLine('warn'), error: logLine('error') };

/** Test fixtures: one tenant with two merchants, and a second tenant. */
export const TENANT = 'mall';
export const SECRET = 'test-secret-0123456789abcdef-0123456789';
export const OTHER_TENANT = 'market';
export const OTHER_SECRET = 'other-secret-0123456789abcdef-012345678';
export const ALLOWED_ORIGIN = 'http://shop.example';
/** Shared by the cells of a test cluster (child cells with a mesh). */
export const CLUSTER_SECRET = 'test-cluster-secret-0123456789abcdef-01';
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef-0123';
/** The repository root (bin/cellmesh.js lives there). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface TestCell {
  cell: RunningCell;
  config: CellConfig;
  url: string;
  httpUrl: string;
  directory: string;
  stop(): Promise<void>;
}

/** Starts a real cell (uWS on a free loopback port, LevelDB in a temp dir) in this process. */
export async function startTestCell(
  overrides: {
    limits?: Record<string, unknown>;
    store?: 'level' | 'memory';
    /** Browser origins the tenant `mall` allows besides ALLOWED_ORIGIN (exact, like `http://127.0.0.1:8080`). */
    origins?: string[];
    /** Logs of the cell; silent unless CELLMESH_TEST_LOG=1. */
    logger?: Logger;
    /** A store object to use instead of the one `store` names (e.g. a GatedStore). */
    storeInstance?: Store;
    /** The core's clock (rate limits, error allowance, token expiry); a ManualClock makes them virtual. */
    clock?: Clock;
    /** Settings of the `logins` section (lifetimes, rate limits). */
    logins?: Record<string, unknown>;
    /**
     * Agents of merchant `m1`, seeded through the config (so `m1` has a desk), with the passwords
     * of those that log in set through the people directory, as the admin API does.
     */
    agents?: Array<{ id: string; password?: string; name?: string; capacity?: number; groups?: string[]; supervisor?: boolean }>;
    /** Settings of the `desk` section. */
    desk?: Record<string, unknown>;
    /** Turns the admin API on with this token. */
    admin?: string;
  } = {},
): Promise<TestCell> {
  const directory = await mkdtemp(join(tmpdir(), 'cellmesh-test-'));
  const config = parseCellConfig({
    cell: { id: 'test-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: overrides.store === 'memory' ? { kind: 'memory' } : { kind: 'level', directory },
    tenants: [
      {
        id: TENANT,
        secret: SECRET,
        origins: [ALLOWED_ORIGIN, ...(overrides.origins ?? [])],
        merchants: [{ id: 'm1', ...(overrides.agents === undefined ? {} : { agents: overrides.agents.map(({ password: _password, ...seed }) => seed) }) }, { id: 'm2' }],
      },
      { id: OTHER_TENANT, secret: OTHER_SECRET, merchants: [{ id: 'm9' }] },
    ],
    limits: { ratePerSecond: 10_000, rateBurst: 10_000, ...overrides.limits },
    ...(overrides.logins === undefined ? {} : { logins: overrides.logins }),
    ...(overrides.desk === undefined ? {} : { desk: overrides.desk }),
    ...(overrides.admin === undefined ? {} : { admin: { token: overrides.admin } }),
  });
  const cell = await startCell({
    config,
    logger: overrides.logger ?? (process.env['CELLMESH_TEST_LOG'] === '1' ? consoleLogger : silentLogger),
    ...(overrides.storeInstance === undefined ? {} : { store: overrides.storeInstance }),
    ...(overrides.clock === undefined ? {} : { clock: overrides.clock }),
  });
  for (const agent of overrides.agents ?? []) if (agent.password !== undefined) await cell.people.setPassword(TENANT, 'm1', agent.id, agent.password);
  return {
    cell,
    config,
    url: `ws://127.0.0.1:${cell.port}`,
    httpUrl: `http://127.0.0.1:${cell.port}`,
    directory,
    stop: async () => {
      await cell.stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

export interface TokenFor {
  user: string;
  role?: Role;
  merchant?: string;
  device?: string;
  tenant?: string;
  secret?: string;
  /** Names the secret in the token header. */
  kid?: string;
  ttlSeconds?: number;
}

export function tokenFor(options: TokenFor): Promise<string> {
  const role = options.role ?? (options.merchant === undefined ? 'customer' : 'agent');
  return mintToken({
    secret: options.secret ?? (options.tenant === OTHER_TENANT ? OTHER_SECRET : SECRET),
    ...(options.kid === undefined ? {} : { kid: options.kid }),
    tenant: options.tenant ?? TENANT,
    user: options.user,
    role,
    ...(options.merchant === undefined ? {} : { merchant: options.merchant }),
    device: options.device ?? 'd1',
    ttlSeconds: options.ttlSeconds ?? 600,
    nowMs: Date.now(),
  });
}

/**
 * A raw protocol client over a real WebSocket, for tests that check frames exactly. It records
 * every frame and lets a test wait for the next one that matches.
 */
export class RawClient {
  readonly frames: ServerFrame[] = [];
  closeCode: number | undefined;
  closeReason = '';
  /** The last socket error (an invalid frame from the server, a reset...), if any. */
  lastError: Error | undefined;
  private waiters: Array<{ match: (frame: ServerFrame) => boolean; resolve: (frame: ServerFrame) => void; from: number }> = [];
  /** Called after every frame and on close (used by `until`). */
  private readonly watchers = new Set<() => void>();
  private readonly closed: Promise<void>;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      this.frames.push(frame);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.match(frame)) return true;
        waiter.resolve(frame);
        return false;
      });
      for (const watcher of [...this.watchers]) watcher();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        resolve();
        for (const watcher of [...this.watchers]) watcher();
      }),
    );
    // Errors after open (a reset by the server) end in 'close'; without a listener they would throw.
    socket.on('error', (error) => {
      this.lastError = error;
    });
  }

  static async connect(url: string, token: string, options: { origin?: string; protocols?: string[]; merchant?: string } = {}): Promise<RawClient> {
    const routed = options.merchant === undefined ? '' : `&merchant=${encodeURIComponent(options.merchant)}`;
    const socket = new WebSocket(`${url}/v1/ws?token=${encodeURIComponent(token)}${routed}`, options.protocols ?? ['cellmesh.v1'], {
      ...(options.origin === undefined ? {} : { origin: options.origin }),
      perMessageDeflate: false,
    });
    const client = new RawClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('unexpected-response', (_request, response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => reject(new UpgradeRejected(response.statusCode ?? 0, body)));
      });
      socket.once('error', reject);
    });
    // A browser's refused upgrade is answered in band: an error frame, then a close.
    await client.until(() => client.frames.some((frame) => frame.t === 'welcome') || client.closeCode !== undefined, { what: 'welcome' });
    if (!client.frames.some((frame) => frame.t === 'welcome')) {
      const error = client.frames.find((frame) => frame.t === 'error');
      throw new InBandRejected(client.closeCode ?? 0, error?.t === 'error' ? error.code : undefined, client.frames);
    }
    return client;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first frame matching `match` received after this call (or already received, when `fromStart`). */
  next<T extends ServerFrame['t']>(match: ((frame: ServerFrame) => boolean) | T, options: { timeoutMs?: number; fromStart?: boolean } = {}): Promise<ServerFrame> {
    const predicate = typeof match === 'string' ? (frame: ServerFrame) => frame.t === match : match;
    if (options.fromStart === true) {
      const found = this.frames.find(predicate);
      if (found !== undefined) return Promise.resolve(found);
    }
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; last frames: ${JSON.stringify(this.frames.slice(-5))}`)), timeoutMs);
      this.waiters.push({
        match: predicate,
        from: this.frames.length,
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
      });
    });
  }

  /** Sends a request with an id and waits for the frame answering it (result or error). */
  async request(frame: Record<string, unknown> & { id: string }): Promise<ServerFrame> {
    const answer = this.next((received) => 'id' in received && received.id === frame.id);
    this.send(frame);
    return answer;
  }

  messages(conv?: string): Array<Extract<ServerFrame, { t: 'msg' }>> {
    return this.frames.filter((frame): frame is Extract<ServerFrame, { t: 'msg' }> => frame.t === 'msg' && (conv === undefined || frame.conv === conv));
  }

  async close(): Promise<void> {
    if (this.closeCode === undefined) this.socket.close(1000);
    await this.closed;
  }

  whenClosed(): Promise<void> {
    return this.closed;
  }

  /** Resolves once `condition()` holds (checked now, after every frame and on close). */
  until(condition: () => boolean, options: { timeoutMs?: number; what?: string } = {}): Promise<void> {
    if (condition()) return Promise.resolve();
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const watcher = (): void => {
        if (!condition()) return;
        this.watchers.delete(watcher);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(watcher);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${options.what ?? 'a condition'}; ` +
              `closeCode=${String(this.closeCode)} ${this.closeReason}; error=${String(this.lastError)}; last frames: ${JSON.stringify(this.frames.slice(-5)).slice(0, 1500)}`,
          ),
        );
      }, timeoutMs);
      this.watchers.add(watcher);
    });
  }

  /**
   * Acknowledges like a well-behaved client: per conversation, the highest seq up to which it
   * holds every message (pushed as `msg`, or its own answered with `sent`), whenever that grows.
   */
  autoAck(conv?: string): void {
    const held = new Map<string, Set<number>>();
    const contiguous = new Map<string, number>();
    const take = (frame: ServerFrame): void => {
      if ((frame.t !== 'msg' && frame.t !== 'sent') || (conv !== undefined && frame.conv !== conv)) return;
      let seqs = held.get(frame.conv);
      if (seqs === undefined) {
        seqs = new Set();
        held.set(frame.conv, seqs);
      }
      let top = contiguous.get(frame.conv) ?? this.ackBase.get(frame.conv) ?? 0;
      if (frame.seq <= top) return;
      const before = top;
      // The cell pushes only what lies after the device's stored cursor: a device that did not
      // say where it stands (ackBase) holds everything before the first `msg` it is pushed.
      if (frame.t === 'msg' && !contiguous.has(frame.conv) && !this.ackBase.has(frame.conv)) top = frame.seq - 1;
      seqs.add(frame.seq);
      while (seqs.has(top + 1)) seqs.delete(++top);
      for (const seq of seqs) if (seq <= top) seqs.delete(seq);
      if (top > before) {
        contiguous.set(frame.conv, top);
        if (this.socket.readyState === WebSocket.OPEN) this.send({ op: 'ack', conv: frame.conv, seq: top });
      }
    };
    // Frames that came in the same read as `welcome` arrived before this call: they count too.
    for (const frame of this.frames) take(frame);
    this.socket.on('message', (data) => take(JSON.parse(data.toString()) as ServerFrame));
  }

  /** Seqs a device already holds per conversation before `autoAck` starts (its stored cursor). */
  readonly ackBase = new Map<string, number>();

  /** Frames of one type. */
  all<T extends ServerFrame['t']>(type: T): Array<Extract<ServerFrame, { t: T }>> {
    return this.frames.filter((frame): frame is Extract<ServerFrame, { t: T }> => frame.t === type);
  }

  /** Closes without waiting for the close handshake to finish (TCP reset), if still open. */
  terminate(): void {
    this.socket.terminate();
  }
}

/** Collects cleanup steps and runs them newest first; every step runs even when one fails. */
export class Cleanup {
  private readonly steps: Array<() => unknown> = [];

  add(step: () => unknown): void {
    this.steps.push(step);
  }

  async run(): Promise<void> {
    const errors: unknown[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, `cleanup failed: ${errors.map(String).join('; ')}`);
  }

  /** Connects a client and registers its close. */
  async client(url: string, token: string, options: { origin?: string; protocols?: string[] } = {}): Promise<RawClient> {
    const client = await RawClient.connect(url, token, options);
    this.add(() => (client.closeCode === undefined ? closeQuickly(client) : undefined));
    return client;
  }

  /**
   * Connects a client to a cell that a test may kill under it: registers a reset, since no close
   * handshake can finish with a killed cell.
   */
  async resettingClient(url: string, token: string): Promise<RawClient> {
    const client = await RawClient.connect(url, token);
    this.add(() => (client.closeCode === undefined ? client.terminate() : undefined));
    return client;
  }

  /** Starts a cell as a child process and registers its kill. */
  async childCell(options: Parameters<typeof startChildCell>[0]): Promise<ChildCell> {
    const cell = await startChildCell(options);
    this.add(() => killChildCell(cell));
    return cell;
  }

  /** Starts an in-process cell and registers its stop. */
  async cell(overrides: Parameters<typeof startTestCell>[0] = {}): Promise<TestCell> {
    const cell = await startTestCell(overrides);
    this.add(() => cell.stop());
    return cell;
  }

  /** A temporary directory, removed at cleanup. */
  async tempDir(prefix = 'cellmesh-test-'): Promise<string> {
    const directory = await mkdtemp(join(tmpdir(), prefix));
    this.add(() => rm(directory, { recursive: true, force: true }));
    return directory;
  }
}

/** Closes a client politely, or resets it when the close handshake does not finish quickly. */
async function closeQuickly(client: RawClient): Promise<void> {
  const timer = setTimeout(() => client.terminate(), 2_000);
  try {
    await client.close();
  } finally {
    clearTimeout(timer);
  }
}

/** Connects and expects the upgrade to be refused (over HTTP, or in band for a browser); returns the refusal. */
export async function expectUpgradeRejected(
  url: string,
  token: string,
  options: { origin?: string; protocols?: string[] } = {},
): Promise<UpgradeRejected | InBandRejected> {
  let client: RawClient;
  try {
    client = await RawClient.connect(url, token, options);
  } catch (error) {
    if (error instanceof UpgradeRejected || error instanceof InBandRejected) return error;
    throw error;
  }
  await client.close();
  throw new Error('the upgrade was accepted, but a refusal was expected');
}

export interface HttpAnswer {
  status: number;
  body: unknown;
  text: string;
  headers: Headers;
}

/** One HTTP request with an optional bearer token and JSON (or raw) body. */
export async function httpRequest(
  method: string,
  url: string,
  options: { token?: string; json?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers['content-type'] = 'application/json';
  } else if (options.rawBody !== undefined) {
    body = options.rawBody;
    headers['content-type'] ??= 'application/json';
  }
  const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }), signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, text, headers: response.headers };
}

/** The error code of an HTTP error answer (`{error:{code}}`). */
export function errorCodeOf(answer: HttpAnswer): string | undefined {
  return (answer.body as { error?: { code?: string } } | undefined)?.error?.code;
}

export async function fetchMetrics(httpUrl: string): Promise<string> {
  const answer = await httpRequest('GET', `${httpUrl}/v1/metrics`);
  if (answer.status !== 200) throw new Error(`GET /v1/metrics answered ${answer.status}: ${answer.text}`);
  return answer.text;
}

/** Polls `condition` every 20 ms until it holds; fails after `timeoutMs`. */
export async function eventually(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface ChildCell {
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  readonly httpUrl: string;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines the process wrote to stderr (its logs), for failure messages. */
  stderrTail(): string;
  /** Sends a signal; a no-op once the process has ended. */
  kill(signal: NodeJS.Signals): void;
}

/**
 * Writes a config file and starts `node bin/cellmesh.js cell --config <file>` as a child process
 * (LevelDB in `directory`), resolving once it prints its `listening` line. It listens on `port`
 * (pass a stopped cell's port to restart "the same" cell) or on a free one.
 */
export async function startChildCell(options: {
  directory: string;
  configDir: string;
  port?: number;
  limits?: Record<string, unknown>;
  logLevel?: string;
  cellId?: string;
  /** Merchants of tenant `mall` (default m1, m2). */
  merchants?: readonly string[];
  /** The signing secrets of tenant `mall` (default `{ secret: SECRET }`). */
  tenantKeys?: { secret: string } | { secrets: ReadonlyArray<{ kid: string; secret: string }> };
  /** Makes the cell a node of a mesh (libp2p on `host`, `port` or a free one). */
  mesh?: { port?: number; bootstrap?: readonly string[]; timings?: Record<string, number>; operatorKeys?: readonly string[]; keyFile?: string; advertise?: { ws: string; http: string } };
  /** The admin section (a cell in a mesh: default ADMIN_TOKEN alone; a lone cell: none unless given). */
  admin?: { token: string; acceptTokens?: readonly string[] };
  /** The address the cell listens on, for devices and (with `mesh`) libp2p; default 127.0.0.1. */
  host?: string;
  /**
   * A command the cell runs under, such as `['ip', 'netns', 'exec', '<namespace>']`. It must
   * exec node in place (as `ip netns exec` does), so that signals reach the cell.
   */
  commandPrefix?: readonly string[];
  /** The config's store section (default: LevelDB in `directory`), such as a redis store. */
  store?: Record<string, unknown>;
  /** The config's processes section (a process of a cell on Redis: its id, lease timings). */
  processes?: Record<string, unknown>;
}): Promise<ChildCell> {
  const host = options.host ?? '127.0.0.1';
  const mesh =
    options.mesh === undefined
      ? {}
      : {
          mesh: {
            listen: { host, port: options.mesh.port ?? (await freePort()) },
            clusterSecret: CLUSTER_SECRET,
            bootstrap: options.mesh.bootstrap ?? [],
            timings: options.mesh.timings ?? {},
            ...(options.mesh.operatorKeys === undefined ? {} : { operatorKeys: options.mesh.operatorKeys }),
            ...(options.mesh.keyFile === undefined ? {} : { keyFile: options.mesh.keyFile }),
            ...(options.mesh.advertise === undefined ? {} : { advertise: options.mesh.advertise }),
          },
          admin: options.admin ?? { token: ADMIN_TOKEN },
        };
  const config = {
    ...mesh,
    ...(options.mesh === undefined && options.admin !== undefined ? { admin: options.admin } : {}),
    cell: { id: options.cellId ?? 'child-cell' },
    // An explicit port even the first time: Linux refuses to bind again a port that was
    // auto-assigned (port 0) to a SO_REUSEPORT listener while its old connections sit in
    // TIME_WAIT, which would make restarting on the same port flaky.
    listen: { host, port: options.port ?? (await freePort()) },
    store: options.store ?? { kind: 'level', directory: options.directory, sync: true },
    ...(options.processes === undefined ? {} : { processes: options.processes }),
    tenants: [
      { id: TENANT, ...(options.tenantKeys ?? { secret: SECRET }), origins: [ALLOWED_ORIGIN], merchants: (options.merchants ?? ['m1', 'm2']).map((id) => ({ id })) },
      // A second tenant for isolation tests of a lone cell; in a mesh, every cell claiming m9
      // would be a merchant conflict.
      ...(options.mesh === undefined ? [{ id: OTHER_TENANT, secret: OTHER_SECRET, merchants: [{ id: 'm9' }] }] : []),
    ],
    limits: { ratePerSecond: 100_000, rateBurst: 100_000, ...options.limits },
    shutdownGraceSeconds: 10,
    log: { level: options.logLevel ?? 'warn' },
  };
  const configFile = join(options.configDir, `cell-${Date.now()}-${Math.floor(Math.random() * 1e9)}.json`);
  await writeFile(configFile, JSON.stringify(config));
  const [command = process.execPath, ...commandArguments] = [...(options.commandPrefix ?? []), process.execPath, join(REPO_ROOT, 'bin', 'cellmesh.js'), 'cell', '--config', configFile];
  const child = spawn(command, commandArguments, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    // The config file decides: no CELLMESH_* variable of the test's environment overrides it.
    env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
  });
  const stderrLines: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderrLines.push(...chunk.split('\n').filter((line) => line !== ''));
    if (stderrLines.length > 50) stderrLines.splice(0, stderrLines.length - 50);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let ended = false;
  void exited.then(() => (ended = true));
  const stderrTail = (): string => stderrLines.join('\n');
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`the child cell did not print its listening line within 60 s; stderr:\n${stderrTail()}`)), 60_000);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      for (const line of buffered.split('\n').slice(0, -1)) {
        try {
          const event = JSON.parse(line) as { event?: string; port?: number };
          if (event.event === 'listening' && typeof event.port === 'number') {
            clearTimeout(timer);
            resolve(event.port);
          }
        } catch {
          // not our line
        }
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the child cell exited (code ${code}, signal ${signal}) before listening; stderr:\n${stderrTail()}`));
    });
  });
  return {
    child,
    port,
    url: `ws://${host}:${port}`,
    httpUrl: `http://${host}:${port}`,
    exited,
    stderrTail,
    kill: (signal) => {
      if (!ended && child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** A port nothing listens on right now (bound by the kernel, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Kills a child cell (SIGKILL) if it still runs, and waits for it to end. */
export async function killChildCell(cell: ChildCell): Promise<void> {
  cell.kill('SIGKILL');
  await cell.exited;
}

/** An upgrade the cell accepted only to send one error frame and close (how browsers are refused). */
export class InBandRejected extends Error {
  constructor(
    readonly closeCode: number,
    readonly code: string | undefined,
    readonly frames: ServerFrame[],
  ) {
    super(`refused in band with close ${closeCode} and error ${String(code)}: ${JSON.stringify(frames)}`);
  }
}

export class UpgradeRejected extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`upgrade rejected with ${status}: ${body}`);
  }

  get code(): string | undefined {
    try {
      return (JSON.parse(this.body) as { error?: { code?: string } }).error?.code;
    } catch {
      return undefined;
    }
  }
}

export type MsgFrame = Extract<ServerFrame, { t: 'msg' }>;
export type SentFrame = Extract<ServerFrame, { t: 'sent' }>;

/**
 * What one device saw of one conversation, checked against Guarantee 3 and 4: `msg` frames in
 * strictly increasing seq order; a seq skipped by the `msg` stream only when this device had
 * already been answered `sent` for it (its own message); every seq in fromSeq..lastSeq covered.
 * Returns the problems found (empty when the device saw the conversation correctly).
 */
export function deliveryProblems(client: RawClient, conv: string, lastSeq: number, fromSeq = 1): string[] {
  const problems: string[] = [];
  const ownSent = new Set<number>();
  let cursor = fromSeq - 1;
  for (const frame of client.frames) {
    if (frame.t === 'sent' && frame.conv === conv) ownSent.add(frame.seq);
    if (frame.t !== 'msg' || frame.conv !== conv) continue;
    if (frame.seq <= cursor) {
      problems.push(`msg ${frame.seq} arrived after ${cursor} (repeated or out of order)`);
      continue;
    }
    for (let seq = cursor + 1; seq < frame.seq; seq++) {
      if (!ownSent.has(seq)) problems.push(`msg ${frame.seq} arrived but ${seq} was never delivered before it`);
    }
    cursor = frame.seq;
  }
  for (let seq = cursor + 1; seq <= lastSeq; seq++) {
    if (!ownSent.has(seq)) problems.push(`seq ${seq} never reached the device`);
  }
  return problems;
}

/** Whether a device has every seq in fromSeq..lastSeq of `conv`, as `msg` or as its own `sent`. */
export function hasAll(client: RawClient, conv: string, lastSeq: number, fromSeq = 1): boolean {
  const have = new Set<number>();
  for (const frame of client.frames) {
    if ((frame.t === 'msg' || frame.t === 'sent') && frame.conv === conv) have.add(frame.seq);
  }
  for (let seq = fromSeq; seq <= lastSeq; seq++) if (!have.has(seq)) return false;
  return true;
}

/** Sends one message and waits for its `sent` (fails on an error frame). */
export async function sendMessage(client: RawClient, conv: string, cmid: string, body: string, id = `send-${cmid}`): Promise<SentFrame> {
  const answer = await client.request({ id, op: 'send', conv, cmid, body });
  if (answer.t !== 'sent') throw new Error(`send ${cmid} answered ${JSON.stringify(answer)}`);
  return answer;
}

/** What a GatedStore holds while held: writes of chat messages, or range reads of delivery cursors. */
export type GatedOperations = 'message-writes' | 'cursor-reads';

/**
 * A store (memory by default) whose writes of chat messages (`m/...`), or range reads of
 * delivery cursors (`d/...`), can be held: while held, they wait until `release()`. Lets a test
 * keep a cell "busy writing", or a connecting device's cursors not loaded yet.
 */
export class GatedStore implements Store {
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;
  /** Operations currently waiting at the gate. */
  waiting = 0;

  constructor(
    private readonly inner: Store = new MemoryStore(),
    private readonly gated: GatedOperations = 'message-writes',
  ) {}

  hold(): void {
    this.gate ??= new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = undefined;
    this.openGate = undefined;
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  close(): Promise<void> {
    this.release();
    return this.inner.close();
  }

  get(key: string): Promise<string | undefined> {
    return this.inner.get(key);
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.inner.getMany(keys);
  }

  async write(ops: readonly StoreOp[]): Promise<void> {
    if (this.gated === 'message-writes' && ops.some((op) => op.key.startsWith('m/'))) await this.passGate();
    return this.inner.write(ops);
  }

  async range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    if (this.gated === 'cursor-reads' && query.gte.startsWith('d/')) await this.passGate();
    return this.inner.range(query);
  }

  private async passGate(): Promise<void> {
    const gate = this.gate;
    if (gate === undefined) return;
    this.waiting++;
    await gate;
    this.waiting--;
  }
}

/**
 * A real LevelDB store (in `directory`) whose reads and writes can be made to fail on demand, as
 * a failing disk would: the failures are StoreErrors, as LevelStore reports the I/O errors of
 * LevelDB. `failReads` covers get, getMany (and its synchronous form) and range.
 */
export class FailingStore implements Store {
  readonly level: LevelStore;
  failReads = false;
  failWrites = false;
  /** Operations refused so far. */
  failures = 0;

  constructor(directory: string) {
    this.level = new LevelStore({ directory });
  }

  open(): Promise<void> {
    return this.level.open();
  }

  close(): Promise<void> {
    return this.level.close();
  }

  get(key: string): Promise<string | undefined> {
    return this.refuseRead('get') ?? this.level.get(key);
  }

  getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    return this.refuseRead('getMany') ?? this.level.getMany(keys);
  }

  getManySync(keys: readonly string[]): Array<string | undefined> {
    if (this.failReads) throw this.failure('getManySync');
    return this.level.getManySync(keys);
  }

  range(query: RangeQuery): Promise<Array<[key: string, value: string]>> {
    return this.refuseRead('range') ?? this.level.range(query);
  }

  write(ops: readonly StoreOp[]): Promise<void> {
    if (this.failWrites) return Promise.reject(this.failure('write'));
    return this.level.write(ops);
  }

  private refuseRead(operation: string): Promise<never> | undefined {
    return this.failReads ? Promise.reject(this.failure(operation)) : undefined;
  }

  private failure(operation: string): StoreError {
    this.failures++;
    return new StoreError(`test LevelDB store: ${operation} failed`, { cause: new Error('EIO: i/o error (injected by the test)') });
  }
}
