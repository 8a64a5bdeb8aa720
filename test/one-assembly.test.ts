import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { assembleCell, type AssembledCell, type AssembledMesh } from '../assembly/assemble-cell.js';
import { parseCellConfig } from '../assembly/config.js';
import { startCell } from '../assembly/process-cell.js';
import { mintToken } from '../cell/access/tokens.js';
import type { DevicePort } from '../cell/messaging/device.js';
import type { ServerFrame } from '../cell/protocol/frames.js';
import { LimitsConfig, type TenantConfig } from '../cell/settings.js';
import { MemoryNetwork, memoryAddress } from '../mesh/memory-network.js';
import { Ed25519RecordSigner, PublicKeyRegistry, ed25519PublicKeyOfSeed, ed25519SeedFrom } from '../mesh/record-signer.js';
import { SystemClock } from '../platform/clock.js';
import { silentLogger } from '../platform/logger.js';
import { MemoryMetrics } from '../platform/memory-metrics.js';
import { SeededRandom } from '../platform/random.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, SECRET, TENANT, eventually, freePort } from './harness.js';

/**
 * One assembly, two worlds: the same short scenario (an in-cell and a cross-cell conversation,
 * replies, read receipts, history) runs through cells assembled on memory ports (memory store,
 * memory network, devices attached to the core) and through cells started as a process starts
 * them (uWS, LevelDB, libp2p on loopback, WebSocket devices). What the devices observe must be
 * the same.
 */

const CLOCK = new SystemClock();

interface WorldDevice {
  readonly frames: ServerFrame[];
  send(frame: Record<string, unknown>): void;
  close(): void;
}

interface WorldCell {
  readonly cluster: AssembledMesh | undefined;
  connect(token: string): Promise<WorldDevice>;
}

interface World {
  readonly cells: Record<'c1' | 'c2', WorldCell>;
  stop(): Promise<void>;
}

const tenantOf = (merchant: string): TenantConfig => ({ id: TENANT, secret: SECRET, origins: [], merchants: [{ id: merchant }] });

/** A device attached to a core directly, as the simulator's links and the benchmarks attach them. */
class MemoryDevice implements DevicePort, WorldDevice {
  readonly frames: ServerFrame[] = [];
  private closed = false;
  private connection: ReturnType<AssembledCell['core']['connect']> | undefined;

  constructor(private readonly cell: AssembledCell) {}

  attach(token: string): void {
    const { core } = this.cell;
    const identity = core.authenticate(token);
    core.admit(identity, undefined);
    this.connection = core.connect(identity, this);
  }

  send(frameOrText: string | Record<string, unknown>): void {
    if (typeof frameOrText === 'string') {
      if (!this.closed) this.frames.push(JSON.parse(frameOrText) as ServerFrame);
      return;
    }
    this.cell.core.receive(this.connection!, JSON.stringify(frameOrText));
  }

  bufferedBytes(): number {
    return 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.connection !== undefined) this.cell.core.disconnect(this.connection);
  }
}

async function memoryWorld(): Promise<World> {
  const network = new MemoryNetwork({ clock: CLOCK, random: new SeededRandom(11) });
  const keys = new PublicKeyRegistry();
  const keyRandom = new SeededRandom(12);
  const assemble = (cellId: string, merchant: string, bootstrap: readonly string[]): Promise<AssembledCell> =>
    assembleCell({
      cellId,
      tenants: [tenantOf(merchant)],
      limits: LimitsConfig.parse({}),
      clock: CLOCK,
      random: new SeededRandom(cellId.length),
      store: new MemoryStore(),
      logger: silentLogger,
      metrics: new MemoryMetrics(),
      devices: { open: async () => ({ ws: `ws://${cellId}.memory/v1/ws`, http: `http://${cellId}.memory` }), stopAccepting: () => undefined },
      mesh: {
        createTransport: async () => {
          const peer = `peer-${cellId}`;
          const seed = ed25519SeedFrom(keyRandom);
          keys.set(peer, ed25519PublicKeyOfSeed(seed));
          return { transport: network.createTransport(peer), signer: new Ed25519RecordSigner({ privateKey: seed, publicKeyOf: keys.publicKeyOf }) };
        },
        bootstrap,
      },
    });
  const c1 = await assemble('c1', 'm1', []);
  const c2 = await assemble('c2', 'm2', [memoryAddress('peer-c1')]);
  const worldCell = (cell: AssembledCell): WorldCell => ({
    cluster: cell.cluster,
    connect: async (token) => {
      const device = new MemoryDevice(cell);
      device.attach(token);
      return device;
    },
  });
  return {
    cells: { c1: worldCell(c1), c2: worldCell(c2) },
    stop: async () => {
      await c2.stop();
      await c1.stop();
    },
  };
}

/** A WebSocket device speaking docs/protocol.md. */
async function webSocketDevice(port: number, token: string): Promise<WorldDevice> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${encodeURIComponent(token)}`, 'cellmesh.v1');
  const frames: ServerFrame[] = [];
  socket.on('message', (data) => frames.push(JSON.parse(String(data)) as ServerFrame));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { frames, send: (frame) => socket.send(JSON.stringify(frame)), close: () => socket.close() };
}

async function realWorld(): Promise<World> {
  const root = await mkdtemp(join(tmpdir(), 'cellmesh-one-assembly-'));
  const start = async (cellId: string, merchant: string, bootstrap: readonly string[]) =>
    startCell({
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
  const c1 = await start('c1', 'm1', []);
  const c2 = await start('c2', 'm2', c1.mesh!.transport.addresses());
  const worldCell = (cell: typeof c1): WorldCell => ({ cluster: cell.mesh, connect: (token) => webSocketDevice(cell.port, token) });
  return {
    cells: { c1: worldCell(c1), c2: worldCell(c2) },
    stop: async () => {
      await c2.stop();
      await c1.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

const token = (user: string, merchant?: string): Promise<string> =>
  mintToken({
    secret: SECRET,
    tenant: TENANT,
    user,
    role: merchant === undefined ? 'customer' : 'agent',
    ...(merchant === undefined ? {} : { merchant }),
    device: 'd1',
    ttlSeconds: 3600,
    nowMs: CLOCK.now(),
  });

/** What the scenario's devices observed, without what differs by nature between runs (times, session ids). */
interface Observed {
  readonly [device: string]: readonly string[];
}

function observed(frames: readonly ServerFrame[]): string[] {
  const lines: string[] = [];
  for (const frame of frames) {
    if (frame.t === 'msg') lines.push(`msg ${frame.conv} #${frame.seq} ${frame.from}/${frame.role}/${frame.device} ${frame.cmid} "${frame.body}"`);
    else if (frame.t === 'sent') lines.push(`sent ${frame.conv} #${frame.seq} ${frame.cmid}`);
    else if (frame.t === 'receipt') lines.push(`receipt ${frame.conv} ${frame.user}/${frame.role} #${frame.seq}`);
    else if (frame.t === 'history') lines.push(`history ${frame.conv} ${frame.messages.map((message) => `#${message.seq}:${message.cmid}`).join(' ')} more=${frame.hasMore}`);
    else if (frame.t === 'error') lines.push(`error ${frame.code}`);
  }
  // Frames of different conversations may interleave differently; within one they are ordered.
  return lines.sort((a, b) => conversationOf(a).localeCompare(conversationOf(b)) || 0);
}

const conversationOf = (line: string): string => line.split(' ')[1] ?? '';

async function runScenario(world: World): Promise<Observed> {
  const { c1, c2 } = world.cells;
  // Each cell routes the other's merchant to it before anyone speaks.
  await eventually(() => c1.cluster!.mesh.homeCellOf(TENANT, 'm2') === 'c2' && c2.cluster!.mesh.homeCellOf(TENANT, 'm1') === 'c1', 'both cells to know both homes', 30_000);
  const agent1 = await c1.connect(await token('ann', 'm1'));
  const agent2 = await c2.connect(await token('bea', 'm2'));
  const alice = await c1.connect(await token('alice'));
  const devices = { agent1, agent2, alice };
  const has = (device: WorldDevice, predicate: (frame: ServerFrame) => boolean): boolean => device.frames.some(predicate);
  const sentCount = (): number => alice.frames.filter((frame) => frame.t === 'sent').length;
  try {
    for (const [conv, prefix] of [['m1:alice', 'in'], ['m2:alice', 'across']] as const) {
      for (let index = 1; index <= 3; index++) alice.send({ op: 'send', conv, cmid: `${prefix}-${index}`, body: `${prefix} ${index}` });
    }
    await eventually(() => sentCount() === 6, 'alice to get a durable ack for each of her six sends', 30_000);
    const heard = (device: WorldDevice, conv: string, seq: number) => () => has(device, (frame) => frame.t === 'msg' && frame.conv === conv && frame.seq === seq);
    await eventually(heard(agent1, 'm1:alice', 3), 'the in-cell agent to hear all three', 30_000);
    await eventually(heard(agent2, 'm2:alice', 3), 'the cross-cell agent to hear all three', 30_000);
    agent1.send({ op: 'send', conv: 'm1:alice', cmid: 'reply-1', body: 'hello from m1' });
    agent2.send({ op: 'send', conv: 'm2:alice', cmid: 'reply-2', body: 'hello from m2' });
    await eventually(() => heard(alice, 'm1:alice', 4)() && heard(alice, 'm2:alice', 4)(), 'alice to hear both replies', 30_000);
    for (const conv of ['m1:alice', 'm2:alice']) alice.send({ op: 'read', conv, seq: 4 });
    const receipted = (device: WorldDevice, conv: string) => () => has(device, (frame) => frame.t === 'receipt' && frame.conv === conv && frame.user === 'alice' && frame.seq === 4);
    await eventually(() => receipted(agent1, 'm1:alice')() && receipted(agent2, 'm2:alice')(), 'both agents to get alice\'s read receipt', 30_000);
    await eventually(() => receipted(alice, 'm1:alice')() && receipted(alice, 'm2:alice')(), 'alice to get her own receipts', 30_000);
    for (const conv of ['m1:alice', 'm2:alice']) alice.send({ op: 'history', id: `h-${conv}`, conv, limit: 10 });
    await eventually(() => alice.frames.filter((frame) => frame.t === 'history').length === 2, 'both histories', 30_000);
    return Object.fromEntries(Object.entries(devices).map(([name, device]) => [name, observed(device.frames)]));
  } finally {
    for (const device of Object.values(devices)) device.close();
  }
}

describe('one assembly for every world', () => {
  const worlds: World[] = [];
  afterEach(async () => {
    for (const world of worlds.splice(0)) await world.stop();
  });

  it('gives the same observable history on memory ports and on uWS, LevelDB and libp2p', async () => {
    const memory = await memoryWorld();
    worlds.push(memory);
    const inMemory = await runScenario(memory);
    const real = await realWorld();
    worlds.push(real);
    const inProcess = await runScenario(real);
    // The scenario ran: six sends, two replies, receipts, histories of four messages each.
    expect(inMemory.alice!.filter((line) => line.startsWith('sent'))).toHaveLength(6);
    expect(inMemory.alice!.filter((line) => line.startsWith('history'))).toEqual([
      'history m1:alice #1:in-1 #2:in-2 #3:in-3 #4:reply-1 more=false',
      'history m2:alice #1:across-1 #2:across-2 #3:across-3 #4:reply-2 more=false',
    ]);
    expect(inProcess).toEqual(inMemory);
  });
});
