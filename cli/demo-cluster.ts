import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { DEFAULT_DEMO_PORT_BASE } from './demo-ports.js';

/**
 * The demo cluster on one machine: its fixed, published secrets (for trying things out, never
 * for production), its cells and merchants, and how to start one cell of it as a process.
 */
export const DEMO_TENANT = 'mall';
export const DEMO_TENANT_SECRET = 'cellmesh-demo-secret-do-not-use-in-production';
export const DEMO_CLUSTER_SECRET = 'cellmesh-demo-cluster-secret-do-not-use-in-production';
export const DEMO_ADMIN_TOKEN = 'cellmesh-demo-admin-token-do-not-use-in-production';

/** An agent of a demo merchant, as the demo creates it through the admin API. */
export interface DemoAgent {
  readonly id: string;
  readonly name: string;
  readonly capacity: number;
  readonly groups: readonly string[];
}

export interface DemoMerchant {
  readonly id: string;
  readonly name: string;
  /** The agent the demo runs itself: it answers, and closes after a few messages or a quiet minute. */
  readonly bot: DemoAgent;
  /** Agents a person logs in as from a terminal (password DEMO_AGENT_PASSWORD). */
  readonly people: readonly DemoAgent[];
  /** The group the bot hands a customer to who asks for a person. */
  readonly handoverGroup?: string;
}

/** The password of the demo's people (published like the other demo secrets: for trying things out). */
export const DEMO_AGENT_PASSWORD = 'demo-password';

/** A bot takes two customers at a time, so that a third one waits and the queue can be seen. */
const BOT_CAPACITY = 2;

function bot(id: string, name: string): DemoAgent {
  return { id, name: `${name} (bot)`, capacity: BOT_CAPACITY, groups: ['default'] };
}

export interface DemoCell {
  readonly id: string;
  readonly role: string;
  readonly port: number;
  readonly meshPort: number;
  readonly merchants: readonly DemoMerchant[];
}

interface DemoCellPlan {
  readonly id: string;
  readonly role: string;
  readonly merchants: readonly DemoMerchant[];
}

/** The platform's own business, and two groups of merchants, as in the seed. */
const DEMO_CELL_PLANS: readonly DemoCellPlan[] = [
  {
    id: 'platform',
    role: "the platform's own store",
    merchants: [{ id: 'mall-official', name: 'Mall Official Store', bot: bot('erin', 'Erin'), people: [] }],
  },
  {
    id: 'shops-a',
    role: 'merchant group A',
    merchants: [
      {
        id: 'acme-shoes',
        name: 'ACME Shoes',
        bot: bot('bob', 'Bob'),
        people: [{ id: 'ann', name: 'Ann', capacity: 3, groups: ['pre-sales', 'after-sales'] }],
        handoverGroup: 'pre-sales',
      },
      { id: 'bolt-bikes', name: 'Bolt Bikes', bot: bot('carol', 'Carol'), people: [] },
    ],
  },
  {
    id: 'shops-b',
    role: 'merchant group B',
    merchants: [
      { id: 'cozy-books', name: 'Cozy Books', bot: bot('frank', 'Frank'), people: [] },
      { id: 'dash-phones', name: 'Dash Phones', bot: bot('grace', 'Grace'), people: [] },
    ],
  },
];

/** The cell `npx cellmesh demo add-cell` starts at runtime. */
const DEMO_EXTRA_CELL_PLAN: DemoCellPlan = {
  id: 'shops-c',
  role: 'merchant group C, added at runtime',
  merchants: [{ id: 'echo-garden', name: 'Echo Garden', bot: bot('heidi', 'Heidi'), people: [] }],
};

/** The demo's cells on ports from `portBase` (7401-7403 and 7501-7503 by default). */
export function demoCells(portBase: number): readonly DemoCell[] {
  return DEMO_CELL_PLANS.map((plan, index) => ({ ...plan, port: portBase + 1 + index, meshPort: portBase + 101 + index }));
}

/** The cell `demo add-cell` starts (7404 and 7504 by default). */
export function demoExtraCell(portBase: number): DemoCell {
  const number = DEMO_CELL_PLANS.length + 1;
  return { ...DEMO_EXTRA_CELL_PLAN, port: portBase + number, meshPort: portBase + 100 + number };
}

const BIN_PATH = resolve(fileURLToPath(new URL('../bin/cellmesh.js', import.meta.url)));

export function configPathOf(dataDir: string, cell: DemoCell): string {
  return join(dataDir, 'cells', `${cell.id}.yaml`);
}

export function pidPathOf(dataDir: string, cellId: string): string {
  return join(dataDir, 'run', `${cellId}.pid`);
}

export function logPathOf(dataDir: string, cellId: string): string {
  return join(dataDir, 'logs', `${cellId}.log`);
}

/**
 * The browser origins of the demo's web pages: every demo cell serves them (docs/web.md), and a
 * page that follows its merchant to another cell (a move) is of another origin there.
 */
export function demoWebOrigins(cells: readonly DemoCell[]): string[] {
  return cells.map((cell) => `http://127.0.0.1:${cell.port}`);
}

/** Writes the cell's config file (YAML, the same format an operator writes). */
export function writeDemoCellConfig(dataDir: string, cell: DemoCell, bootstrap: readonly string[], origins: readonly string[]): string {
  const path = configPathOf(dataDir, cell);
  mkdirSync(join(dataDir, 'cells'), { recursive: true });
  const config = {
    cell: { id: cell.id },
    listen: { host: '127.0.0.1', port: cell.port },
    store: { kind: 'level', directory: resolve(dataDir, 'store', cell.id) },
    admin: { token: DEMO_ADMIN_TOKEN },
    mesh: {
      listen: { host: '127.0.0.1', port: cell.meshPort },
      clusterSecret: DEMO_CLUSTER_SECRET,
      bootstrap: [...bootstrap],
    },
    tenants: [
      { id: DEMO_TENANT, secret: DEMO_TENANT_SECRET, origins: [...origins], merchants: cell.merchants.map(({ id, name }) => ({ id, name })) },
    ],
    log: { level: 'info' },
  };
  writeFileSync(path, `# cellmesh demo cell '${cell.id}' (${cell.role}); written by \`cellmesh demo\`\n${toYaml(config)}`);
  return path;
}

/**
 * Starts `cellmesh cell` for a demo cell as a child process that writes its log file itself.
 * It runs in a process group of its own, so that a terminal's Ctrl-C (SIGINT to the whole
 * foreground group) reaches only the demo command, which stops each cell with one SIGTERM: a
 * cell that got the terminal's signal and the command's would take the second as "exit now".
 */
export function spawnDemoCell(dataDir: string, cell: DemoCell): ChildProcess {
  mkdirSync(join(dataDir, 'logs'), { recursive: true });
  mkdirSync(join(dataDir, 'run'), { recursive: true });
  const log = openSync(logPathOf(dataDir, cell.id), 'a');
  try {
    // The demo's secrets are published: a cell refuses them without the insecure flag.
    const child = spawn(process.execPath, [BIN_PATH, 'cell', '--config', configPathOf(dataDir, cell), '--insecure-allow-weak-secrets'], {
      // The demo's configs decide: a CELLMESH_* variable of the shell (an admin token for a real
      // cluster, say) would otherwise override them, and the demo's admin calls would be refused.
      env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('CELLMESH_'))),
      stdio: ['ignore', log, log],
      detached: true,
    });
    if (child.pid !== undefined) writeFileSync(pidPathOf(dataDir, cell.id), String(child.pid));
    return child;
  } finally {
    closeSync(log);
  }
}

interface ClusterView {
  self: string;
  cells: Array<{ cellId: string; liveness: string; endpoints: { ws: string; http: string; p2p: string[] }; merchants: Array<{ merchant: string }> }>;
}

/** The admin view of the cluster from the cell at `port` (demo admin token). */
export async function fetchClusterView(port: number, signal?: AbortSignal): Promise<ClusterView> {
  const response = await fetch(`http://127.0.0.1:${port}/v1/admin/cluster`, {
    headers: { authorization: `Bearer ${DEMO_ADMIN_TOKEN}` },
    ...(signal === undefined ? {} : { signal }),
  });
  if (!response.ok) throw new Error(`cluster view of port ${port}: HTTP ${response.status}`);
  return (await response.json()) as ClusterView;
}

/** Waits until the cell at `port` answers readyz, or fails after `timeoutMs`. */
export async function waitReady(port: number, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`the cell on port ${port} exited with code ${child.exitCode}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/v1/readyz`, { signal: AbortSignal.timeout(1_000) });
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    if (performance.now() > deadline) throw new Error(`the cell on port ${port} was not ready within ${timeoutMs} ms`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  }
}

/** The libp2p address of the running cell at `port`, for others to bootstrap through. */
export async function meshAddressOf(port: number): Promise<string> {
  const view = await fetchClusterView(port);
  const self = view.cells.find((cell) => cell.cellId === view.self);
  const address = self?.endpoints.p2p[0];
  if (address === undefined) throw new Error(`the cell on port ${port} has no mesh address`);
  return address;
}

/** Bootstrap addresses recorded by `cellmesh demo` for cells added later. */
export function readBootstrapFile(dataDir: string): string[] {
  const path = join(dataDir, 'run', 'bootstrap.json');
  if (!existsSync(path)) throw new Error(`no running demo cluster found in ${dataDir} (start it with \`npm start\`)`);
  return JSON.parse(readFileSync(path, 'utf8')) as string[];
}

export function writeBootstrapFile(dataDir: string, addresses: readonly string[]): void {
  mkdirSync(join(dataDir, 'run'), { recursive: true });
  writeFileSync(join(dataDir, 'run', 'bootstrap.json'), JSON.stringify(addresses));
}

/** The port base `cellmesh demo` ran with, for the commands that join or stop its cells. */
export function readPortBaseFile(dataDir: string): number {
  const path = join(dataDir, 'run', 'port-base');
  return existsSync(path) ? Number(readFileSync(path, 'utf8')) : DEFAULT_DEMO_PORT_BASE;
}

export function writePortBaseFile(dataDir: string, portBase: number): void {
  mkdirSync(join(dataDir, 'run'), { recursive: true });
  writeFileSync(join(dataDir, 'run', 'port-base'), String(portBase));
}

/**
 * The WebSocket origin (`ws://host:port`) of the merchant's home cell, as the first of `cells`
 * that answers routes it (a merchant may have moved since its cell was configured).
 */
export async function merchantHomeOf(merchant: string, cells: readonly DemoCell[]): Promise<string> {
  for (const cell of cells) {
    try {
      const response = await fetch(`http://127.0.0.1:${cell.port}/v1/route?tenant=${DEMO_TENANT}&merchant=${merchant}`, { signal: AbortSignal.timeout(2_000) });
      if (!response.ok) continue;
      const route = (await response.json()) as { ws: string };
      return route.ws.replace(/\/v1\/ws$/, '');
    } catch {
      // That cell is down; ask the next one.
    }
  }
  throw new Error(`no demo cell routes merchant ${merchant}`);
}
