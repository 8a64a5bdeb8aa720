import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connectNode, type CellmeshClient } from '../client/index.js';
import { silentLogger } from '../platform/logger.js';
import { LevelStore } from '../platform/store/level-store.js';
import { parseCellConfig } from '../assembly/config.js';
import { startCell as startInProcessCell, type RunningCell } from '../assembly/process-cell.js';
import { MerchantClaimsStore } from '../mesh/merchant-claims.js';
import { generateOperatorKeyPair, signPlacement } from '../mesh/claim-proof.js';
import type { MerchantClaim } from '../mesh/cell-record.js';
import { metricValue } from '../platform/prometheus-text.js';
import {
  ADMIN_TOKEN,
  CLUSTER_SECRET,
  RawClient,
  SECRET,
  TENANT,
  errorCodeOf,
  eventually,
  fetchMetrics,
  freePort,
  httpRequest,
  killChildCell,
  startChildCell,
  tokenFor,
  type ChildCell,
} from './harness.js';

/**
 * The mesh with real cell processes on loopback: libp2p with the cluster secret, gossipsub,
 * the failure detector and anti-entropy as production runs them (default LAN timings).
 */

interface CellView {
  cellId: string;
  liveness: string;
  incarnation: number;
  merchants: Array<{ merchant: string }>;
  endpoints: { p2p: string[] };
  load: { devices: number; messagesPerSecond: number };
}

interface ClusterView {
  self: string;
  cells: CellView[];
}

let directory: string | undefined;
const running: ChildCell[] = [];

/** SDK clients a test opened; closed before its cells are killed. */
const closeAfter: CellmeshClient[] = [];

afterEach(async () => {
  await Promise.all(closeAfter.splice(0).map((client) => client.close()));
  await Promise.all(running.splice(0).map((cell) => killChildCell(cell)));
  if (directory !== undefined) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

async function startCell(cellId: string, merchants: string[], bootstrap: string[], options: { operatorKeys?: readonly string[]; port?: number } = {}): Promise<ChildCell> {
  const root = (directory ??= await mkdtemp(join(tmpdir(), 'cellmesh-mesh-')));
  const cell = await startChildCell({
    directory: join(root, cellId),
    configDir: root,
    cellId,
    merchants,
    ...(options.port === undefined ? {} : { port: options.port }),
    mesh: { bootstrap, ...(options.operatorKeys === undefined ? {} : { operatorKeys: options.operatorKeys }) },
  });
  running.push(cell);
  return cell;
}

async function admin<T>(cell: ChildCell, path: string, body?: unknown): Promise<T> {
  const answer = await httpRequest(body === undefined ? 'GET' : 'POST', `${cell.httpUrl}${path}`, {
    token: ADMIN_TOKEN,
    ...(body === undefined ? {} : { json: body }),
  });
  if (answer.status !== 200) throw new Error(`${path}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body as T;
}

const viewOf = (cell: ChildCell): Promise<ClusterView> => admin<ClusterView>(cell, '/v1/admin/cluster');

async function livenessSeenBy(cell: ChildCell, cellId: string): Promise<string | undefined> {
  return (await viewOf(cell)).cells.find((seen) => seen.cellId === cellId)?.liveness;
}

async function addressOf(cell: ChildCell): Promise<string> {
  const view = await viewOf(cell);
  const address = view.cells.find((seen) => seen.cellId === view.self)?.endpoints.p2p[0];
  if (address === undefined) throw new Error('no mesh address');
  return address;
}

/** Three cells: c1 first, c2 and c3 bootstrap through it; resolves once every view has all three alive. */
async function startCluster(options: { operatorKeys?: readonly string[] } = {}): Promise<ChildCell[]> {
  const c1 = await startCell('c1', ['m1'], [], options);
  const bootstrap = [await addressOf(c1)];
  const [c2, c3] = await Promise.all([startCell('c2', ['m2'], bootstrap, options), startCell('c3', ['m3'], bootstrap, options)]);
  const cells = [c1, c2, c3] as ChildCell[];
  await allAlive(cells);
  return cells;
}

async function allAlive(cells: readonly ChildCell[]): Promise<void> {
  await eventually(async () => {
    for (const cell of cells) {
      const view = await viewOf(cell);
      if (view.cells.filter((seen) => seen.liveness === 'alive').length !== cells.length) return false;
    }
    return true;
  }, `all ${cells.length} cells to see each other alive`, 20_000);
}

async function routedTo(cell: ChildCell, merchant: string): Promise<string | undefined> {
  const route = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=${merchant}`);
  return (route.body as { cellId?: string }).cellId;
}

describe('a cluster of cell processes', () => {
  it('joins through one bootstrap cell, agrees on membership, routes every merchant to its home cell from any cell, and resolves a claim conflict alike everywhere', async () => {
    const cells = await startCluster();
    for (const cell of cells) {
      for (const [merchant, home] of [['m1', 'c1'], ['m2', 'c2'], ['m3', 'c3']] as const) {
        const answer = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=${merchant}`);
        expect(answer.status).toBe(200);
        expect(answer.body).toMatchObject({ cellId: home, liveness: 'alive' });
      }
      const unknown = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=nobody`);
      expect(unknown.status).toBe(404);
      expect((unknown.body as { error: { code: string } }).error.code).toBe('MERCHANT_UNKNOWN');
    }
    // The admin API refuses without the token.
    const refused = await httpRequest('GET', `${cells[0]!.httpUrl}/v1/admin/cluster`);
    expect(refused.status).toBe(403);

    // A config mistake: a fourth cell claims m1 too. Every cell resolves it the same way (same
    // epoch: the lower cell id wins) and reports the conflict.
    const c4 = await startCell('c4', ['m1', 'm4'], [await addressOf(cells[0]!)]);
    for (const cell of [...cells, c4]) {
      await eventually(async () => {
        const view = await admin<{ conflicts: Array<{ merchant: string; claimants: string[]; winner: string }> }>(cell, '/v1/admin/cluster');
        return view.conflicts.some((conflict) => conflict.merchant === 'm1' && conflict.winner === 'c1' && conflict.claimants.includes('c4'));
      }, `${cell.httpUrl} to report the conflict over m1`, 20_000);
      const route = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=m1`);
      expect(route.body).toMatchObject({ cellId: 'c1' });
    }
  });

  // How fast (the 5 s goal) is measured by `npm run bench -- mesh`; here: that it happens.
  it('learns that a cell left gracefully, and detects a crashed cell', async () => {
    const [c1, c2, c3] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    c3.kill('SIGTERM');
    expect(await c3.exited).toMatchObject({ code: 0 });
    await eventually(async () => (await livenessSeenBy(c1, 'c3')) === 'left' && (await livenessSeenBy(c2, 'c3')) === 'left', 'c3 to be seen as left', 5_000);
    // c3 may come back with its disk: its merchant's customers are routed to a fallback to leave messages.
    const fallback = await httpRequest('GET', `${c1.httpUrl}/v1/route?tenant=${TENANT}&merchant=m3`);
    expect(fallback.body).toMatchObject({ mode: 'leave-a-message', home: { cellId: 'c3', liveness: 'left' } });
    expect(['c1', 'c2']).toContain((fallback.body as { cellId: string }).cellId);

    await killChildCell(c2);
    await eventually(async () => (await livenessSeenBy(c1, 'c2')) === 'dead', 'c2 to be declared dead', 15_000);
  });

  it('heals after a partition: both sides declare the other dead, then converge once the links are back', async () => {
    const [c1, c2, c3] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    // Cut c3 off on both sides (the admin API blocks the libp2p connections).
    await admin(c3, '/v1/admin/mesh/block', { cells: ['c1', 'c2'] });
    await admin(c1, '/v1/admin/mesh/block', { cells: ['c3'] });
    await admin(c2, '/v1/admin/mesh/block', { cells: ['c3'] });
    await eventually(
      async () => (await livenessSeenBy(c1, 'c3')) === 'dead' && (await livenessSeenBy(c3, 'c1')) === 'dead',
      'each side to hold the other dead',
      15_000,
    );
    // Inside each side, the cells go on: c1 and c2 still see each other alive.
    expect(await livenessSeenBy(c1, 'c2')).toBe('alive');

    await admin(c3, '/v1/admin/mesh/unblock', { cells: ['c1', 'c2'] });
    await admin(c1, '/v1/admin/mesh/unblock', { cells: ['c3'] });
    await admin(c2, '/v1/admin/mesh/unblock', { cells: ['c3'] });
    await eventually(async () => {
      for (const cell of [c1, c2, c3]) {
        const view = await viewOf(cell);
        if (view.cells.some((seen) => seen.liveness !== 'alive')) return false;
      }
      return true;
    }, 'all views to agree that every cell is alive again', 20_000);
    // The cells that were held dead refuted with a higher incarnation, and everyone agrees on it.
    const incarnations = await Promise.all([c1, c2, c3].map(async (cell) => (await viewOf(cell)).cells.map((seen) => `${seen.cellId}@${seen.incarnation}`).join(' ')));
    expect(new Set(incarnations).size).toBe(1);
    expect(metricValue(await fetchMetrics(c3.httpUrl), 'cellmesh_mesh_refutations_total')).toBeGreaterThan(0);
  });

  it('locates a user by broadcast: the cells holding the user\'s devices answer, and every cell gossips its load', async () => {
    const [c1, c2, c3] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    const phone = await RawClient.connect(c2.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const laptop = await RawClient.connect(c3.url, await tokenFor({ user: 'alice', device: 'laptop' }));
    try {
      // A locate waits a bounded time for answers; on a loaded machine a cell's answer can miss
      // that window, and asking again is what a caller does.
      let located: string[] = [];
      await eventually(async () => {
        located = [...(await admin<{ cells: string[] }>(c1, `/v1/admin/locate?tenant=${TENANT}&user=alice`)).cells].sort();
        return located.length === 2;
      }, 'both cells holding alice\'s devices to answer a locate', 15_000);
      expect(located).toEqual(['c2', 'c3']);
      const nobody = await admin<{ cells: string[] }>(c1, `/v1/admin/locate?tenant=${TENANT}&user=nobody`);
      expect(nobody.cells).toEqual([]);
      const metrics = await fetchMetrics(c1.httpUrl);
      expect(metricValue(metrics, 'cellmesh_locate_queries_total')).toBe(2);
      // Each cell republishes its record when its load changed (mesh/load-publisher.ts, every 5 s here).
      await eventually(async () => {
        const seen = (await viewOf(c1)).cells.filter((cell) => cell.cellId !== 'c1');
        return seen.length === 2 && seen.every((cell) => cell.load.devices === 1);
      }, 'c1 to see one device in the load of c2 and of c3', 15_000);
    } finally {
      phone.close();
      laptop.close();
    }
  });
});

describe('cross-cell conversations between cell processes', () => {
  it('relays a customer on one cell to a merchant homed on another, through a partition, once and in order', async () => {
    const [c1, c2] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    const conv = 'm2:alice';
    // alice is connected to c1; m2 lives on c2, where its agent is.
    const alice = await RawClient.connect(c1.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const agent = await RawClient.connect(c2.url, await tokenFor({ user: 'bob', role: 'agent', merchant: 'm2', device: 'desk' }));
    alice.autoAck();
    agent.autoAck();
    try {
      const first = await alice.request({ op: 'send', id: 's1', conv, cmid: 'c1', body: 'hello from another cell' });
      expect(first).toMatchObject({ t: 'queued', conv, cmid: 'c1' });
      await alice.until(() => alice.frames.some((frame) => frame.t === 'sent' && frame.cmid === 'c1' && frame.seq === 1), { what: 'sent with the seq of the home cell' });
      await agent.until(() => agent.messages(conv).length === 1, { what: 'the agent to get the message' });
      agent.send({ op: 'send', id: 'r1', conv, cmid: 'r1', body: 'hi alice' });
      await alice.until(() => alice.messages(conv).some((message) => message.seq === 2 && message.body === 'hi alice'), { what: "the agent's reply on the customer's cell" });

      // A partition between the two cells: alice's sends wait in c1's outbox; the agent's replies in c2's.
      await admin(c1, '/v1/admin/mesh/block', { cells: ['c2'] });
      await admin(c2, '/v1/admin/mesh/block', { cells: ['c1'] });
      for (let index = 0; index < 10; index++) {
        const answer = await alice.request({ op: 'send', id: `p${index}`, conv, cmid: `p${index}`, body: `while cut off ${index}` });
        expect(answer.t).toBe('queued');
      }
      // Inside c2, conversations go on during the partition.
      const local = await RawClient.connect(c2.url, await tokenFor({ user: 'carol', device: 'tab' }));
      const inCell = await local.request({ op: 'send', id: 'l1', conv: 'm2:carol', cmid: 'l1', body: 'in-cell during the partition' });
      expect(inCell).toMatchObject({ t: 'sent', seq: 1 });
      await local.close();

      await admin(c1, '/v1/admin/mesh/unblock', { cells: ['c2'] });
      await admin(c2, '/v1/admin/mesh/unblock', { cells: ['c1'] });
      // The agent gets alice's messages as `msg` (its own reply, seq 2, came back as `sent`).
      await agent.until(() => agent.messages(conv).length === 11, { what: 'every queued message after the heal', timeoutMs: 30_000 });
      const seqs = agent.messages(conv).map((message) => message.seq);
      expect(seqs).toEqual([1, ...Array.from({ length: 10 }, (_, index) => index + 3)]);
      const bodies = agent.messages(conv).slice(1).map((message) => message.body);
      expect(bodies).toEqual(Array.from({ length: 10 }, (_, index) => `while cut off ${index}`));
      await alice.until(() => ['c1', ...Array.from({ length: 10 }, (_, index) => `p${index}`)].every((cmid) => alice.frames.some((frame) => frame.t === 'sent' && frame.cmid === cmid)), {
        what: 'a sent (with its seq) for every queued send',
        timeoutMs: 30_000,
      });
    } finally {
      await alice.close();
      await agent.close();
    }
  });
});

describe('erasing a customer across cell processes', () => {
  it('reaches the cell holding the mirror through the outbox, also after a partition', async () => {
    const [c1, c2] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    const conv = 'm2:alice';
    const alice = await RawClient.connect(c1.url, await tokenFor({ user: 'alice', device: 'phone' }));
    alice.autoAck();
    try {
      await alice.request({ op: 'send', id: 's1', conv, cmid: 'c1', body: 'my address is ...' });
      await alice.until(() => alice.frames.some((frame) => frame.t === 'sent' && frame.cmid === 'c1'), { what: 'sent' });
      const exportOf = async (cell: ChildCell): Promise<Array<{ conv: string }>> =>
        ((await httpRequest('GET', `${cell.httpUrl}/v1/admin/tenants/${TENANT}/customers/alice/export`, { token: ADMIN_TOKEN })).body as { conversations: Array<{ conv: string }> }).conversations;
      expect((await exportOf(c1)).map((conversation) => conversation.conv)).toEqual([conv]);

      // Cut off from the home cell, the mirror's cell cannot hear the erasure yet.
      await admin(c1, '/v1/admin/mesh/block', { cells: ['c2'] });
      await admin(c2, '/v1/admin/mesh/block', { cells: ['c1'] });
      const erased = await httpRequest('DELETE', `${c2.httpUrl}/v1/admin/tenants/${TENANT}/customers/alice`, { token: ADMIN_TOKEN });
      expect(erased.body).toMatchObject({ deleted: { conversations: 1, messages: 1 }, cellsAsked: ['c1', 'c3'], cellsFailed: [] });
      expect(await exportOf(c2)).toEqual([]);
      expect((await exportOf(c1)).length).toBe(1);

      await admin(c1, '/v1/admin/mesh/unblock', { cells: ['c2'] });
      await admin(c2, '/v1/admin/mesh/unblock', { cells: ['c1'] });
      await eventually(async () => (await exportOf(c1)).length === 0, 'the mirror erased after the heal', 30_000);
      await alice.until(() => alice.closeCode !== undefined, { what: "alice's device closed", timeoutMs: 10_000 });
      expect(alice.closeCode).toBe(4403);
    } finally {
      await alice.close();
    }
  });
});

describe('moving a merchant between cell processes', () => {
  it('hands over conversations, history and cursors under traffic, switches routing, and loses nothing', async () => {
    const [c1, c2, c3] = (await startCluster()) as [ChildCell, ChildCell, ChildCell];
    const conv = 'm2:alice';
    const alice = await RawClient.connect(c2.url, await tokenFor({ user: 'alice', device: 'phone' }));
    const bob = await RawClient.connect(c2.url, await tokenFor({ user: 'bob', role: 'agent', merchant: 'm2', device: 'desk' }));
    alice.autoAck();
    bob.autoAck();
    const sentCmids = (): string[] => alice.frames.flatMap((frame) => (frame.t === 'sent' ? [frame.cmid] : []));
    try {
      for (let index = 0; index < 20; index++) alice.send({ op: 'send', id: `a${index}`, conv, cmid: `a${index}`, body: `before ${index}` });
      await alice.until(() => sentCmids().length === 20, { what: 'the first 20 acks' });
      await bob.until(() => bob.messages(conv).length === 20, { what: 'bob to read the first 20' });
      const agentsOf = (cell: ChildCell): string => `${cell.httpUrl}/v1/admin/tenants/${TENANT}/merchants/m2/agents`;
      const created = await httpRequest('POST', agentsOf(c2), { token: ADMIN_TOKEN, json: { id: 'bob', capacity: 4, groups: ['after-sales'] } });
      expect(created.status).toBe(201);

      // The move runs while alice keeps writing: her sends during the fence wait, later ones go cross-cell.
      const moving = admin<{ to: string; epoch: number; conversations: number }>(c2, '/v1/admin/merchants/move', { tenant: TENANT, merchant: 'm2', to: 'c3' });
      for (let index = 20; index < 40; index++) {
        alice.send({ op: 'send', id: `a${index}`, conv, cmid: `a${index}`, body: `during ${index}` });
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const moved = await moving;
      expect(moved).toMatchObject({ to: 'c3', epoch: 1, conversations: 1 });
      for (const cell of [c1, c2, c3]) {
        await eventually(async () => {
          const route = await httpRequest('GET', `${cell.httpUrl}/v1/route?tenant=${TENANT}&merchant=m2`);
          return (route.body as { cellId?: string }).cellId === 'c3';
        }, `${cell.httpUrl} to route m2 to c3`);
      }
      // The merchant's people moved with it, and the move is in the old home's audit log.
      const movedAgents = await httpRequest('GET', agentsOf(c3), { token: ADMIN_TOKEN });
      expect(movedAgents.body).toMatchObject({ agents: [{ id: 'bob', capacity: 4, groups: ['after-sales'] }] });
      expect(errorCodeOf(await httpRequest('GET', agentsOf(c2), { token: ADMIN_TOKEN }))).toBe('MERCHANT_NOT_HOSTED');
      const audit = await httpRequest('GET', `${c2.httpUrl}/v1/admin/audit?action=merchant.move`, { token: ADMIN_TOKEN });
      expect(audit.body).toMatchObject({ entries: [{ actor: 'admin', action: 'merchant.move', tenant: TENANT, merchant: 'm2', details: { to: 'c3' }, outcome: 'ok' }] });
      // The agent on the old cell was redirected to the new home, where he finds everything.
      await bob.whenClosed();
      expect(bob.closeCode).toBe(4307);
      expect(bob.frames.find((frame) => frame.t === 'error')).toMatchObject({ code: 'MERCHANT_ELSEWHERE', home: { cellId: 'c3', ws: `${c3.url}/v1/ws`, http: c3.httpUrl, epoch: 1 } });
      const bobAgain = await RawClient.connect(c3.url, await tokenFor({ user: 'bob', role: 'agent', merchant: 'm2', device: 'desk' }));
      bobAgain.autoAck();
      try {
        await alice.until(() => sentCmids().length === 40, { what: 'an ack for every send', timeoutMs: 30_000 });
        // The same device across the switch: what it acked at the old home is not sent again, so
        // under a slow move the last send may have reached it there. Together, nothing is missing.
        const seenByBob = (): Array<{ seq: number; cmid?: string }> => [...bob.messages(conv), ...bobAgain.messages(conv)];
        await bobAgain.until(() => seenByBob().some((message) => message.cmid === 'a39'), { what: 'the agent to get the last send, at the old home or the new', timeoutMs: 30_000 });
        const seenSeqs = [...new Set(seenByBob().map((message) => message.seq))].sort((a, b) => a - b);
        expect(seenSeqs).toEqual(Array.from({ length: seenSeqs.length }, (_, index) => index + 1));
        const history = (await bobAgain.request({ op: 'history', id: 'h', conv, limit: 100 })) as { messages: Array<{ seq: number; cmid: string; role: string }> };
        // Gap-free; with bob registered, m2 has a desk, whose system messages are in the log too.
        expect(history.messages.map((message) => message.seq)).toEqual(Array.from({ length: history.messages.length }, (_, index) => index + 1));
        const chat = history.messages.filter((message) => message.role !== 'system');
        expect(chat.map((message) => message.cmid)).toEqual(Array.from({ length: 40 }, (_, index) => `a${index}`));
        // Every ack alice got names the seq the new home holds for that cmid.
        const seqByCmid = new Map(history.messages.map((message) => [message.cmid, message.seq]));
        for (const frame of alice.frames) if (frame.t === 'sent') expect(frame.seq).toBe(seqByCmid.get(frame.cmid));
      } finally {
        await bobAgain.close();
      }
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

/**
 * A node that holds the cluster secret but is no cell of the operator's: a real cell in this
 * process whose store says it holds `merchants` at the epochs given, with no proof of a move,
 * so it publishes its own, validly signed record with the claims it likes.
 */
async function startImpostor(cellId: string, bootstrap: string, merchants: readonly MerchantClaim[]): Promise<RunningCell> {
  const root = (directory ??= await mkdtemp(join(tmpdir(), 'cellmesh-mesh-')));
  const storeDirectory = join(root, cellId);
  const store = new LevelStore({ directory: storeDirectory, sync: true });
  await store.open();
  const claims = new MerchantClaimsStore(store);
  for (const claim of merchants) await claims.record(claim.tenant, claim.merchant, claim.epoch, { hosted: true });
  await store.close();
  const config = parseCellConfig({
    cell: { id: cellId },
    listen: { host: '127.0.0.1', port: await freePort() },
    store: { kind: 'level', directory: storeDirectory, sync: true },
    tenants: [{ id: TENANT, secret: SECRET, merchants: [] }],
    mesh: { listen: { host: '127.0.0.1', port: await freePort() }, clusterSecret: CLUSTER_SECRET, bootstrap: [bootstrap] },
    admin: { token: ADMIN_TOKEN },
  });
  return startInProcessCell({ config, logger: silentLogger });
}

interface ConflictView {
  conflicts: Array<{ merchant: string; winner: string; unproven?: Array<{ cellId: string; epoch: number }> }>;
}

describe('who may claim a merchant', () => {
  it('ignores a node with the cluster secret that claims a hosted merchant at a higher epoch without proof, and reports it', async () => {
    const cells = await startCluster();
    const impostor = await startImpostor('impostor', await addressOf(cells[0]!), [{ tenant: TENANT, merchant: 'm1', epoch: 99 }]);
    try {
      for (const cell of cells) {
        await eventually(async () => (await viewOf(cell)).cells.some((seen) => seen.cellId === 'impostor' && seen.liveness === 'alive'), `${cell.httpUrl} to take the impostor's record`, 20_000);
      }
      for (const cell of cells) {
        expect(await routedTo(cell, 'm1')).toBe('c1');
        const view = await admin<ConflictView>(cell, '/v1/admin/cluster');
        expect(view.conflicts).toEqual([expect.objectContaining({ merchant: 'm1', winner: 'c1', unproven: [{ cellId: 'impostor', epoch: 99 }] })]);
        expect(metricValue(await fetchMetrics(cell.httpUrl), 'cellmesh_mesh_unproven_claims_total')).toBe(1);
      }
      // A real move, with the home's signed handover, still moves a merchant past the impostor's claim.
      const moved = await admin<{ to: string; epoch: number }>(cells[0]!, '/v1/admin/merchants/move', { tenant: TENANT, merchant: 'm1', to: 'c2' });
      expect(moved).toMatchObject({ to: 'c2', epoch: 1 });
      for (const cell of cells) await eventually(async () => (await routedTo(cell, 'm1')) === 'c2', `${cell.httpUrl} to route m1 to c2`);
    } finally {
      await impostor.stop();
    }
  }, 120_000);

  it('takes a merchant in on an operator placement, and rotates the operator key cell by cell with either key accepted meanwhile', async () => {
    const oldKey = generateOperatorKeyPair();
    const newKey = generateOperatorKeyPair();
    const homes: Record<string, string[]> = { c1: ['m1'], c2: ['m2'], c3: ['m3'] };
    let cells = await startCluster({ operatorKeys: [oldKey.publicKey] });
    const cell = (cellId: string): ChildCell => cells[Number(cellId.slice(1)) - 1]!;
    const place = (key: { privateKeyPem: string }, merchant: string, target: string, epoch: number) =>
      httpRequest('POST', `${cell(target).httpUrl}/v1/admin/merchants/place`, {
        token: ADMIN_TOKEN,
        json: signPlacement(key.privateKeyPem, { tenant: TENANT, merchant, cell: target, epoch }),
      });
    const expectRoutes = async (merchant: string, home: string): Promise<void> => {
      for (const seen of cells) await eventually(async () => (await routedTo(seen, merchant)) === home, `${seen.httpUrl} to route ${merchant} to ${home}`, 20_000);
    };
    /** Restarts every cell in turn (SIGTERM, then the same store and port) with these operator keys. */
    const restartEach = async (operatorKeys: readonly string[]): Promise<void> => {
      for (let index = 0; index < cells.length; index++) {
        const before = cells[index]!;
        const cellId = `c${index + 1}`;
        const bootstrap = [await addressOf(cells[(index + 1) % cells.length]!)];
        before.kill('SIGTERM');
        expect(await before.exited).toMatchObject({ code: 0 });
        const after = await startCell(cellId, homes[cellId]!, bootstrap, { operatorKeys, port: before.port });
        cells = cells.map((other, at) => (at === index ? after : other));
        await allAlive(cells);
      }
    };

    // A key the cells do not trust places nothing; the trusted one makes c3 the home of m1 everywhere.
    expect(errorCodeOf(await place(newKey, 'm1', 'c3', 1))).toBe('PLACEMENT_INVALID');
    expect((await place(oldKey, 'm1', 'c3', 1)).status).toBe(200);
    await expectRoutes('m1', 'c3');
    expect(errorCodeOf(await place(oldKey, 'm1', 'c3', 1))).toBe('PLACEMENT_STALE');

    // A customer and an agent of m1 stay connected to its home c3 (the SDK reconnects when c3
    // restarts) and keep chatting through every step of the rotation.
    const device = async (user: string, merchant?: string): Promise<CellmeshClient> => {
      const token = await tokenFor({ user, device: 'phone', ...(merchant === undefined ? {} : { merchant }) });
      const client = await connectNode({ url: cell('c3').url, token, backoff: { initialDelayMs: 50, maxDelayMs: 400 }, signal: AbortSignal.timeout(20_000) });
      closeAfter.push(client);
      return client;
    };
    const customer = await device('alice');
    const agent = await device('a1', 'm1');
    const agentSaw: string[] = [];
    agent.on('message', (message) => agentSaw.push(message.body));
    let sent = 0;
    const chat = async (): Promise<void> => {
      const body = `message ${sent++}`;
      await customer.send('m1:alice', body);
      await eventually(async () => agentSaw.includes(body), `the agent to get "${body}"`, 20_000);
    };
    await chat();

    // Rotation, step 1: every cell in turn trusts both keys; placements signed with either are taken.
    await restartEach([oldKey.publicKey, newKey.publicKey]);
    await expectRoutes('m1', 'c3');
    await chat();
    expect((await place(oldKey, 'm2', 'c1', 1)).status).toBe(200);
    expect((await place(newKey, 'm3', 'c2', 1)).status).toBe(200);
    await expectRoutes('m2', 'c1');
    await expectRoutes('m3', 'c2');

    // Step 2: the placements of the old key still in force are signed again with the new one; then every cell drops the old key.
    expect((await place(newKey, 'm1', 'c3', 2)).status).toBe(200);
    expect((await place(newKey, 'm2', 'c1', 2)).status).toBe(200);
    await restartEach([newKey.publicKey]);
    await expectRoutes('m1', 'c3');
    await chat();
    await expectRoutes('m2', 'c1');
    await expectRoutes('m3', 'c2');
    expect(errorCodeOf(await place(oldKey, 'm3', 'c1', 5))).toBe('PLACEMENT_INVALID');
    expect((await place(newKey, 'm3', 'c1', 5)).status).toBe(200);
    await expectRoutes('m3', 'c1');
    await chat();
    expect(agentSaw).toEqual(Array.from({ length: sent }, (_, index) => `message ${index}`));
  }, 300_000);
});
