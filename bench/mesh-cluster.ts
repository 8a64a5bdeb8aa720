/**
 * Real cell processes of the mesh benchmark: `node bin/cellmesh.js cell --config <file>` with a
 * `mesh` section, LevelDB in a temporary directory, the benchmark's own cluster secret, tenant
 * secret and admin token, uWS and libp2p on free 127.0.0.1 ports. Also the admin and metrics
 * reads the phases need, and the cleanup that leaves no process or directory behind, whatever
 * way the run ends (including SIGINT).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPOSITORY_ROOT, freePort, readCpuSeconds, readSystemCpu } from './servers.js';

export const BENCH_TENANT = 'bench';
const BIN_PATH = join(REPOSITORY_ROOT, 'bin', 'cellmesh.js');
/**
 * A cell process spends 1.5-2 s of CPU before it listens; on a shared 2-core machine where other
 * runs and the cells already started take the cores, that start has taken up to 30 s.
 */
export const LISTENING_TIMEOUT_MS = 60_000;
const HTTP_TIMEOUT_MS = 3_000;
const STDERR_TAIL_LINES = 40;

/** One cell as `GET /v1/admin/cluster` shows it (the fields the benchmark reads). */
export interface CellSummaryView {
  cellId: string;
  liveness: string;
  incarnation: number;
  version: number;
  endpoints: { ws: string; http: string; p2p: string[] };
  merchants: Array<{ tenant: string; merchant: string }>;
  capacity: { maxDevices: number };
}

export interface ClusterView {
  self: string;
  incarnation: number;
  localHealth: number;
  peers: number;
  cells: CellSummaryView[];
}

export interface CellSpec {
  cellId: string;
  /** Merchants of the bench tenant this cell hosts. */
  merchants: string[];
  /** libp2p addresses of running cells; empty for the first. */
  bootstrap: string[];
}

/** A running (or ended) cell process. */
export interface BenchCell {
  readonly spec: CellSpec;
  readonly port: number;
  readonly meshPort: number;
  readonly httpUrl: string;
  readonly wsUrl: string;
  readonly directory: string;
  readonly pid: number;
  /** performance.now() just before the spawn. */
  readonly spawnedAtMs: number;
  /** performance.now() when its `listening` line arrived. */
  readonly listeningAtMs: number;
  /** CPU the process had used (all threads) when its `listening` line arrived: its start-up cost, s. */
  readonly cpuSecondsAtListening: number | null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  kill(signal: NodeJS.Signals): void;
  stderrTail(): string;
}

export interface ClusterSecrets {
  tenantSecret: string;
  clusterSecret: string;
  adminToken: string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const liveClusters = new Set<BenchCluster>();
let hooksInstalled = false;

/** Processes and directories must not outlive the benchmark: exit, SIGINT, SIGTERM. */
function installCleanupHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const cluster of liveClusters) cluster.destroySync();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nmesh: ${signal}: stopping the cells and removing their data\n`);
      for (const cluster of liveClusters) cluster.destroySync();
      process.exit(130);
    });
  }
}

/** The cells of one benchmark run, in one temporary directory. */
export class BenchCluster {
  readonly root: string;
  readonly secrets: ClusterSecrets;
  private readonly children = new Set<ChildProcess>();
  /** Every pid this run started (for the "other processes" CPU figure). */
  readonly allPids = new Set<number>();
  private destroyed = false;

  /**
   * `timings` override the LAN membership timings on every cell; `extraSections` are further
   * top-level sections of every cell's config (the route benchmark raises `routing`'s limits).
   */
  constructor(
    readonly timings: Readonly<Record<string, number>>,
    private readonly extraSections: Readonly<Record<string, unknown>> = {},
  ) {
    installCleanupHooks();
    this.root = mkdtempSync(join(tmpdir(), 'cellmesh-bench-mesh-'));
    this.secrets = {
      tenantSecret: randomBytes(32).toString('base64url'),
      clusterSecret: randomBytes(32).toString('base64url'),
      adminToken: randomBytes(32).toString('base64url'),
    };
    liveClusters.add(this);
  }

  /** Starts a cell and resolves once it printed its `listening` line. Ports are kept for restarts. */
  async start(spec: CellSpec, ports?: { port: number; meshPort: number }): Promise<BenchCell> {
    const port = ports?.port ?? (await freePort());
    const meshPort = ports?.meshPort ?? (await freePort());
    const directory = join(this.root, spec.cellId);
    mkdirSync(directory, { recursive: true });
    const config = {
      cell: { id: spec.cellId },
      listen: { host: '127.0.0.1', port },
      store: { kind: 'level', directory: join(directory, 'store'), sync: true },
      tenants: [{ id: BENCH_TENANT, secret: this.secrets.tenantSecret, merchants: spec.merchants.map((id) => ({ id })) }],
      limits: { ratePerSecond: 100_000, rateBurst: 100_000 },
      mesh: {
        listen: { host: '127.0.0.1', port: meshPort },
        clusterSecret: this.secrets.clusterSecret,
        bootstrap: spec.bootstrap,
        timings: { ...this.timings },
      },
      admin: { token: this.secrets.adminToken },
      shutdownGraceSeconds: 5,
      log: { level: 'warn' },
      ...this.extraSections,
    };
    const configPath = join(directory, 'cell.json');
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    const spawnedAtMs = performance.now();
    const child = spawn(process.execPath, [BIN_PATH, 'cell', '--config', configPath], {
      cwd: REPOSITORY_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // The config file decides: no CELLMESH_* variable of this environment overrides it.
      env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
    });
    if (child.pid === undefined) throw new Error(`cell ${spec.cellId} could not be spawned`);
    const pid = child.pid;
    this.children.add(child);
    this.allPids.add(pid);
    let ended = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => {
        ended = true;
        this.children.delete(child);
        resolve({ code, signal });
      }),
    );
    const stderrLines: string[] = [];
    let partial = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      stderrLines.push(...lines.filter((line) => line !== ''));
      if (stderrLines.length > STDERR_TAIL_LINES) stderrLines.splice(0, stderrLines.length - STDERR_TAIL_LINES);
    });
    const stderrTail = (): string => [...stderrLines, partial].join('\n').trim();
    let cpuSecondsAtListening: number | null = null;
    const listeningAtMs = await new Promise<number>((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`cell ${spec.cellId} did not print its listening line within ${LISTENING_TIMEOUT_MS} ms; its log ends with:\n${stderrTail()}`));
      }, LISTENING_TIMEOUT_MS);
      let listening = false;
      // stdout is always drained, so a chatty cell never blocks on a full pipe.
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        if (listening) return;
        buffered += chunk;
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          try {
            const event = JSON.parse(line) as { event?: string };
            if (event.event === 'listening') {
              listening = true;
              clearTimeout(timer);
              cpuSecondsAtListening = cpuSecondsOfPid(pid);
              resolve(performance.now());
              return;
            }
          } catch {
            // Not the line we wait for.
          }
        }
      });
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`cell ${spec.cellId} exited (code ${code}, signal ${signal}) before listening; its log ends with:\n${stderrTail()}`));
      });
    });
    return {
      spec,
      port,
      meshPort,
      httpUrl: `http://127.0.0.1:${port}`,
      wsUrl: `ws://127.0.0.1:${port}`,
      directory,
      pid,
      spawnedAtMs,
      listeningAtMs,
      cpuSecondsAtListening,
      exited,
      hasExited: () => ended,
      kill: (signal) => {
        if (!ended) child.kill(signal);
      },
      stderrTail,
    };
  }

  /** SIGTERM (a graceful leave), then SIGKILL after `graceMs`; resolves once the process ended. */
  async stop(cell: BenchCell, graceMs = 10_000): Promise<{ graceful: boolean }> {
    if (cell.hasExited()) return { graceful: true };
    cell.kill('SIGCONT');
    cell.kill('SIGTERM');
    const timer = setTimeout(() => cell.kill('SIGKILL'), graceMs);
    const { signal } = await cell.exited;
    clearTimeout(timer);
    return { graceful: signal !== 'SIGKILL' };
  }

  /** Kills every cell still running (SIGKILL works on stopped processes too) and waits for them. */
  async stopAll(): Promise<void> {
    const exits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await Promise.race([Promise.all(exits), sleep(10_000)]);
  }

  /** Kills everything and removes the data; safe to call more than once. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await this.stopAll();
    this.destroySync();
  }

  /** The synchronous part of `destroy`, usable from an exit handler. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.children) child.kill('SIGKILL');
    rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
    liveClusters.delete(this);
  }

  // -------------------------------------------------------------------------------------------
  // HTTP reads and writes

  async adminGet<T>(cell: BenchCell, path: string, timeoutMs = HTTP_TIMEOUT_MS): Promise<T> {
    const response = await fetch(`${cell.httpUrl}${path}`, {
      headers: { authorization: `Bearer ${this.secrets.adminToken}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`${cell.spec.cellId} GET ${path}: HTTP ${response.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }

  async adminPost<T>(cell: BenchCell, path: string, body: unknown, timeoutMs = HTTP_TIMEOUT_MS): Promise<T> {
    const response = await fetch(`${cell.httpUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.secrets.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`${cell.spec.cellId} POST ${path}: HTTP ${response.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }

  view(cell: BenchCell, timeoutMs = HTTP_TIMEOUT_MS): Promise<ClusterView> {
    return this.adminGet<ClusterView>(cell, '/v1/admin/cluster', timeoutMs);
  }

  /** `GET /v1/route` for a merchant of the bench tenant: the home cell's id, or undefined (404). */
  async routeOf(cell: BenchCell, merchant: string, timeoutMs = HTTP_TIMEOUT_MS): Promise<string | undefined> {
    const response = await fetch(`${cell.httpUrl}/v1/route?tenant=${BENCH_TENANT}&merchant=${encodeURIComponent(merchant)}`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw new Error(`${cell.spec.cellId} GET /v1/route: HTTP ${response.status} ${text.slice(0, 300)}`);
    return (JSON.parse(text) as { cellId: string }).cellId;
  }

  async metrics(cell: BenchCell, timeoutMs = HTTP_TIMEOUT_MS): Promise<string> {
    const response = await fetch(`${cell.httpUrl}/v1/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`${cell.spec.cellId} GET /v1/metrics: HTTP ${response.status}`);
    return text;
  }

  /** The cell's own libp2p address (with its peer id), for others to bootstrap through. */
  async meshAddressOf(cell: BenchCell): Promise<string> {
    const view = await this.view(cell);
    const address = view.cells.find((seen) => seen.cellId === view.self)?.endpoints.p2p[0];
    if (address === undefined) throw new Error(`cell ${cell.spec.cellId} shows no mesh address`);
    return address;
  }
}

/** CPU used so far by a process (all threads), seconds; null once it is gone. */
function cpuSecondsOfPid(pid: number): number | null {
  try {
    return readCpuSeconds(pid);
  } catch {
    return null;
  }
}

/**
 * Bytes a cell process has read and written so far (`rchar`, `wchar` of /proc/<pid>/io: sockets
 * and files, whether or not they reached a disk); null once it exited. Unlike its CPU, this does
 * not depend on how busy the machine is: an idle cell's bytes are its mesh traffic.
 */
export function ioBytesOf(cell: BenchCell): { read: number; written: number } | null {
  if (cell.hasExited()) return null;
  try {
    const text = readFileSync(`/proc/${cell.pid}/io`, 'utf8');
    const field = (name: string): number => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    const read = field('rchar');
    const written = field('wchar');
    return Number.isFinite(read) && Number.isFinite(written) ? { read, written } : null;
  } catch {
    return null;
  }
}

/** CPU used so far by a cell process, seconds; null once it exited. */
export function cpuSecondsOf(cell: BenchCell): number | null {
  return cell.hasExited() ? null : cpuSecondsOfPid(cell.pid);
}

/** CPU used by processes other than this one and the cells since it was made (a phase, a window). */
export class OtherCpu {
  private readonly startedMs = performance.now();
  private readonly before: number;

  constructor(private readonly cluster: BenchCluster) {
    this.before = readSystemCpu(this.excluded()).otherProcessesSeconds;
  }

  private excluded(): number[] {
    return [process.pid, process.ppid, ...this.cluster.allPids];
  }

  /** Percent of one core. */
  percent(): number {
    const seconds = readSystemCpu(this.excluded()).otherProcessesSeconds - this.before;
    const wallSeconds = Math.max(0.001, (performance.now() - this.startedMs) / 1000);
    return Math.max(0, (seconds / wallSeconds) * 100);
  }
}

/** Waits until every cell in `cells` sees every one of them alive; returns the time it took, ms. */
export async function waitAllAlive(cluster: BenchCluster, cells: readonly BenchCell[], timeoutMs: number, what: string): Promise<number> {
  const startedMs = performance.now();
  const ids = cells.map((cell) => cell.spec.cellId);
  let problems: string[] = [];
  const done = await pollUntil(
    async () => {
      problems = [];
      for (const cell of cells) {
        let view: ClusterView;
        try {
          // A starved cell may take seconds to answer; its view is what counts, not its latency.
          view = await cluster.view(cell);
        } catch (error) {
          problems.push(`${cell.spec.cellId} did not answer (${error instanceof Error ? error.message : String(error)})`);
          continue;
        }
        for (const id of ids) {
          const liveness = view.cells.find((seen) => seen.cellId === id)?.liveness;
          if (liveness !== 'alive') problems.push(`${cell.spec.cellId} sees ${id} as ${liveness ?? 'unknown'}`);
        }
        // Until the first cells agree, a round stops there: every cell polled costs it CPU.
        if (problems.length > 0 && performance.now() - startedMs < timeoutMs - 2_000) return false;
      }
      return problems.length === 0;
    },
    { intervalMs: 50, timeoutMs },
  );
  if (done === null) {
    const shown = problems.slice(0, 12).join('; ');
    throw new Error(`${what}: not every cell saw every other alive within ${timeoutMs} ms (${problems.length} views disagree: ${shown}${problems.length > 12 ? '; ...' : ''})`);
  }
  return done - startedMs;
}

/**
 * Polls `probe` (its own round trip, then `intervalMs`) until it returns true; resolves with
 * performance.now() at the answer that said so, or null after `timeoutMs`. Errors of a probe
 * (a cell busy or restarting) count as "not yet".
 */
export async function pollUntil(probe: () => Promise<boolean>, options: { intervalMs: number; timeoutMs: number }): Promise<number | null> {
  const deadline = performance.now() + options.timeoutMs;
  for (;;) {
    let done = false;
    try {
      done = await probe();
    } catch {
      done = false;
    }
    const nowMs = performance.now();
    if (done) return nowMs;
    if (nowMs >= deadline) return null;
    await sleep(options.intervalMs);
  }
}

export { sleep };
