import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { parseCellConfig } from '../assembly/config.js';
import { silentLogger } from '../platform/logger.js';
import { createLibp2pTransport } from '../mesh/libp2p-transport.js';
import { CLUSTER_SECRET, RawClient, SECRET, TENANT, eventually, tokenFor } from './harness.js';

/**
 * Rotating the cluster secret of a running cluster, cell by cell, the way docs/operations.md
 * says: real cells (uWS, LevelDB, libp2p on loopback) in this process, each restarted on its own
 * store, ports and peer key with the next step's secrets, while a cross-cell conversation goes on.
 */

const OLD_SECRET = CLUSTER_SECRET;
const NEW_SECRET = 'rotated-cluster-secret-0123456789abcdef-9';
/** The join bound of the cluster tests (test/mesh-cluster.test.ts). */
const JOIN_BOUND_MS = 20_000;
const CONV = 'm2:alice';

interface Secrets {
  readonly clusterSecret: string;
  readonly acceptClusterSecrets?: string[];
}

interface Member {
  readonly cellId: string;
  readonly merchant: string;
  readonly directory: string;
  readonly port: number;
  readonly meshPort: number;
  running: RunningCell;
}

let root: string | undefined;
const members: Member[] = [];
const clients: RawClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close().catch(() => undefined)));
  await Promise.all(members.splice(0).map((member) => member.running.stop().catch(() => undefined)));
  if (root !== undefined) await rm(root, { recursive: true, force: true });
  root = undefined;
});

/** A port nothing listens on right now (bound by the kernel, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function run(member: Omit<Member, 'running'>, bootstrap: string[], secrets: Secrets): Promise<RunningCell> {
  const config = parseCellConfig({
    cell: { id: member.cellId },
    listen: { host: '127.0.0.1', port: member.port },
    store: { kind: 'level', directory: member.directory },
    tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: member.merchant }] }],
    limits: { ratePerSecond: 10_000, rateBurst: 10_000 },
    mesh: { listen: { host: '127.0.0.1', port: member.meshPort }, bootstrap, ...secrets },
  });
  return startCell({ config, logger: silentLogger });
}

function addressOf(member: Member): string {
  const address = member.running.mesh?.transport.addresses()[0];
  if (address === undefined) throw new Error(`${member.cellId} has no mesh address`);
  return address;
}

/** True when `viewer` holds every cell of `cellIds` alive in its directory. */
function seesAlive(viewer: Member, cellIds: readonly string[]): boolean {
  const directory = viewer.running.mesh!.mesh.directory;
  return cellIds.every((cellId) => directory.get(cellId)?.liveness === 'alive');
}

async function allSeeAllAlive(what: string): Promise<void> {
  const everyone = members.map((member) => member.cellId);
  await eventually(() => members.every((member) => seesAlive(member, everyone)), what, JOIN_BOUND_MS);
}

/**
 * Restarts one cell with the next secrets (same store, ports and peer key), checking that the
 * other cells see each other alive meanwhile and that all see all alive afterwards.
 */
async function restart(member: Member, secrets: Secrets): Promise<void> {
  const others = members.filter((other) => other !== member);
  const otherIds = others.map((other) => other.cellId);
  await member.running.stop();
  for (const viewer of others) expect(seesAlive(viewer, otherIds), `${viewer.cellId} sees the others alive while ${member.cellId} restarts`).toBe(true);
  member.running = await run(member, others.map(addressOf), secrets);
  await allSeeAllAlive(`every cell to see every cell alive after ${member.cellId} restarted`);
  for (const viewer of others) expect(seesAlive(viewer, otherIds), `${viewer.cellId} still sees the others alive`).toBe(true);
}

async function connect(member: Member, token: Promise<string>): Promise<RawClient> {
  const client = await RawClient.connect(`ws://127.0.0.1:${member.port}`, await token);
  client.autoAck();
  clients.push(client);
  return client;
}

describe('rotating the cluster secret cell by cell', () => {
  it('never partitions the cluster, keeps a cross-cell conversation going, and refuses the old secret at the end', async () => {
    root = await mkdtemp(join(tmpdir(), 'cellmesh-rotation-'));
    const plan = await Promise.all(
      ['c1', 'c2', 'c3'].map(async (cellId, index) => ({
        cellId,
        merchant: `m${index + 1}`,
        directory: join(root!, cellId),
        port: await freePort(),
        meshPort: await freePort(),
      })),
    );
    const first: Member = { ...plan[0]!, running: await run(plan[0]!, [], { clusterSecret: OLD_SECRET }) };
    members.push(first);
    for (const member of plan.slice(1)) members.push({ ...member, running: await run(member, [addressOf(first)], { clusterSecret: OLD_SECRET }) });
    await allSeeAllAlive('the cluster to form');
    const [c1, c2] = members as [Member, Member, Member];

    // alice is on c1 and writes to merchant m2, whose home (and agent bob) is c2.
    const aliceToken = (): Promise<string> => tokenFor({ user: 'alice', device: 'phone' });
    const bobToken = (): Promise<string> => tokenFor({ user: 'bob', role: 'agent', merchant: 'm2', device: 'desk' });
    let alice = await connect(c1, aliceToken());
    let bob = await connect(c2, bobToken());
    let round = 0;
    const converse = async (): Promise<void> => {
      round += 1;
      const body = `round ${round}`;
      const answer = await alice.request({ op: 'send', id: `s${round}`, conv: CONV, cmid: `r${round}`, body });
      expect(['queued', 'sent']).toContain(answer.t);
      await bob.until(() => bob.messages(CONV).some((message) => message.body === body), { what: `bob to get "${body}"`, timeoutMs: JOIN_BOUND_MS });
    };
    await converse();

    const steps: Secrets[] = [
      // 1. Every cell accepts the new secret too, still dialling with the old one.
      { clusterSecret: OLD_SECRET, acceptClusterSecrets: [NEW_SECRET] },
      // 2. Every cell dials with the new secret and still accepts the old one.
      { clusterSecret: NEW_SECRET, acceptClusterSecrets: [OLD_SECRET] },
      // 3. The old secret is removed.
      { clusterSecret: NEW_SECRET },
    ];
    for (const secrets of steps) {
      for (const member of members) {
        await restart(member, secrets);
        // The devices of a restarted cell reconnect; the conversation goes on across cells.
        if (member === c1) alice = await connect(c1, aliceToken());
        if (member === c2) bob = await connect(c2, bobToken());
        await converse();
      }
    }

    // A node holding only the old secret is refused by every cell; one with the new secret gets in.
    const outsider = await createLibp2pTransport({ clusterSecret: OLD_SECRET, dialTimeoutMs: 2_000 });
    const insider = await createLibp2pTransport({ clusterSecret: NEW_SECRET });
    await Promise.all([outsider.start(), insider.start()]);
    try {
      for (const member of members) {
        await expect(outsider.dial(addressOf(member)), `${member.cellId} refuses the old secret`).rejects.toMatchObject({ code: 'PEER_UNREACHABLE' });
        expect(await insider.dial(addressOf(member))).toBe(member.running.mesh!.transport.self);
      }
    } finally {
      await Promise.all([outsider.stop(), insider.stop()]);
    }
  }, 180_000);
});
