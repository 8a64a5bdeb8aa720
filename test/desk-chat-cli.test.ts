/**
 * The desk from the terminal, as the demo's people use it: agents created with `cellmesh agents`,
 * an agent that logs in with `chat --login` (password on standard input), a guest customer with
 * `chat --guest` who is assigned to the agent and sees it as a system message, the agent's
 * `/close` that the guest sees, and the same guest coming back. Real `cellmesh` processes
 * against a real cell.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { startCell } from '../assembly/process-cell.js';
import { silentLogger } from '../platform/logger.js';
import { BIN, cleanEnv, type CliRun } from './cli-process.js';
import { ADMIN_TOKEN, Cleanup, REPO_ROOT, SECRET } from './harness.js';

const PASSWORD = 'ann-demo-password-0123';
const cleanup = new Cleanup();
let cell: { url: string; httpUrl: string };
let home: string;

beforeAll(async () => {
  const config = parseCellConfig({
    cell: { id: 'desk-chat-cell' },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'memory' },
    admin: { token: ADMIN_TOKEN },
    tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }],
  });
  const running = await startCell({ config, logger: silentLogger });
  cleanup.add(() => running.stop());
  cell = { url: `ws://127.0.0.1:${running.port}`, httpUrl: `http://127.0.0.1:${running.port}` };
  home = await cleanup.tempDir('cellmesh-chat-home-');
});
afterAll(() => cleanup.run());

interface Chat {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  type: (line: string) => void;
  waitFor: (text: string | RegExp, timeoutMs?: number) => Promise<string>;
  exited: Promise<CliRun>;
}

/** Starts `cellmesh ...args` with a pipe for standard input; `CELLMESH_HOME` keeps the guests in a temp dir. */
function start(args: readonly string[]): Chat {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv({ CELLMESH_ADMIN_TOKEN: ADMIN_TOKEN, CELLMESH_HOME: home }) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<CliRun>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  cleanup.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const output = (): string => stdout + stderr;
  return {
    child,
    output,
    exited,
    type: (line) => void child.stdin.write(`${line}\n`),
    async waitFor(text, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = typeof text === 'string' ? (output().includes(text) ? text : undefined) : text.exec(output())?.[0];
        if (found !== undefined) return found;
        if (child.exitCode !== null) throw new Error(`exited (${child.exitCode}) before printing ${String(text)}:\n${output()}`);
        if (Date.now() > deadline) throw new Error(`no ${String(text)} within ${timeoutMs} ms:\n${output()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
  };
}

async function run(args: readonly string[], input = ''): Promise<CliRun> {
  const command = start(args);
  command.child.stdin.end(input);
  return command.exited;
}

const merchant = (): string[] => ['--tenant', 'mall', '--merchant', 'm1'];
const chatAt = (): string[] => ['chat', '--url', cell.url, ...merchant()];

test('an agent logs in with chat --login, a guest is assigned to it, the agent closes, the guest sees it and comes back', async () => {
  const admin = ['--cell', cell.httpUrl, ...merchant()];
  const added = await run(['agents', 'add', 'ann', ...admin, '--name', 'Ann', '--capacity', '2', '--groups', 'default,after-sales']);
  expect(added, added.stderr).toMatchObject({ code: 0 });
  expect(await run(['agents', 'password', 'ann', ...admin, '--password-stdin'], `${PASSWORD}\n`)).toMatchObject({ code: 0 });

  const wrong = await run([...chatAt(), '--login', 'ann', '--password-stdin'], 'not the password at all\n');
  expect(wrong.code).toBe(1);
  expect(wrong.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^cellmesh chat: login as ann of mall\/m1: .*LOGIN_FAILED/)]);

  const agent = start([...chatAt(), '--login', 'ann', '--password-stdin']);
  agent.type(PASSWORD);
  await agent.waitFor('connected to cell');
  expect(agent.output()).toContain('logged in as ann of m1');
  expect(agent.output()).toContain('as ann (agent, device terminal)');
  expect(agent.output()).not.toContain(PASSWORD);

  const guest = start([...chatAt(), '--guest']);
  await guest.waitFor('connected to cell');
  const user = /as guest 'guest' \((g-[A-Za-z0-9_-]+)/.exec(guest.output())?.[1];
  expect(user, guest.output()).toBeDefined();
  const conv = `m1:${user}`;
  guest.type('Do you have the trail runner in 44?');
  await guest.waitFor('— Ann is here to help.');
  await guest.waitFor('(assigned to Ann)');

  await agent.waitFor(`(${conv} is yours; you now write to it`);
  await agent.waitFor(`[${conv}] #1 ${user}: Do you have the trail runner in 44?`);
  agent.type('We do. Anything else?');
  await guest.waitFor('Ann: We do. Anything else?');

  // The guest's typing reaches the agent only on a terminal; a desk command works from a pipe.
  agent.type('/desk');
  await agent.waitFor(/ann \(Ann\) {2}online {2}1\/2/);

  agent.type('/close');
  await guest.waitFor('— Closed by the agent.');
  await agent.waitFor(`[${conv}] — Closed by the agent.`);
  guest.type('/rate 5 quick and kind');
  await guest.waitFor('— Rated 5/5: quick and kind');

  guest.type('/quit');
  expect((await guest.exited).code).toBe(0);
  // The same guest comes back, to the same conversation (its refresh token was kept in CELLMESH_HOME).
  const again = start([...chatAt(), '--guest']);
  await again.waitFor('connected to cell');
  expect(again.output()).toContain(`as guest 'guest' (${user},`);
  again.type('/history');
  await again.waitFor('#1 you: Do you have the trail runner in 44?');
  again.type('/quit');
  // Another named guest is another customer.
  const second = start([...chatAt(), '--guest', 'second']);
  await second.waitFor('connected to cell');
  expect(second.output()).not.toContain(user);
  second.type('/quit');

  agent.type('/quit');
  for (const command of [again, second, agent]) expect((await command.exited).code).toBe(0);
}, 90_000);

test('chat errors are one line: no way to log in named, a bad /transfer, a bad /rate', async () => {
  const none = await run(['chat', '--url', cell.url, '--conv', 'm1:c1']);
  expect(none).toMatchObject({ code: 2, stderr: 'cellmesh chat: chat as exactly one of: --token <jwt>, --guest [name], --login <agent>\n' });
  const noTenant = await run(['chat', '--url', cell.url, '--merchant', 'm1', '--guest']);
  expect(noTenant).toMatchObject({ code: 2, stderr: 'cellmesh chat: pass --tenant (no token names it)\n' });

  const guest = start([...chatAt(), '--guest', 'errors']);
  await guest.waitFor('connected to cell');
  guest.type('/rate 9');
  await guest.waitFor('   ! usage: /rate <1-5> [comment]');
  guest.type('/transfer');
  await guest.waitFor('   ! usage: /transfer <agent> [note] or /transfer @<group> [note]');
  guest.type('/quit');
  expect((await guest.exited).code).toBe(0);
}, 60_000);
