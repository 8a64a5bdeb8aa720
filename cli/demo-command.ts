import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { conversationIdOf, mintCustomerToken } from '../client/index.js';
import { CliError, ExitCode, type ExitCodeValue } from './cli-errors.js';
import { DemoBot } from './demo-bot.js';
import {
  DEMO_ADMIN_TOKEN,
  DEMO_AGENT_PASSWORD,
  DEMO_TENANT,
  DEMO_TENANT_SECRET,
  demoCells,
  demoExtraCell,
  fetchClusterView,
  logPathOf,
  meshAddressOf,
  merchantHomeOf,
  pidPathOf,
  readBootstrapFile,
  readPortBaseFile,
  spawnDemoCell,
  waitReady,
  writeBootstrapFile,
  writeDemoCellConfig,
  demoWebOrigins,
  writePortBaseFile,
  type DemoCell,
  type DemoMerchant,
} from './demo-cluster.js';
import { createDemoAgents } from './demo-people.js';

interface DemoCommandOptions {
  dataDir: string;
}

interface DemoStartOptions extends DemoCommandOptions {
  portBase: number;
}

const READY_TIMEOUT_MS = 30_000;
const CONVERGE_TIMEOUT_MS = 20_000;
const TOKEN_TTL_SECONDS = 24 * 3600;

/**
 * `npm start`: a demo cluster of three cells on this machine (the platform's own store and two
 * groups of merchants), meshed over libp2p, each merchant with a desk (its agents created
 * through the admin API, a bot that answers, and for ACME Shoes a person to log in as), and
 * ready-made commands to chat as guests and as that person, add a fourth cell and stop one.
 */
export async function runDemoCommand(options: DemoStartOptions): Promise<void> {
  const { dataDir, portBase } = options;
  const cells = demoCells(portBase);
  const allCells = [...cells, demoExtraCell(portBase)];
  writePortBaseFile(dataDir, portBase);
  const bots: DemoBot[] = [];
  const group = new DemoCellProcesses(dataDir, demoWebOrigins(allCells));
  stopOnSignals(() => {
    for (const bot of bots) void bot.stop();
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
    for (const cell of cells) for (const merchant of cell.merchants) bots.push(await openDesk(merchant, allCells));
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
  let bot: DemoBot | undefined;
  const group = new DemoCellProcesses(dataDir, demoWebOrigins([...cells, cell]));
  stopOnSignals(() => {
    void bot?.stop();
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
  bot = await openDesk(demoMerchant, [...cells, cell]);
  const merchant = demoMerchant.id;
  process.stdout.write(
    [
      '',
      `cell ${cell.id} (${cell.role}) joined the demo cluster in ${joinedMs} ms; every cell now routes ${merchant} to it:`,
      `  curl -s 'http://127.0.0.1:${cells[0]?.port}/v1/route?tenant=${DEMO_TENANT}&merchant=${merchant}'`,
      `Its agents were created through its admin API. Chat with ${demoMerchant.name} as a guest; ${demoMerchant.bot.name} answers:`,
      `  npx cellmesh chat --cluster http://127.0.0.1:${cells[0]?.port} --tenant ${DEMO_TENANT} --merchant ${merchant} --guest`,
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

  constructor(
    private readonly dataDir: string,
    /** The tenant's allowed browser origins: the demo cells' own, which serve the pages. */
    private readonly webOrigins: readonly string[],
  ) {
    process.once('exit', () => {
      for (const child of this.running.values()) child.kill('SIGTERM');
    });
  }

  start(cell: DemoCell, bootstrap: readonly string[]): ChildProcess {
    writeDemoCellConfig(this.dataDir, cell, bootstrap, this.webOrigins);
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

/** A customer token for a shopper signed in to a merchant's site, as the site's server mints it. */
function shopperToken(user: string, device: string): Promise<string> {
  return mintCustomerToken({ secret: DEMO_TENANT_SECRET, tenant: DEMO_TENANT, user, device, ttlSeconds: TOKEN_TTL_SECONDS });
}

/**
 * Opens a merchant's desk: creates its agents through the admin API of its home cell (a bot
 * with a password of this run, and its people with the demo's), then logs the bot in there.
 */
async function openDesk(merchant: DemoMerchant, allCells: readonly DemoCell[]): Promise<DemoBot> {
  const home = await merchantHomeOf(merchant.id, allCells);
  const botPassword = randomBytes(18).toString('base64url');
  await createDemoAgents(home.replace(/^ws/, 'http'), merchant, botPassword);
  const bot = new DemoBot(merchant, botPassword, allCells);
  await bot.start(home);
  return bot;
}

async function describeCluster(dataDir: string, cells: readonly DemoCell[]): Promise<string> {
  const platform = cells[0] as DemoCell;
  const cluster = `http://127.0.0.1:${platform.port}`;
  const acme = cells.flatMap((cell) => cell.merchants).find((merchant) => merchant.id === 'acme-shoes') as DemoMerchant;
  const acmeCell = cells.find((cell) => cell.merchants.includes(acme)) as DemoCell;
  const ann = acme.people[0]!;
  const chatWithAcme = `npx cellmesh chat --cluster ${cluster} --tenant ${DEMO_TENANT} --merchant ${acme.id}`;
  const agentsOf = (merchant: DemoMerchant): string =>
    [merchant.bot, ...merchant.people].map((agent) => `${agent.id} "${agent.name}" (${agent.groups.join(', ')}; ${agent.capacity} at a time)`).join(', ');
  const lines = [
    '',
    `cellmesh demo: a cluster of ${cells.length} cells on this machine (data and logs in ${dataDir})`,
    ...cells.map((cell) => `  ${cell.id.padEnd(9)} ${cell.role.padEnd(25)} ws://127.0.0.1:${cell.port}  mesh :${cell.meshPort}  merchants ${cell.merchants.map((merchant) => merchant.id).join(', ')}`),
    `  tenant '${DEMO_TENANT}'. Each merchant's desk has agents, created through its home cell's admin API:`,
    ...cells.flatMap((cell) => cell.merchants.map((merchant) => `    ${merchant.id.padEnd(13)} ${agentsOf(merchant)}`)),
    '  A bot answers what the desk assigns to it, and closes after three answers or a quiet minute.',
    '',
    `Chat with ${acme.name} as a guest (--cluster asks any cell where the merchant lives; the guest is kept in ~/.cellmesh and returns):`,
    `  ${chatWithAcme} --guest`,
    `Or in a browser: the customer chat page (any cell or router sends the browser on to the merchant's home cell, docs/web.md):`,
    `  ${cluster}/v1/connect?tenant=${DEMO_TENANT}&merchant=${acme.id}`,
    `Two more customers, in two more terminals: ${acme.bot.name} takes ${acme.bot.capacity} at a time, so the third waits in line (position and`,
    'estimated wait shown) until the bot closes a consultation:',
    `  ${chatWithAcme} --guest second`,
    `  ${chatWithAcme} --guest third`,
    `${ann.name} (${ann.id}), a person, logs in (password: ${DEMO_AGENT_PASSWORD}). A customer who writes "human" is transferred to ${acme.handoverGroup}, where`,
    `${ann.name} takes it; in her chat: /close, /transfer ${acme.bot.id} <note>, /transfer @after-sales <note>, /status busy, /desk, /conv <id>:`,
    `  ${chatWithAcme} --login ${ann.id}`,
    `or in a browser, the agent workbench (the same password):`,
    `  ${cluster}/app/agent.html?tenant=${DEMO_TENANT}&merchant=${acme.id}&agent=${ann.id}`,
    `A shopper signed in to Cozy Books' own site (its server mints the token), on another cell; customers may /close and /rate 1-5:`,
    `  npx cellmesh chat --cluster ${cluster} --conv ${conversationIdOf('cozy-books', 'dave')} --token ${await shopperToken('dave', 'phone')}`,
    '',
    `The cell console of ${acmeCell.id} in a browser (admin token: ${DEMO_ADMIN_TOKEN}):`,
    `  http://127.0.0.1:${acmeCell.port}/app/console.html`,
    'The agents of a merchant, the cluster as each cell sees it, and where a merchant lives:',
    `  npx cellmesh agents list --cell http://127.0.0.1:${acmeCell.port} --tenant ${DEMO_TENANT} --merchant ${acme.id} --admin-token ${DEMO_ADMIN_TOKEN}`,
    `  curl -s -H 'authorization: Bearer ${DEMO_ADMIN_TOKEN}' ${cluster}/v1/admin/cluster`,
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
