import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LIBP2P_TRANSPORT_DEFAULTS, type Libp2pTransportInit } from './libp2p-settings.js';
import { createLibp2pTransport, type Libp2pMeshTransport } from './libp2p-transport.js';

/**
 * The private network under a connection flood, with real libp2p nodes on loopback: outsiders
 * without the cluster secret hold TCP connections open and say nothing, and cells must still get in.
 */

const CLUSTER_SECRET = 'private-network-test-secret-0123456789abcdef';
/** The join bound of the transport tests (TestNetworkDriver's connect budget). */
const JOIN_BOUND_MS = 5_000;
/** Between two dial attempts of a joining cell, as the mesh's connection keeper retries. */
const REDIAL_PAUSE_MS = 100;
/**
 * The outsider's address: another host, as far as the cell can tell (all of 127/8 is loopback).
 * From the cells' own address an outsider would also spend their per-host connection rate.
 */
const OUTSIDER_ADDRESS = '127.0.0.2';

/**
 * Silent TCP connections to one port, each reopened shortly after the far side drops it, until
 * stopped or until `maxOpens` connections were opened in all (a bound on the test's work).
 */
class SilentFlood {
  private readonly sockets = new Set<Socket>();
  private stopped = false;
  opened = 0;
  dropped = 0;

  constructor(
    private readonly port: number,
    width: number,
    private readonly reopenDelayMs: number,
    private readonly maxOpens: number,
  ) {
    for (let index = 0; index < width; index += 1) this.open();
  }

  /** Connections currently established. */
  get established(): number {
    let count = 0;
    for (const socket of this.sockets) if (socket.readyState === 'open') count += 1;
    return count;
  }

  stop(): void {
    this.stopped = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  private open(): void {
    if (this.stopped || this.opened >= this.maxOpens) return;
    this.opened += 1;
    const socket = connect({ host: '127.0.0.1', port: this.port, localAddress: OUTSIDER_ADDRESS });
    this.sockets.add(socket);
    socket.on('data', () => undefined); // read and ignore the cell's nonce; never write a byte
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (this.stopped) return;
      this.dropped += 1;
      setTimeout(() => this.open(), this.reopenDelayMs); // real-clock-ok: test
    });
  }
}

function portOf(transport: Libp2pMeshTransport): number {
  const match = /\/tcp\/(\d+)\//.exec(transport.addresses()[0] ?? '');
  if (match === null) throw new Error('no tcp address');
  return Number(match[1]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms)); // real-clock-ok: test

async function waitFor(condition: () => boolean, what: string, budgetMs: number): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > budgetMs) throw new Error(`timed out after ${budgetMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('the private network under a flood of silent connections', () => {
  let cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    const pending = cleanups.reverse();
    cleanups = [];
    for (const cleanup of pending) await cleanup();
  });

  async function startTransport(init: Partial<Libp2pTransportInit> = {}): Promise<Libp2pMeshTransport> {
    const transport = await createLibp2pTransport({ clusterSecret: CLUSTER_SECRET, ...init });
    await transport.start();
    cleanups.push(() => transport.stop());
    return transport;
  }

  /** Dials until connected, like a cell joining; resolves with the time it took. */
  async function join(joiner: Libp2pMeshTransport, target: Libp2pMeshTransport): Promise<number> {
    const started = performance.now();
    const address = target.addresses()[0]!;
    while (performance.now() - started < JOIN_BOUND_MS) {
      try {
        await joiner.dial(address);
        return performance.now() - started;
      } catch {
        await sleep(REDIAL_PAUSE_MS);
      }
    }
    throw new Error(`${joiner.self} did not get in within ${JOIN_BOUND_MS} ms`);
  }

  it('lets cells with the secret join while 50 silent sockets, reopened as they are dropped, fill the port', async () => {
    const cell = await startTransport();
    const flood = new SilentFlood(portOf(cell), 50, 10, 20_000);
    cleanups.push(() => flood.stop());
    // The flood has taken whatever the cell gives it: all 50 connected, the share full.
    await waitFor(() => flood.opened >= 50 && cell.unauthenticatedInbound().waiting > 0, 'the flood to reach the cell', JOIN_BOUND_MS);
    // In full swing: the cell evicts flood sockets and the outsider reopens them.
    await waitFor(() => flood.dropped > 0 && cell.unauthenticatedInbound().evicted > 0, 'the cell to evict flood sockets', JOIN_BOUND_MS);

    // Several cells join at once, each within the join bound, while the flood goes on.
    const joiners = await Promise.all(Array.from({ length: 4 }, () => startTransport()));
    const joinTimesMs = await Promise.all(joiners.map((joiner) => join(joiner, cell)));
    expect(joinTimesMs.every((ms) => ms < JOIN_BOUND_MS)).toBe(true);
    for (const joiner of joiners) {
      await waitFor(() => cell.connectedPeers().includes(joiner.self), 'the cell to see the joiner connected', JOIN_BOUND_MS);
    }

    // The outsider kept at it the whole time, filled its share (newer sockets evicted older
    // ones) and held no more than that share.
    expect(flood.dropped).toBeGreaterThan(0);
    expect(cell.unauthenticatedInbound().evicted).toBeGreaterThan(0);
    expect(cell.unauthenticatedInbound().waiting).toBeLessThanOrEqual(LIBP2P_TRANSPORT_DEFAULTS.maxUnauthenticatedInbound);
    expect(cell.connectedPeers()).toHaveLength(joiners.length);
  }, 30_000);

  it('drops a silent connection after the handshake deadline, and the oldest first when the share is full', async () => {
    const cell = await startTransport({ privateNetworkHandshakeTimeoutMs: 3_000, maxUnauthenticatedInbound: 3 });
    const port = portOf(cell);
    const closedAfterMs: number[] = [];
    const closedOrder: number[] = [];
    const started = performance.now();
    const sockets: Socket[] = [];
    for (let index = 0; index < 5; index += 1) {
      const socket = connect({ host: '127.0.0.1', port, localAddress: OUTSIDER_ADDRESS });
      socket.on('data', () => undefined);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        closedOrder.push(index);
        closedAfterMs.push(performance.now() - started);
      });
      sockets.push(socket);
      cleanups.push(() => void socket.destroy());
      // One at a time, so that "oldest" is well defined.
      await waitFor(() => cell.unauthenticatedInbound().waiting + closedOrder.length === index + 1, `socket ${index} to be taken in`, JOIN_BOUND_MS);
    }
    // The two oldest made room for the two newest at once; the three others held their slots.
    await waitFor(() => closedOrder.length >= 2, 'the two oldest to be evicted', JOIN_BOUND_MS);
    expect(closedOrder.slice(0, 2)).toEqual([0, 1]);
    expect(cell.unauthenticatedInbound()).toEqual({ waiting: 3, evicted: 2 });
    // Then the deadline ends the rest, although the sockets stay open on this side.
    await waitFor(() => closedOrder.length === 5, 'the deadline to close the rest', JOIN_BOUND_MS);
    expect(closedOrder.slice(2).sort()).toEqual([2, 3, 4]);
    expect(Math.min(...closedAfterMs.slice(2))).toBeGreaterThanOrEqual(2_000);
    expect(cell.unauthenticatedInbound().waiting).toBe(0);
  }, 20_000);

  it('accepts a dialler with any accepted secret, dials with its own secret only, and refuses every other', async () => {
    const [oldSecret, newSecret, otherSecret] = ['rotation-old-secret-0123456789abcdef', 'rotation-new-secret-0123456789abcdef', 'not-of-this-cluster-0123456789abcdef'];
    const rotating = await startTransport({ clusterSecret: newSecret, acceptClusterSecrets: [oldSecret] });
    const [oldCell, newCell, laterOldCell] = await Promise.all([
      startTransport({ clusterSecret: oldSecret }),
      startTransport({ clusterSecret: newSecret }),
      startTransport({ clusterSecret: oldSecret, dialTimeoutMs: 1_000 }),
    ]);
    const stranger = await startTransport({ clusterSecret: otherSecret, dialTimeoutMs: 1_000 });
    const echo = '/cellmesh/private-network-test/echo/1.0.0';
    rotating.handle(echo, async (from, request) => new TextEncoder().encode(`${from}:${new TextDecoder().decode(request)}`));
    const address = rotating.addresses()[0]!;

    // In: both secrets of the rotation, and a request crosses each connection both ways intact.
    for (const [cell, word] of [[oldCell!, 'old'], [newCell!, 'new']] as const) {
      expect(await cell.dial(address)).toBe(rotating.self);
      const answer = await cell.request(rotating.self, echo, new TextEncoder().encode(`hello with the ${word} secret`), { timeoutMs: 5_000 });
      expect(new TextDecoder().decode(answer)).toBe(`${cell.self}:hello with the ${word} secret`);
    }
    await expect(stranger.dial(address)).rejects.toMatchObject({ code: 'PEER_UNREACHABLE' });

    // Out: the rotating cell dials with its current secret, which a cell knowing only the old one refuses.
    await expect(rotating.dial(laterOldCell!.addresses()[0]!)).rejects.toMatchObject({ code: 'PEER_UNREACHABLE' });
    expect(rotating.connectedPeers().sort()).toEqual([oldCell!.self, newCell!.self].sort());
  }, 20_000);
});
