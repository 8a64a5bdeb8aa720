/**
 * Routing that follows the merchant (docs/routing.md): two real cells in this process (uWS,
 * LevelDB, libp2p on loopback), devices on the SDK in route mode. A cell answers a device or a
 * request whose merchant lives elsewhere with MERCHANT_ELSEWHERE and the home; when the merchant
 * moves, its agents and the customers routed for it end on the new home without the application
 * doing anything, and every send arrives once, in order; so does `cellmesh chat --cluster`.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { parseCellConfig } from '../assembly/config.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { connectNode, type CellmeshClient, type ChatMessage, type StateChange } from '../client/index.js';
import { silentLogger } from '../platform/logger.js';
import { BIN, cleanEnv } from './cli-process.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, REPO_ROOT, SECRET, TENANT, eventually, freePort, httpRequest, tokenFor } from './harness.js';

interface Cell {
  readonly running: RunningCell;
  readonly httpUrl: string;
  readonly wsUrl: string;
}

const tenantOf = (merchant: string) => ({ id: TENANT, secret: SECRET, origins: [], merchants: [{ id: merchant }] });

describe('routing that follows the merchant', () => {
  let root: string;
  const cells: Record<'c1' | 'c2', Cell> = {} as Record<'c1' | 'c2', Cell>;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cellmesh-follow-move-'));
    const start = async (cellId: string, merchant: string, bootstrap: readonly string[]): Promise<Cell> => {
      const running = await startCell({
        config: parseCellConfig({
          cell: { id: cellId },
          listen: { host: '127.0.0.1', port: await freePort() },
          store: { kind: 'level', directory: join(root, cellId), sync: true },
          tenants: [tenantOf(merchant)],
          mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap },
          admin: { token: ADMIN_TOKEN },
        }),
        logger: silentLogger,
      });
      return { running, httpUrl: `http://127.0.0.1:${running.port}`, wsUrl: `ws://127.0.0.1:${running.port}/v1/ws` };
    };
    cells.c1 = await start('c1', 'm1', []);
    cells.c2 = await start('c2', 'm2', cells.c1.running.mesh!.transport.addresses());
    const knows = (cell: Cell, merchant: string, home: string): boolean => cell.running.mesh!.mesh.homeCellOf(TENANT, merchant) === home;
    await eventually(() => knows(cells.c1, 'm2', 'c2') && knows(cells.c2, 'm1', 'c1'), 'both cells to know both homes', 30_000);
  }, 60_000);

  afterAll(async () => {
    await cells.c2?.running.stop();
    await cells.c1?.running.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('redirects a WebSocket and an HTTP request for a merchant that lives elsewhere', async () => {
    const { c1, c2 } = cells;
    const home = { cellId: 'c2', ws: c2.wsUrl, http: c2.httpUrl, epoch: 0 };
    // An agent of m2 at c1, and a customer whose URL is routed for m2: one error frame with the home, then 4307.
    for (const [token, query] of [[await tokenFor({ user: 'bea', merchant: 'm2' }), ''], [await tokenFor({ user: 'alice' }), '&merchant=m2']] as const) {
      const refused = await inBandRefusal(`${c1.wsUrl}?token=${encodeURIComponent(token)}${query}`);
      expect(refused.frames).toEqual([{ t: 'error', code: 'MERCHANT_ELSEWHERE', message: expect.stringContaining('c2'), home }]);
      expect(refused.closeCode).toBe(4307);
    }
    // A customer routed for a merchant of this cell, or for none, is served here.
    const served = await inBandRefusal(`${c1.wsUrl}?token=${encodeURIComponent(await tokenFor({ user: 'alice' }))}&merchant=m1`);
    expect(served.frames[0]).toMatchObject({ t: 'welcome', cell: 'c1' });
    // A `merchant` that is no merchant id is refused before anything else.
    expect(await refusedUpgrade(`${c1.wsUrl}?token=${encodeURIComponent(await tokenFor({ user: 'alice' }))}&merchant=${encodeURIComponent('no such/merchant')}`)).toEqual({ status: 400, code: 'BAD_FRAME' });
    // HTTP: the agent's history request, a guest token and a login: 421 with the home.
    const agent = await tokenFor({ user: 'bea', merchant: 'm2' });
    const answers = [
      await httpRequest('GET', `${c1.httpUrl}/v1/conversations/m2:alice/messages`, { token: agent }),
      await httpRequest('POST', `${c1.httpUrl}/v1/guest`, { json: { tenant: TENANT, merchant: 'm2' } }),
      await httpRequest('POST', `${c1.httpUrl}/v1/login`, { json: { tenant: TENANT, merchant: 'm2', agent: 'bea', password: 'not-checked-here', device: 'd1' } }),
    ];
    for (const answer of answers) {
      expect(answer.status).toBe(421);
      expect(answer.body).toEqual({ error: { code: 'MERCHANT_ELSEWHERE', message: expect.any(String), home } });
    }
    // A merchant no cell hosts keeps today's answer.
    const unknown = await httpRequest('GET', `${c1.httpUrl}/v1/conversations/m9:alice/messages`, { token: await tokenFor({ user: 'bea', merchant: 'm9' }) });
    expect(unknown.status).toBe(404);
    // The SDK with a fixed url does not follow: it stops with the code and the home.
    await expect(connectNode({ url: c1.wsUrl, token: agent })).rejects.toMatchObject({ code: 'MERCHANT_ELSEWHERE', details: { closeCode: 4307, home } });
  });

  it('takes an agent and a customer in route mode to the new home when the merchant moves, with every send delivered once and in order', async () => {
    const { c1, c2 } = cells;
    const route = { url: c1.httpUrl, tenant: TENANT, merchant: 'm2' };
    const conv = 'm2:alice';
    const bob = await connectNode({ route, token: await tokenFor({ user: 'bob', merchant: 'm2', device: 'desk' }) });
    const alice = await connectNode({ route, token: await tokenFor({ user: 'alice', device: 'phone' }) });
    const heard = { bob: recorder(bob), alice: recorder(alice) };
    try {
      // Routed through c1 to the merchant's home.
      expect([bob.session?.cell, alice.session?.cell]).toEqual(['c2', 'c2']);
      const sends: Array<Promise<unknown>> = [];
      for (let index = 0; index < 10; index++) sends.push(alice.send(conv, `before ${index}`, { cmid: `a${index}` }));
      await Promise.all(sends);
      await eventually(() => heard.bob.bodies(conv).length === 10, 'bob to hear the first ten');

      // The move runs while alice keeps sending and bob answers; neither application does anything else.
      const moving = httpRequest('POST', `${c2.httpUrl}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: TENANT, merchant: 'm2', to: 'c1' } });
      for (let index = 10; index < 30; index++) {
        sends.push(alice.send(conv, `during ${index}`, { cmid: `a${index}` }));
        if (index % 5 === 0) sends.push(bob.send(conv, `reply ${index}`, { cmid: `b${index}` }));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const moved = await moving;
      expect(moved.body).toMatchObject({ to: 'c1', epoch: 1 });
      await eventually(() => bob.session?.cell === 'c1' && alice.session?.cell === 'c1', 'both devices to be on the new home', 20_000);
      for (let index = 30; index < 35; index++) sends.push(alice.send(conv, `after ${index}`, { cmid: `a${index}` }));
      await Promise.all(sends);

      const expected = Array.from({ length: 35 }, (_, index) => `a${index}`);
      await eventually(() => heard.bob.cmids(conv, 'customer').length === 35, 'bob to hear all 35 of alice\'s messages', 20_000);
      expect(heard.bob.cmids(conv, 'customer')).toEqual(expected);
      await eventually(() => heard.alice.cmids(conv, 'agent').length === 4, 'alice to hear bob\'s four replies', 20_000);
      expect(heard.alice.cmids(conv, 'agent')).toEqual(['b10', 'b15', 'b20', 'b25']);
      // Once each: seqs strictly increase on every device, none repeats.
      for (const device of [heard.bob, heard.alice]) {
        const seqs = device.messages.filter((message) => message.conv === conv).map((message) => message.seq);
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
        expect(new Set(seqs).size).toBe(seqs.length);
      }
      const history = await bob.history(conv, { limit: 100 });
      expect(history.messages.filter((message) => message.role === 'customer').map((message) => message.cmid)).toEqual(expected);
      // The agent was redirected (4307) rather than dropped; nobody stopped.
      expect(heard.bob.states.some((change) => change.state === 'reconnecting' && change.closeCode === 4307)).toBe(true);
      expect([...heard.bob.states, ...heard.alice.states].filter((change) => change.state === 'closed')).toEqual([]);
    } finally {
      await Promise.all([bob.close(), alice.close()]);
    }
  }, 90_000);

  it('keeps `cellmesh chat --cluster` of an agent going when the merchant moves, without a restart', async () => {
    const conv = 'm2:carol';
    // Wherever m2 lives now (the previous test moved it), the chat asks the other cell, which routes it there.
    const homeId = ((await httpRequest('GET', `${cells.c1.httpUrl}/v1/route?tenant=${TENANT}&merchant=m2`)).body as { cellId: 'c1' | 'c2' }).cellId;
    const [home, other] = homeId === 'c1' ? [cells.c1, cells.c2] : [cells.c2, cells.c1];
    const otherId = homeId === 'c1' ? 'c2' : 'c1';
    const token = await tokenFor({ user: 'dan', merchant: 'm2', device: 'terminal' });
    const chat = spawn(process.execPath, [BIN, 'chat', '--cluster', other.httpUrl, '--tenant', TENANT, '--token', token, '--conv', conv], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
    let output = '';
    chat.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    chat.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const printed = (text: string) => () => output.includes(text);
    try {
      await eventually(printed(`connected to cell ${homeId} as dan`), `the chat to connect to ${homeId}`, 20_000);
      const moved = await httpRequest('POST', `${home.httpUrl}/v1/admin/merchants/move`, { token: ADMIN_TOKEN, json: { tenant: TENANT, merchant: 'm2', to: otherId } });
      expect(moved.body).toMatchObject({ to: otherId });
      await eventually(printed(`(reconnected to cell ${otherId})`), `the chat to follow the merchant to ${otherId}`, 20_000);
      expect(output).toContain('(the merchant moved to another cell; following it)');
      chat.stdin.write('written after the move\n');
      const stored = async (): Promise<boolean> => {
        const history = await httpRequest('GET', `${other.httpUrl}/v1/conversations/${conv}/messages`, { token });
        return (history.body as { messages?: Array<{ body: string }> }).messages?.some((message) => message.body === 'written after the move') === true;
      };
      await eventually(stored, 'the line to be stored at the new home', 20_000);
      expect(chat.exitCode).toBeNull();
    } catch (error) {
      throw new Error(`${(error as Error).message}; the chat printed:\n${output}`);
    } finally {
      chat.kill('SIGKILL');
    }
  }, 60_000);
});

/** What a client heard: messages in delivery order, and its state changes. */
function recorder(client: CellmeshClient) {
  const messages: ChatMessage[] = [];
  const states: StateChange[] = [];
  client.on('message', (message) => messages.push(message));
  client.on('state', (change) => states.push(change));
  return {
    messages,
    states,
    bodies: (conv: string) => messages.filter((message) => message.conv === conv).map((message) => message.body),
    cmids: (conv: string, role: 'customer' | 'agent') => messages.filter((message) => message.conv === conv && message.role === role).map((message) => message.cmid),
  };
}

/** Opens a raw WebSocket and records its frames until the cell closes it (or welcomes it: then this side closes). */
function inBandRefusal(url: string): Promise<{ frames: unknown[]; closeCode: number }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, 'cellmesh.v1');
    const frames: unknown[] = [];
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { t: string };
      frames.push(frame);
      if (frame.t === 'welcome') socket.close(1000);
    });
    socket.on('close', (closeCode) => resolve({ frames, closeCode }));
    socket.on('error', reject);
  });
}

/** Opens a raw WebSocket whose upgrade is expected to be refused over HTTP: its status and error code. */
function refusedUpgrade(url: string): Promise<{ status: number; code: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, 'cellmesh.v1');
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, code: (JSON.parse(body) as { error: { code: string } }).error.code }));
    });
    socket.on('open', () => reject(new Error('the upgrade was accepted')));
    socket.on('error', () => undefined);
  });
}
