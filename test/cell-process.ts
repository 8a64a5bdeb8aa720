import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { OTHER_SECRET, OTHER_TENANT, SECRET, TENANT } from './harness.js';

const REPOSITORY = new URL('..', import.meta.url).pathname;

/** A cell running as a child process, like a pod: `node bin/cellmesh.js cell --config …`. */
export class CellProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
    readonly stderr: () => string,
  ) {}

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Starts a cell on `dataDirectory` (LevelDB) and resolves once it listens, on a free port or
   * on `port` (pass the previous one to restart the "same" cell).
   */
  static async start(dataDirectory: string, port?: number, limits: Record<string, unknown> = {}): Promise<CellProcess> {
    // An explicit port, even the first time: Linux refuses to bind again a port that was
    // auto-assigned (port 0) to a SO_REUSEPORT listener while its old connections sit in
    // TIME_WAIT, which would make "restart the same cell" flaky.
    port ??= await freePort();
    const configPath = join(dataDirectory, '..', `${dataDirectory.split('/').pop()}.config.json`);
    await writeFile(
      configPath,
      JSON.stringify({
        cell: { id: 'child-cell' },
        listen: { host: '127.0.0.1', port },
        store: { kind: 'level', directory: dataDirectory },
        tenants: [
          { id: TENANT, secret: SECRET, merchants: [{ id: 'm1' }, { id: 'm2' }] },
          { id: OTHER_TENANT, secret: OTHER_SECRET, merchants: [{ id: 'm9' }] },
        ],
        limits: { ratePerSecond: 100_000, rateBurst: 100_000, ...limits },
        log: { level: 'warn' },
      }),
    );
    const child = spawn(process.execPath, [join(REPOSITORY, 'bin/cellmesh.js'), 'cell', '--config', configPath], {
      cwd: REPOSITORY,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-20_000);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const listeningPort = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`cell did not start within 30 s: ${stderr}`)), 30_000);
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        const event = JSON.parse(line) as { event?: string; port?: number };
        if (event.event === 'listening' && event.port !== undefined) {
          clearTimeout(timer);
          resolve(event.port);
        }
      });
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`cell exited before listening (code ${code}, signal ${signal}): ${stderr}`));
      });
    });
    return new CellProcess(child, listeningPort, exited, () => stderr);
  }

  /** Sends a signal and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** A port nothing listens on right now (bound by the kernel, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
