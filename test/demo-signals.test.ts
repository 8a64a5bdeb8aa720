/**
 * Ctrl-C on the demo, as a terminal sends it: SIGINT to the command's whole process group. Every
 * cell leaves the mesh gracefully and exits 0, and so does the command; nobody logs "second
 * signal" (before, the cells got the terminal's SIGINT and the demo's SIGTERM and exited 1).
 * The same for `demo add-cell`. On the way, the demo's desk: its agents exist in the admin API,
 * and a guest who chats as the printed command says is assigned to the bot, which answers. The
 * real demo runs on free ports in a temp data dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { DEMO_ADMIN_TOKEN } from '../cli/demo-cluster.js';
import { Cleanup, REPO_ROOT } from './harness.js';
import { BIN, cleanEnv } from './cli-process.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A port base whose demo ports (base+1..4 and base+101..104) are all free right now. */
async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const ports = [1, 2, 3, 4, 101, 102, 103, 104].map((offset) => base + offset);
    if ((await Promise.all(ports.map(isFree))).every(Boolean)) return base;
  }
  throw new Error('no free range of demo ports found in 50 tries');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

interface Command {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cellmesh ...args` as the leader of its own process group, as a shell runs a foreground job. */
function startCommand(args: readonly string[], dataDir: string, env: Record<string, string> = {}): Command & { type: (line: string) => void } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv(env) });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  cleanup.add(async () => {
    // After a failure: nothing of this command, nor any of its cells, outlives the test.
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
    const runDir = join(dataDir, 'run');
    if (!existsSync(runDir)) return;
    for (const file of readdirSync(runDir).filter((name) => name.endsWith('.pid'))) {
      try {
        process.kill(Number(readFileSync(join(runDir, file), 'utf8')), 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });
  return { child, output: () => output, exited, type: (line) => void child.stdin!.write(`${line}\n`) };
}

async function waitForOutput(command: Command, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!command.output().includes(text)) {
    if (command.child.exitCode !== null) throw new Error(`the command exited (${command.child.exitCode}) before printing '${text}':\n${command.output()}`);
    if (Date.now() > deadline) throw new Error(`no '${text}' within ${timeoutMs} ms:\n${command.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** What a cell's log says about how it stopped. */
function shutdownOf(dataDir: string, cellId: string): { graceful: boolean; left: boolean; secondSignal: boolean } {
  const log = readFileSync(join(dataDir, 'logs', `${cellId}.log`), 'utf8');
  return { graceful: log.includes('shutting down gracefully'), left: log.includes('cell left the mesh'), secondSignal: log.includes('second signal') };
}

test('the demo\'s desk answers a guest; Ctrl-C on demo add-cell and on the demo: every cell leaves gracefully and everything exits 0', async () => {
  const dataDir = await cleanup.tempDir('cellmesh-demo-');
  const portBase = String(await freePortBase());
  const demo = startCommand(['demo', '--data-dir', dataDir, '--port-base', portBase], dataDir);
  await waitForOutput(demo, 'Ctrl-C stops the cluster', 150_000);

  // The desk's people were created through the admin API of ACME Shoes' home cell (shops-a), with passwords.
  const answer = await fetch(`http://127.0.0.1:${Number(portBase) + 2}/v1/admin/tenants/mall/merchants/acme-shoes/agents`, { headers: { authorization: `Bearer ${DEMO_ADMIN_TOKEN}` } });
  const { agents } = (await answer.json()) as { agents: Array<{ id: string; name: string; capacity: number; groups: string[]; hasPassword: boolean }> };
  expect(agents.map(({ id, name, capacity, groups, hasPassword }) => ({ id, name, capacity, groups, hasPassword }))).toEqual([
    { id: 'ann', name: 'Ann', capacity: 3, groups: ['pre-sales', 'after-sales'], hasPassword: true },
    { id: 'bob', name: 'Bob (bot)', capacity: 2, groups: ['default'], hasPassword: true },
  ]);
  // A guest, as the printed command says, is assigned to the bot, which logged in and answers.
  const guestCommand = /npx cellmesh (chat --cluster \S+ --tenant mall --merchant acme-shoes --guest)\n/.exec(demo.output())?.[1];
  expect(guestCommand, demo.output()).toBeDefined();
  expect(demo.output()).toContain('--merchant acme-shoes --login ann');
  // The customer chat's link, as printed: any cell sends the browser to the page on the merchant's home cell.
  const chatLink = /\n {2}(http:\/\/\S+\/v1\/connect\?tenant=mall&merchant=acme-shoes)\n/.exec(demo.output())?.[1];
  expect(chatLink, demo.output()).toBeDefined();
  const redirect = await fetch(chatLink!, { redirect: 'manual' });
  expect(redirect.status).toBe(302);
  expect(redirect.headers.get('location')).toBe(`http://127.0.0.1:${Number(portBase) + 2}/app/?tenant=mall&merchant=acme-shoes`);
  const page = await fetch(redirect.headers.get('location')!);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain('<script type="module" src="chat.js"></script>');
  const guest = startCommand(guestCommand!.split(' '), dataDir, { CELLMESH_HOME: dataDir });
  await waitForOutput(guest, 'connected to cell shops-a', 30_000);
  guest.type('Is the trail runner in stock in size 44?');
  await waitForOutput(guest, '— Bob (bot) is here to help.', 30_000);
  await waitForOutput(guest, "Bob (bot): Hi! I'm ACME Shoes' bot.", 30_000);
  guest.type('/quit');
  expect(await guest.exited, guest.output()).toEqual({ code: 0, signal: null });

  const addCell = startCommand(['demo', 'add-cell', '--data-dir', dataDir], dataDir);
  await waitForOutput(addCell, 'Ctrl-C here makes the cell leave', 150_000);
  process.kill(-addCell.child.pid!, 'SIGINT');
  expect(await addCell.exited, addCell.output()).toEqual({ code: 0, signal: null });
  expect(addCell.output()).toContain('cell shops-c stopped (exit 0)');

  process.kill(-demo.child.pid!, 'SIGINT');
  expect(await demo.exited, demo.output()).toEqual({ code: 0, signal: null });
  const cells = ['platform', 'shops-a', 'shops-b'];
  for (const cellId of cells) expect(demo.output()).toContain(`cell ${cellId} stopped (exit 0)`);
  for (const cellId of [...cells, 'shops-c']) {
    expect({ cellId, ...shutdownOf(dataDir, cellId) }).toEqual({ cellId, graceful: true, left: true, secondSignal: false });
  }
}, 400_000);
