/**
 * Starting, watching and stopping the servers under test. Each runs as its own child process
 * (so the load generator does not share its event loop), with the file-descriptor soft limit
 * raised to the hard limit, `--expose-gc` and the bench's GC hook preloaded (see gc-hook.mjs),
 * and is observed from outside through /proc: resident memory and CPU time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const REPOSITORY_ROOT = fileURLToPath(new URL('..', import.meta.url));
const GC_HOOK_PATH = fileURLToPath(new URL('./gc-hook.mjs', import.meta.url));
/** Kernel clock ticks per second for /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const CLOCK_TICKS_PER_SECOND = 100;
const STDERR_TAIL_CHARS = 4000;
const READY_POLL_MS = 100;
const STOP_GRACE_MS = 5000;

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Children must not outlive the benchmark, whatever way it ends. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const child of running) child.kill('SIGKILL');
      process.exit(130);
    });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface StartServerOptions {
  label: string;
  /** Arguments after `node` (script and its options). */
  nodeArguments: string[];
  /** How readiness shows: a `{"event":"ready","port":N}` line on stdout, or HTTP 200 at a URL. */
  readiness: { kind: 'stdout' } | { kind: 'http'; url: string; port: number };
  readyTimeoutMs: number;
  /** Extra environment variables for the child. */
  environment?: Record<string, string>;
  /** Pins every thread of the server to these CPUs (`taskset -c`), e.g. "0". */
  cpuList?: string;
}

/** What the GC hook (gc-hook.mjs) reports after a collection, bytes. */
export interface GcReport {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  newSpaceSize: number | null;
}

export interface ServerProcess {
  label: string;
  pid: number;
  port: number;
  baseUrl: string;
  /** VmRSS of the server process, bytes. */
  rssBytes(): number;
  /** User plus system CPU time of the server process (all its threads), seconds. */
  cpuSeconds(): number;
  /** The same, split into user and system time. */
  cpuSplit(): { userSeconds: number; systemSeconds: number };
  /** Asks the preloaded GC hook for a full collection (no-op if the process lacks it). */
  collectGarbage(): void;
  /** The memory breakdown the GC hook reported after its latest collection, if any. */
  lastGcReport(): GcReport | undefined;
  stderrTail(): string;
  hasExited(): boolean;
  stop(): Promise<void>;
}

export function readRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** User and system (kernel, on the process's behalf: syscalls, fsync) CPU time of a process, seconds. */
export function readCpuSplit(pid: number): { userSeconds: number; systemSeconds: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    userSeconds: Number(fields[11]) / CLOCK_TICKS_PER_SECOND,
    systemSeconds: Number(fields[12]) / CLOCK_TICKS_PER_SECOND,
  };
}

export function readCpuSeconds(pid: number): number {
  const split = readCpuSplit(pid);
  return split.userSeconds + split.systemSeconds;
}

export interface SystemCpuSample {
  /** CPU time of every process but the excluded ones (other people's work), seconds. */
  otherProcessesSeconds: number;
  /** The same per process, in clock ticks, keyed by pid and start time (a reused pid is another process). */
  otherTicksByProcess: Map<string, number>;
  /** Kernel threads (block I/O and journal commits, ksoftirqd...), seconds. */
  kernelThreadsSeconds: number;
  /** Interrupt and softirq time of the whole machine (mostly loopback networking here), seconds. */
  interruptSeconds: number;
  /** Time the hypervisor gave to other guests while this one wanted it, seconds. */
  stealSeconds: number;
}

/**
 * CPU time of the machine outside the processes in `excludedPids`, from /proc. A process that
 * both starts and ends between two samples is missed; that makes the figure a lower bound.
 */
export function readSystemCpu(excludedPids: readonly number[]): SystemCpuSample {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const irq = fields[5] ?? 0;
  const softirq = fields[6] ?? 0;
  const steal = fields[7] ?? 0;
  let otherTicks = 0;
  const otherTicksByProcess = new Map<string, number>();
  let kernelThreadTicks = 0;
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || excludedPids.includes(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // The process ended between the listing and the read.
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    // Kernel threads (children of kthreadd, pid 2) do work for everyone, the servers' fsyncs
    // and journal commits included: they are not "other people's processes".
    if (pid === 2 || fields[1] === '2') kernelThreadTicks += ticks;
    else {
      otherTicks += ticks;
      otherTicksByProcess.set(`${pid}:${fields[19]}`, ticks);
    }
  }
  return {
    otherProcessesSeconds: otherTicks / CLOCK_TICKS_PER_SECOND,
    otherTicksByProcess,
    kernelThreadsSeconds: kernelThreadTicks / CLOCK_TICKS_PER_SECOND,
    interruptSeconds: (irq + softirq) / CLOCK_TICKS_PER_SECOND,
    stealSeconds: steal / CLOCK_TICKS_PER_SECOND,
  };
}

/**
 * CPU time of other processes between two samples, process by process: one that started in
 * between counts all its time, one that ended in between counts none (a lower bound). The
 * difference of the two totals would instead subtract the whole life of a process that ended
 * in between, and a busy machine could read as idle.
 */
export function otherProcessesSecondsBetween(start: SystemCpuSample, end: SystemCpuSample): number {
  let ticks = 0;
  for (const [process, endTicks] of end.otherTicksByProcess) {
    ticks += endTicks - (start.otherTicksByProcess.get(process) ?? 0);
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function startServer(options: StartServerOptions): Promise<ServerProcess> {
  installExitHook();
  // `exec` keeps the pid (taskset execs too): the child we hold is the node process itself.
  const child = spawn(
    'bash',
    [
      '-c',
      'ulimit -n "$(ulimit -Hn)" && exec "$@"',
      'bench-server',
      ...(options.cpuList === undefined ? [] : ['taskset', '-c', options.cpuList]),
      process.execPath,
      '--expose-gc',
      '--import',
      GC_HOOK_PATH,
      ...options.nodeArguments,
    ],
    {
      cwd: REPOSITORY_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.environment },
    },
  );
  running.add(child);
  let exited = false;
  let stderrTail = '';
  let stderrLine = '';
  let gcReport: GcReport | undefined;
  let stdoutBuffer = '';
  let announcedPort: number | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      running.delete(child);
      resolve();
    });
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    stderrLine += chunk;
    const lines = stderrLine.split('\n');
    stderrLine = (lines.pop() ?? '').slice(-STDERR_TAIL_CHARS);
    for (const line of lines) {
      if (line.startsWith('{"event":"bench-gc"')) {
        try {
          gcReport = JSON.parse(line) as GcReport;
        } catch {
          // Not ours after all; keep it in the tail below.
        }
        continue;
      }
      stderrTail = `${stderrTail}${line}\n`.slice(-STDERR_TAIL_CHARS);
    }
  });
  // stdout is always drained (a full pipe would stall a logging server); only the ready line matters.
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    if (announcedPort !== undefined) return;
    stdoutBuffer = (stdoutBuffer + chunk).slice(-STDERR_TAIL_CHARS);
    for (const line of stdoutBuffer.split('\n')) {
      if (!line.startsWith('{"event":"ready"')) continue;
      try {
        announcedPort = (JSON.parse(line) as { port: number }).port;
      } catch {
        // A partial line: the rest comes with the next chunk.
      }
    }
  });

  const deadlineMs = Date.now() + options.readyTimeoutMs;
  let port: number | undefined;
  while (port === undefined) {
    if (exited) {
      throw new Error(`${options.label} exited before it was ready (code ${child.exitCode}):\n${stderrTail}`);
    }
    if (Date.now() > deadlineMs) {
      child.kill('SIGKILL');
      throw new Error(`${options.label} was not ready within ${options.readyTimeoutMs} ms:\n${stderrTail}`);
    }
    if (options.readiness.kind === 'stdout') {
      port = announcedPort;
    } else {
      try {
        const response = await fetch(options.readiness.url, { signal: AbortSignal.timeout(1000) });
        await response.arrayBuffer();
        if (response.status === 200) port = options.readiness.port;
      } catch {
        // Not listening yet.
      }
    }
    if (port === undefined) await sleep(READY_POLL_MS);
  }

  const pid = child.pid!;
  return {
    label: options.label,
    pid,
    port,
    baseUrl: `ws://127.0.0.1:${port}`,
    rssBytes: () => readRssBytes(pid),
    cpuSeconds: () => readCpuSeconds(pid),
    cpuSplit: () => readCpuSplit(pid),
    collectGarbage: () => {
      if (!exited) child.kill('SIGUSR2');
    },
    lastGcReport: () => gcReport,
    stderrTail: () => stderrTail + stderrLine,
    hasExited: () => exited,
    stop: async () => {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}
