/**
 * A home cell that is down (docs/routing.md): three cell processes on loopback, the merchant's
 * home SIGKILLed. Its customer, on the SDK in route mode, is routed to the merchant's fallback
 * cell and leaves messages there (answered `queued`); the home restarts with its disk, and every
 * message reaches it once and in the order written, the customer gets `sent` with the home's
 * seqs, and the agent's answer reaches the customer on the fallback. A graceful stop (the home
 * left) is a home that is down too: messages left meanwhile wait for it in the same way. Along
 * the way: the customer's `cellmesh chat`, the agent and a new guest refused HOME_UNAVAILABLE at
 * the fallback, and `operator place`, which refuses to re-home away from a serving home and warns
 * what history a re-home loses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectNode, type CellmeshClient, type ChatMessage, type SendResult, type StateChange } from '../client/index.js';
import { generateOperatorKeyPair } from '../mesh/claim-proof.js';
import { BIN, cleanEnv, runCli } from './cli-process.js';
import { ADMIN_TOKEN, REPO_ROOT, TENANT, eventually, httpRequest, killChildCell, startChildCell, tokenFor, type ChildCell } from './harness.js';

interface RouteAnswer {
  cellId: string;
  epoch: number;
  mode?: string;
  home?: { cellId: string; epoch: number; liveness: string };
}

const running: ChildCell[] = [];
const clients: CellmeshClient[] = [];
const chats: ChildProcess[] = [];
let root: string | undefined;

afterAll(async () => {
  for (const chat of chats) chat.kill('SIGKILL');
  await Promise.all(clients.map((client) => client.close()));
  await Promise.all(running.map((cell) => killChildCell(cell)));
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

async function startCell(cellId: string, merchants: string[], bootstrap: string[], port?: number): Promise<ChildCell> {
  root ??= await mkdtemp(join(tmpdir(), 'cellmesh-outage-'));
  const cell = await startChildCell({ directory: join(root, cellId), configDir: root, cellId, merchants, ...(port === undefined ? {} : { port }), mesh: { bootstrap } });
  running.push(cell);
  return cell;
}

async function clusterOf(cell: ChildCell): Promise<{ self: string; cells: Array<{ cellId: string; liveness: string; endpoints: { p2p: string[] } }> }> {
  return (await httpRequest('GET', `${cell.httpUrl}/v1/admin/cluster`, { token: ADMIN_TOKEN })).body as Awaited<ReturnType<typeof clusterOf>>;
}

async function routeOf(cell: ChildCell, merchant: string): Promise<{ status: number; body: RouteAnswer }> {
  const answer = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=${merchant}`);
  return { status: answer.status, body: answer.body as RouteAnswer };
}

describe('a home cell that is down', () => {
  it("routes a SIGKILLed home's customer to a fallback cell, where her messages wait, and delivers them once and in order when the home returns", async () => {
    const c1 = await startCell('c1', ['m1'], []);
    const bootstrap = [(await clusterOf(c1)).cells.find((cell) => cell.cellId === 'c1')!.endpoints.p2p[0]!];
    const [c2, c3] = await Promise.all([startCell('c2', ['m2'], bootstrap), startCell('c3', ['m3'], bootstrap)]);
    await eventually(async () => (await Promise.all([c1, c3].map(async (cell) => (await routeOf(cell, 'm2')).body.cellId))).every((cellId) => cellId === 'c2'), 'c1 and c3 to route m2 to c2', 20_000);

    const conv = 'm2:alice';
    const alice = await connectNode({ route: { url: c1.httpUrl, tenant: TENANT, merchant: 'm2' }, token: await tokenFor({ user: 'alice', device: 'phone' }) });
    clients.push(alice);
    const queued: string[] = [];
    const heard: ChatMessage[] = [];
    alice.on('queued', ({ cmid }) => queued.push(cmid));
    alice.on('message', (message) => heard.push(message));
    const states: StateChange[] = [];
    alice.on('state', (change) => states.push(change));
    expect(alice.session?.cell).toBe('c2');
    expect(await alice.send(conv, 'before the crash', { cmid: 'a0' })).toMatchObject({ seq: 1 });

    await killChildCell(c2);
    // Once c2 is held dead, every cell answers the same fallback, a live cell, with the home that is down.
    let fallback = '';
    await eventually(async () => {
      const [one, three] = await Promise.all([routeOf(c1, 'm2'), routeOf(c3, 'm2')]);
      fallback = one.body.cellId;
      return one.body.mode === 'leave-a-message' && three.body.cellId === fallback;
    }, 'the cells to route m2 to a fallback cell', 30_000);
    const route = (await routeOf(c3, 'm2')).body;
    expect(route).toMatchObject({ mode: 'leave-a-message', epoch: 0, home: { cellId: 'c2', epoch: 0, liveness: 'dead' } });
    expect(['c1', 'c3']).toContain(fallback);

    // The SDK re-routes on its own after the drop and ends on the fallback; its sends are left there.
    await eventually(() => alice.session?.cell === fallback, `alice's client to reconnect to the fallback ${fallback}`, 30_000);
    expect(alice.homeDown).toEqual({ cellId: 'c2', epoch: 0, liveness: 'dead' });
    const cmids = Array.from({ length: 10 }, (_, index) => `a${index + 1}`);
    const sends: Array<Promise<SendResult>> = cmids.map((cmid, index) => alice.send(conv, `while the home is down ${index + 1}`, { cmid }));
    await eventually(() => cmids.every((cmid) => queued.includes(cmid)), 'a `queued` for every message left at the fallback', 10_000);
    expect(queued.filter((cmid) => cmids.includes(cmid))).toEqual(cmids);

    // `cellmesh chat --cluster` of another customer says where its messages wait, and keeps them.
    const chat = spawn(process.execPath, [BIN, 'chat', '--cluster', c1.httpUrl, '--tenant', TENANT, '--token', await tokenFor({ user: 'carol', device: 'terminal' }), '--conv', 'm2:carol'], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
    chats.push(chat);
    let printed = '';
    chat.stdout.setEncoding('utf8').on('data', (chunk: string) => (printed += chunk));
    chat.stderr.setEncoding('utf8').on('data', (chunk: string) => (printed += chunk));
    await eventually(() => printed.includes("(the merchant's home cell c2 is down: your messages are kept here"), 'the chat to say the home is down', 20_000);
    chat.stdin.write('left while the home was down\n');

    // The home's agent cannot work at the fallback: a transient refusal, its client keeps trying.
    const fallbackCell = fallback === 'c1' ? c1 : c3;
    const early = await httpRequest('GET', `${fallbackCell.httpUrl}/v1/conversations/${conv}/messages`, { token: await tokenFor({ user: 'bob', merchant: 'm2' }) });
    expect(early.status).toBe(503);
    expect((early.body as { error: { code: string } }).error.code).toBe('HOME_UNAVAILABLE');
    const guest = await httpRequest('POST', `${fallbackCell.httpUrl}/v1/guest`, { json: { tenant: TENANT, merchant: 'm2' } });
    expect([guest.status, (guest.body as { error: { code: string } }).error.code]).toEqual([503, 'HOME_UNAVAILABLE']);

    // The home comes back with its disk (same store, same port, same peer key).
    const restarted = await startCell('c2', ['m2'], bootstrap, c2.port);
    const results = await Promise.all(sends);
    expect(results.map((result) => result.cmid)).toEqual(cmids);
    expect(results.map((result) => result.seq)).toEqual(cmids.map((_, index) => index + 2));

    // The fallback sends her back home (4307) once the home serves again; her client follows.
    await eventually(() => alice.session?.cell === 'c2', "alice's client to be sent back to the home", 20_000);
    expect(states.some((change) => change.state === 'reconnecting' && change.closeCode === 4307)).toBe(true);
    expect(alice.homeDown).toBeUndefined();

    // At the home, every message once, in the order written; the agent's answer reaches alice.
    const bob = await connectNode({ url: restarted.url, token: await tokenFor({ user: 'bob', role: 'agent', merchant: 'm2', device: 'desk' }) });
    clients.push(bob);
    const history = await bob.history(conv, { limit: 100 });
    expect(history.messages.filter((message) => message.role === 'customer').map((message) => message.cmid)).toEqual(['a0', ...cmids]);
    await bob.send(conv, 'sorry for the wait', { cmid: 'b1' });
    await eventually(() => heard.some((message) => message.cmid === 'b1' && message.seq === 12), "bob's answer to reach alice", 20_000);
    await eventually(() => printed.includes("(the merchant's home cell is back; going there)") && printed.includes('(reconnected to cell c2)'), 'the chat to go home', 20_000);
    await eventually(async () => (await bob.history('m2:carol', { limit: 10 })).messages.some((message) => message.body === 'left while the home was down'), "carol's line to be stored at the home", 20_000);
    chat.kill('SIGKILL');
    const seqs = heard.filter((message) => message.conv === conv).map((message) => message.seq);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
    expect((await routeOf(c1, 'm2')).body).toMatchObject({ cellId: 'c2' });
    expect((await routeOf(c1, 'm2')).body.mode).toBeUndefined();
    await bob.close();

    // An operator cannot re-home m2 away from a home that serves it by mistake: move-merchant carries the data.
    const keyFile = join(root!, 'operator.pem');
    await writeFile(keyFile, generateOperatorKeyPair().privateKeyPem);
    const place = ['operator', 'place', '--key', keyFile, '--tenant', TENANT, '--merchant', 'm2', '--cell', fallback, '--cluster', c1.httpUrl, '--admin-token', ADMIN_TOKEN];
    const refused = await runCli(place);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('m2 is served by cell c2 (alive): move it with `cellmesh move-merchant`');

    // A graceful stop (`demo stop-cell`): the home left still holding m2, so m2 waits for it too.
    restarted.kill('SIGTERM');
    expect(await restarted.exited).toMatchObject({ code: 0 });
    await eventually(async () => (await routeOf(c1, 'm2')).body.home?.liveness === 'left', 'the cells to route m2 to its fallback again', 10_000);
    expect((await routeOf(c1, 'm2')).body.cellId).toBe(fallback);
    // While it is down, a placement goes ahead (these cells trust no operator key, so it is refused there), after the warning.
    const warned = await runCli(place);
    expect(warned.stderr).toContain(`warning: a placement moves no data. ${fallback} starts m2 empty; what is on cell c2's disk is lost`);
    expect(warned.stderr).toContain('PLACEMENT_INVALID');
    const later = ['a11', 'a12', 'a13'];
    const laterSends = later.map((cmid) => alice.send(conv, `after the stop ${cmid}`, { cmid }));
    await eventually(() => later.every((cmid) => queued.includes(cmid)), 'a `queued` for every message left while the home is stopped', 10_000);
    await startCell('c2', ['m2'], bootstrap, c2.port);
    expect((await Promise.all(laterSends)).map((result) => result.seq)).toEqual([13, 14, 15]);
  }, 150_000);
});
