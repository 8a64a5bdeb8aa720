import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mintToken } from '../cell/access/tokens.js';
import { ErrorCode } from '../cell/protocol/errors.js';
import { connectNode, conversationIdOf, type CellmeshClient } from '../client/index.js';
import { CliError, ExitCode, type ExitCodeValue } from './cli-errors.js';
import {
  DEMO_TENANT,
  DEMO_TENANT_SECRET,
  demoCells,
  demoExtraCell,
  fetchClusterView,
  logPathOf,
  meshAddressOf,
  pidPathOf,
  readBootstrapFile,
  readPortBaseFile,
  spawnDemoCell,
  waitReady,
  writeBootstrapFile,
  writeDemoCellConfig,
  writePortBaseFile,
  type DemoCell,
} from './demo-cluster.js';

interface DemoCommandOptions {
  dataDir: string;
}

interface DemoStartOptions extends DemoCommandOptions {
  portBase: number;
}

const READY_TIMEOUT_MS = 30_000;
const CONVERGE_TIMEOUT_MS = 20_000;
const TOKEN_TTL_SECONDS = 24 * 3600;
const CUSTOMERS = ['alice', 'dave'];

/**
 * `npm start`: a demo cluster of three cells on this machine (the platform's own store and two
 * groups of merchants), meshed over libp2p, with agents that answer automatically, a first
 * conversation, and ready-made commands to chat, add a fourth cell and stop one.
 */
export async function runDemoCommand(options: DemoStartOptions): Promise<void> {
  const { dataDir, portBase } = options;
  const cells = demoCells(portBase);
  const allCells = [...cells, demoExtraCell(portBase)];
  writePortBaseFile(dataDir, portBase);
  const bots: CellmeshClient[] = [];
  const group = new DemoCellProcesses(dataDir);
  stopOnSignals(() => {
    for (const bot of bots) void bot.close();
    group.stop();
  });

  const first = cells[0] as DemoCell;
  try {
    const firstChild = group.start(first, []);
    await waitReady(first.port, READY_TIMEOUT_MS, firstChild);
    const bootstrap = [await meshAddressOf(first.port)];
    writeBootstrapFile(dataDir, bootstrap);
    const others = cells.slice(1).map((cell) => ({ cell, child: group.start(cell, bootstrap) }));
    for (const { cell, child } of others) await waitReady(cell.port, READY_TIMEOUT_MS, child);
    await waitConverged(cells, CONVERGE_TIMEOUT_MS);
  } catch (error) {
    // Stopped while starting: the cells are leaving, and the command exits when they have.
    if (group.isStopping()) return;
    process.stderr.write(`cellmesh demo: ${(error as Error).message}; see the logs in ${dataDir}/logs\n`);
    group.stop(ExitCode.Failed);
    return;
  }
  group.announceExits();

  try {
    for (const cell of cells) for (const merchant of cell.merchants) bots.push(await startAnsweringAgent(cell, merchant, allCells));
    const opening = await connectNode({ url: wsUrlOf(cells[1] as DemoCell), token: await token('alice', 'demo-seed') });
    await opening.send(conversationIdOf('acme-shoes', 'alice'), 'Hello! Is the trail runner in stock in size 44?', { cmid: 'demo-opening' });
    await opening.close();
  } catch (error) {
    // Stopped while the agents connected: likewise.
    if (group.isStopping()) return;
    throw error;
  }
  process.stdout.write(await describeCluster(dataDir, cells));
}

/** `cellmesh demo add-cell`: a fourth cell joins the running demo cluster; Ctrl-C makes it leave. */
export async function runDemoAddCellCommand(options: DemoCommandOptions): Promise<void> {
  const { dataDir } = options;
  const portBase = readPortBaseFile(dataDir);
  const cells = demoCells(portBase);
  const cell = demoExtraCell(portBase);
  const bootstrap = readBootstrapFile(dataDir);
  const startedMs = performance.now();
  let bot: CellmeshClient | undefined;
  const group = new DemoCellProcesses(dataDir);
  stopOnSignals(() => {
    void bot?.close();
    group.stop();
  });
  const child = group.start(cell, bootstrap);
  group.announceExits();
  try {
    await waitReady(cell.port, READY_TIMEOUT_MS, child);
    await waitConverged([...cells.filter((other) => isRunning(dataDir, other.id)), cell], CONVERGE_TIMEOUT_MS);
  } catch (error) {
    // Stopped while joining: the cell is leaving, and the command exits when it has.
    if (group.isStopping()) return;
    throw error;
  }
  const joinedMs = Math.round(performance.now() - startedMs);
  const [demoMerchant] = cell.merchants;
  if (demoMerchant === undefined) throw new Error(`demo cell ${cell.id} hosts no merchant`);
  bot = await startAnsweringAgent(cell, demoMerchant, [...cells, cell]);
  const merchant = demoMerchant.id;
  process.stdout.write(
    [
      '',
      `cell ${cell.id} (${cell.role}) joined the demo cluster in ${joinedMs} ms; every cell now routes ${merchant} to it:`,
      `  curl -s 'http://127.0.0.1:${cells[0]?.port}/v1/route?tenant=${DEMO_TENANT}&merchant=${merchant}'`,
      'Chat with its merchant:',
      `  npx cellmesh chat --cluster http://127.0.0.1:${cells[0]?.port} --conv ${conversationIdOf(merchant, 'alice')} --token ${await token('alice', 'phone')}`,
      'Ctrl-C here makes the cell leave gracefully (the others see it as left at once).',
      '',
    ].join('\n'),
  );
}

/** `cellmesh demo stop-cell <id>`: stops one cell of the demo cluster gracefully (SIGTERM). */
export async function runDemoStopCellCommand(cellId: string, options: DemoCommandOptions): Promise<void> {
  const pidPath = pidPathOf(options.dataDir, cellId);
  if (!existsSync(pidPath)) throw new CliError(`no demo cell '${cellId}' is running from ${options.dataDir}`, ExitCode.Failed);
  const pid = Number(readFileSync(pidPath, 'utf8'));
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    rmSync(pidPath, { force: true });
    throw new CliError(`demo cell '${cellId}' (pid ${pid}) is not running`, ExitCode.Failed);
  }
  const deadline = performance.now() + 15_000;
  while (isAlive(pid) && performance.now() < deadline) await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  rmSync(pidPath, { force: true });
  const portBase = readPortBaseFile(options.dataDir);
  const witness = [...demoCells(portBase), demoExtraCell(portBase)].find((cell) => cell.id !== cellId && isRunning(options.dataDir, cell.id));
  const seen = witness === undefined ? undefined : (await fetchClusterView(witness.port)).cells.find((cell) => cell.cellId === cellId)?.liveness;
  process.stdout.write(`cell ${cellId} stopped${seen === undefined ? '' : `; ${witness?.id} now sees it as '${seen}'`}\n`);
}

/**
 * Runs `stop` on the first SIGINT, SIGTERM or SIGHUP (Ctrl-C, an orchestrator, a closed
 * terminal). Each further signal stops the cells again, which they take as "exit now".
 */
function stopOnSignals(stop: () => void): void {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, stop);
}

/**
 * The cell processes of one demo command. It alone signals them (they run in process groups of
 * their own): `stop` sends each one SIGTERM, and once all have exited the command exits, 0 when
 * every cell stopped gracefully. Cells still running when this process exits otherwise get
 * SIGTERM too, so none is left behind.
 */
class DemoCellProcesses {
  private readonly running = new Map<string, ChildProcess>();
  private stopping = false;
  private announcing = false;
  private exitCode: ExitCodeValue = ExitCode.Ok;

  constructor(private readonly dataDir: string) {
    process.once('exit', () => {
      for (const child of this.running.values()) child.kill('SIGTERM');
    });
  }

  start(cell: DemoCell, bootstrap: readonly string[]): ChildProcess {
    writeDemoCellConfig(this.dataDir, cell, bootstrap);
    const child = spawnDemoCell(this.dataDir, cell);
    this.running.set(cell.id, child);
    child.once('exit', (code, signal) => {
      this.running.delete(cell.id);
      rmSync(pidPathOf(this.dataDir, cell.id), { force: true });
      // A cell ended by our SIGTERM itself had not yet begun to listen for it: it held nothing yet.
      const stoppedBeforeStart = this.stopping && signal === 'SIGTERM';
      if (code !== 0 && !stoppedBeforeStart) this.exitCode = ExitCode.Failed;
      const how = signal ?? `exit ${code}`;
      if (this.stopping) process.stdout.write(`cell ${cell.id} stopped (${how})\n`);
      else if (this.announcing) process.stdout.write(`\n(cell ${cell.id} stopped: ${how}; ${this.running.size === 0 ? 'none is left' : 'the others go on'})\n`);
      if (this.running.size === 0 && (this.stopping || this.announcing)) process.exit(this.exitCode);
    });
    return child;
  }

  isStopping(): boolean {
    return this.stopping;
  }

  /** From now on, a cell that stops on its own (`demo stop-cell`) is reported; the last one ends the command. */
  announceExits(): void {
    this.announcing = true;
  }

  /** Stops every cell (SIGTERM); the command exits with `exitCode` at the latest once they have. */
  stop(exitCode: ExitCodeValue = ExitCode.Ok): void {
    this.stopping = true;
    if (exitCode !== ExitCode.Ok) this.exitCode = exitCode;
    if (this.running.size === 0) process.exit(this.exitCode);
    for (const child of this.running.values()) child.kill('SIGTERM');
  }
}

function isRunning(dataDir: string, cellId: string): boolean {
  const pidPath = pidPathOf(dataDir, cellId);
  return existsSync(pidPath) && isAlive(Number(readFileSync(pidPath, 'utf8')));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until every cell's view lists all of `cells` as alive. */
async function waitConverged(cells: readonly DemoCell[], timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const views = await Promise.all(cells.map((cell) => fetchClusterView(cell.port).catch(() => undefined)));
    const converged = views.every(
      (view) => view !== undefined && cells.every((cell) => view.cells.some((seen) => seen.cellId === cell.id && seen.liveness === 'alive')),
    );
    if (converged) return;
    if (performance.now() > deadline) throw new Error(`the cells did not see each other within ${timeoutMs} ms`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  }
}

function wsUrlOf(cell: DemoCell): string {
  return `ws://127.0.0.1:${cell.port}`;
}

function token(user: string, device: string, merchant?: string): Promise<string> {
  return mintToken({
    secret: DEMO_TENANT_SECRET,
    tenant: DEMO_TENANT,
    user,
    role: merchant === undefined ? 'customer' : 'agent',
    ...(merchant === undefined ? {} : { merchant }),
    device,
    ttlSeconds: TOKEN_TTL_SECONDS,
    nowMs: Date.now(),
  });
}

/**
 * A demo agent on its merchant's home cell that answers every customer message. When the
 * merchant moves (its old cell closes the agent and then refuses it), the agent asks the cluster
 * where the merchant lives now and follows it there.
 */
async function startAnsweringAgent(
  cell: DemoCell,
  merchant: { id: string; name: string; agent: string },
  allCells: readonly DemoCell[],
  url = wsUrlOf(cell),
): Promise<CellmeshClient> {
  const client = await connectNode({ url, token: await token(merchant.agent, 'demo-bot', merchant.id) });
  client.on('message', (message) => {
    if (message.role !== 'customer') return;
    const reply = `Hi ${message.from}, ${merchant.agent} from ${merchant.name} here. About “${message.body.slice(0, 80)}”: let me check that for you.`;
    // The reply's cmid derives from the message it answers, so a redelivery never answers twice.
    client.send(message.conv, reply, { cmid: `reply-${message.seq}` }).catch(() => {});
    client.read(message.conv, message.seq).catch(() => {});
  });
  client.on('state', (change) => {
    if (change.state !== 'closed' || change.error?.code !== ErrorCode.MerchantNotHosted) return;
    void followMerchant(cell, merchant, allCells);
  });
  return client;
}

async function followMerchant(cell: DemoCell, merchant: { id: string; name: string; agent: string }, allCells: readonly DemoCell[]): Promise<void> {
  for (const other of allCells) {
    try {
      const response = await fetch(`http://127.0.0.1:${other.port}/v1/route?tenant=${DEMO_TENANT}&merchant=${merchant.id}`, { signal: AbortSignal.timeout(2_000) });
      if (!response.ok) continue;
      const route = (await response.json()) as { ws: string };
      await startAnsweringAgent(cell, merchant, allCells, route.ws.replace(/\/v1\/ws$/, ''));
      return;
    } catch {
      // That cell is down; ask the next one.
    }
  }
}

async function describeCluster(dataDir: string, cells: readonly DemoCell[]): Promise<string> {
  const platform = cells[0] as DemoCell;
  const cluster = `http://127.0.0.1:${platform.port}`;
  const lines = [
    '',
    `cellmesh demo: a cluster of ${cells.length} cells on this machine (data and logs in ${dataDir})`,
    ...cells.map(
      (cell) =>
        `  ${cell.id.padEnd(9)} ${cell.role.padEnd(25)} ws://127.0.0.1:${cell.port}  mesh :${cell.meshPort}  merchants ${cell.merchants.map((merchant) => `${merchant.id} (agent ${merchant.agent}, answers)`).join(', ')}`,
    ),
    `  tenant '${DEMO_TENANT}'; customers ${CUSTOMERS.join(', ')}`,
    '',
    'Chat as alice with ACME Shoes (--cluster asks any cell where the merchant lives, then connects there):',
    `  npx cellmesh chat --cluster ${cluster} --conv ${conversationIdOf('acme-shoes', 'alice')} --token ${await token('alice', 'phone')}`,
    'The same conversation on alice\'s laptop (multi-device sync):',
    `  npx cellmesh chat --cluster ${cluster} --conv ${conversationIdOf('acme-shoes', 'alice')} --token ${await token('alice', 'laptop')}`,
    'As bob, ACME Shoes\' agent:',
    `  npx cellmesh chat --cluster ${cluster} --conv ${conversationIdOf('acme-shoes', 'alice')} --token ${await token('bob', 'desk', 'acme-shoes')}`,
    'As dave, asking Cozy Books (another cell):',
    `  npx cellmesh chat --cluster ${cluster} --conv ${conversationIdOf('cozy-books', 'dave')} --token ${await token('dave', 'phone')}`,
    '',
    'The cluster as each cell sees it, and where a merchant lives:',
    `  curl -s -H 'authorization: Bearer <admin token>' ${cluster}/v1/admin/cluster   (token: see ${dataDir}/cells/*.yaml)`,
    `  curl -s '${cluster}/v1/route?tenant=${DEMO_TENANT}&merchant=cozy-books'`,
    'Add a fourth cell at runtime (in another terminal; Ctrl-C there makes it leave):',
    '  npx cellmesh demo add-cell',
    'Stop one cell (it leaves gracefully; the others see it at once):',
    '  npx cellmesh demo stop-cell shops-b',
    `Logs: ${logPathOf(dataDir, '<cell>')}. Ctrl-C stops the cluster.`,
    '',
  ];
  return lines.join('\n');
}
