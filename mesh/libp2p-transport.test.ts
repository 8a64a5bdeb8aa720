import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { deriveNetworkKey, type Libp2pTransportInit } from './libp2p-settings.js';
import { createLibp2pTransport, type Libp2pMeshTransport } from './libp2p-transport.js';
import { loadOrCreatePeerKey } from './peer-key-file.js';
import {
  bytes,
  describeMeshTransportCompliance,
  inbox,
  text,
  TestNetworkDriver,
  type MeshTransportTestNetwork,
} from '../testing/transport-compliance.js';

const CLUSTER_SECRET = 'compliance-cluster-secret-0123456789abcdef';
const OTHER_SECRET = 'another-cluster-entirely-0123456789abcdef';
const TOPIC = 'cellmesh/libp2p-test';
const ECHO = '/cellmesh/libp2p-test/echo/1.0.0';

async function startTransports(count: number, init: Partial<Libp2pTransportInit> = {}): Promise<Libp2pMeshTransport[]> {
  const transports = await Promise.all(
    Array.from({ length: count }, () => createLibp2pTransport({ clusterSecret: CLUSTER_SECRET, ...init })),
  );
  await Promise.all(transports.map((transport) => transport.start()));
  return transports;
}

function networkOf(transports: readonly Libp2pMeshTransport[]): MeshTransportTestNetwork {
  return {
    transports,
    teardown: async () => {
      await Promise.all(transports.map((transport) => transport.stop()));
    },
  };
}

describeMeshTransportCompliance('libp2p on 127.0.0.1', async (count) => networkOf(await startTransports(count)));

describe('libp2p transport', () => {
  let cleanups: (() => Promise<void>)[] = [];

  afterEach(async () => {
    const pending = cleanups;
    cleanups = [];
    await Promise.all(pending.map((cleanup) => cleanup()));
  });

  async function open(transports: Libp2pMeshTransport[]): Promise<TestNetworkDriver> {
    const network = networkOf(transports);
    cleanups.push(network.teardown);
    return new TestNetworkDriver(network, { deliveryBudgetMs: 10_000, connectBudgetMs: 5_000 });
  }

  async function temporaryFolder(): Promise<string> {
    const folder = await mkdtemp(join(tmpdir(), 'cellmesh-peer-key-'));
    cleanups.push(() => rm(folder, { recursive: true, force: true }));
    return folder;
  }

  it('listens on 127.0.0.1 by default and advertises addresses ending in its peer id', async () => {
    const [node] = await startTransports(1);
    await open([node!]);
    const addresses = node!.addresses();
    expect(addresses.length).toBeGreaterThan(0);
    for (const address of addresses) {
      expect(address).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//);
      expect(address.endsWith(`/p2p/${node!.self}`)).toBe(true);
    }
  });

  it('refuses a node with another cluster secret: the dial rejects and no message crosses', async () => {
    // The other side refuses a wrong secret once the first bytes arrive; a short dial timeout bounds a regression.
    const [member, otherMember] = await startTransports(2, { dialTimeoutMs: 1_000 });
    const [stranger] = await startTransports(1, { clusterSecret: OTHER_SECRET, dialTimeoutMs: 1_000 });
    const network = await open([member!, otherMember!, stranger!]);
    const memberBox = inbox();
    const strangerBox = inbox();
    member!.subscribe(TOPIC, memberBox.handler);
    otherMember!.subscribe(TOPIC, inbox().handler);
    stranger!.subscribe(TOPIC, strangerBox.handler);
    member!.handle(ECHO, async (_from, request) => request);

    const dialIn = await network.failureOf(stranger!.dial(member!.addresses()[0]!), 'the stranger dialling a member');
    expect(dialIn.code).toBe('PEER_UNREACHABLE');
    const dialOut = await network.failureOf(member!.dial(stranger!.addresses()[0]!), 'a member dialling the stranger');
    expect(dialOut.code).toBe('PEER_UNREACHABLE');
    stranger!.addPeerAddresses(member!.self, member!.addresses());
    const request = await network.failureOf(
      stranger!.request(member!.self, ECHO, bytes('let me in'), { timeoutMs: 3_000 }),
      'a request from the stranger',
    );
    expect(request.code).toBe('PEER_UNREACHABLE');

    // Members still talk to each other: the stranger's traffic would have arrived by now.
    await network.link(0, 1);
    await network.publishUntil(otherMember!, TOPIC, (round) => [`members-${round}`], () => memberBox.messages.length > 0, 'a member hears a member');
    await network.settle(stranger!.publish(TOPIC, bytes('from the stranger')), 'the stranger publishing');
    await network.publishUntil(otherMember!, TOPIC, (round) => [`after-${round}`], () => memberBox.texts().some((t) => t.startsWith('after-')), 'a later member message');
    expect(memberBox.messages.every((message) => message.from === otherMember!.self)).toBe(true);
    expect(strangerBox.messages).toEqual([]);
    expect(member!.connectedPeers()).not.toContain(stranger!.self);
    expect(stranger!.connectedPeers()).toEqual([]);
  });

  it('derives the same network key from the same secret, a different one otherwise, and refuses short secrets', () => {
    const hex = (key: Uint8Array): string => Buffer.from(key).toString('hex');
    const key = hex(deriveNetworkKey(CLUSTER_SECRET));
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(hex(deriveNetworkKey(bytes(CLUSTER_SECRET)))).toBe(key);
    expect(hex(deriveNetworkKey(OTHER_SECRET))).not.toBe(key);
    expect(() => deriveNetworkKey('too-short')).toThrow(RangeError);
  });

  it('keeps the peer id across restarts when the key file is reused', async () => {
    const folder = await temporaryFolder();
    const keyPath = join(folder, 'keys', 'peer.key');
    const firstKey = await loadOrCreatePeerKey(keyPath);
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
    expect(firstKey.type).toBe('Ed25519');

    const [first] = await startTransports(1, { privateKey: firstKey });
    const firstId = first!.self;
    await first!.stop();

    const [second] = await startTransports(1, { privateKey: await loadOrCreatePeerKey(keyPath) });
    await open([second!]);
    expect(second!.self).toBe(firstId);
    expect(second!.addresses()[0]!.endsWith(`/p2p/${firstId}`)).toBe(true);

    const otherKey = await loadOrCreatePeerKey(join(folder, 'other.key'));
    expect(otherKey.equals(firstKey)).toBe(false);
  });

  it('refuses a key file that is not a libp2p key instead of replacing it', async () => {
    const keyPath = join(await temporaryFolder(), 'peer.key');
    await writeFile(keyPath, 'not a key', { mode: 0o600 });
    await expect(loadOrCreatePeerKey(keyPath)).rejects.toThrow(/not a libp2p private key/);
  });

  it('cuts publish and request while peers are blocked, and restores both after unblock and redial', async () => {
    const [a, b] = await startTransports(2);
    const network = await open([a!, b!]);
    await network.link(0, 1);
    const boxB = inbox();
    b!.subscribe(TOPIC, boxB.handler);
    a!.subscribe(TOPIC, inbox().handler);
    b!.handle(ECHO, async (_from, request) => request);
    a!.handle(ECHO, async (_from, request) => request);
    const echo = (payload: string) => a!.request(b!.self, ECHO, bytes(payload), { timeoutMs: 2_000 });
    await network.publishUntil(a!, TOPIC, (round) => [`before-${round}`], () => boxB.messages.length > 0, 'B hears A before the partition');
    expect(text(await network.settle(echo('before'), 'a request before the partition'))).toBe('before');

    await a!.blockPeers([b!.self]);
    await network.waitFor(() => !a!.connectedPeers().includes(b!.self) && !b!.connectedPeers().includes(a!.self), 'the connection to close');

    await network.settle(a!.publish(TOPIC, bytes('during')), 'publishing during the partition');
    expect((await network.failureOf(echo('during'), 'a request across the partition')).code).toBe('PEER_UNREACHABLE');
    // The block is A's: B completes its half of the handshake before A's gater refuses it, so B's
    // redial may resolve for an instant, but the connection never lasts and A never accepts it.
    await b!.dial(a!.addresses()[0]!).catch(() => undefined);
    await network.waitFor(() => !b!.connectedPeers().includes(a!.self), 'the redial from B to be closed by A');
    const backwards = b!.request(a!.self, ECHO, bytes('from B'), { timeoutMs: 2_000 });
    expect((await network.failureOf(backwards, 'a request from B across the partition')).code).toBe('PEER_UNREACHABLE');
    expect(a!.connectedPeers()).toEqual([]);

    a!.unblockPeers([b!.self]);
    await network.link(1, 0);
    expect(text(await network.settle(echo('after'), 'a request after the partition'))).toBe('after');
    await network.publishUntil(a!, TOPIC, (round) => [`after-${round}`], () => boxB.texts().some((t) => t.startsWith('after-')), 'B hears A after the partition');
    // Absence needs a later event rather than a window of time: B hears A's messages in the order
    // A sends them, so once a message A published after the heal has arrived, "during" would have
    // arrived before it had it crossed the cut (or been queued for B until the heal).
    expect(boxB.texts()).not.toContain('during');
  });

  it('reports a too-large request as a caller error and the handler error message to the caller', async () => {
    const [a, b] = await startTransports(2, { maxRequestBytes: 1_024 });
    const network = await open([a!, b!]);
    await network.link(0, 1);
    b!.handle(ECHO, async () => {
      throw new Error('quota exceeded for merchant 42');
    });
    await expect(a!.request(b!.self, ECHO, new Uint8Array(2_048), { timeoutMs: 2_000 })).rejects.toThrow(RangeError);
    const failure = await network.failureOf(a!.request(b!.self, ECHO, bytes('x'), { timeoutMs: 2_000 }), 'a failing handler');
    expect(failure.code).toBe('REMOTE_HANDLER_FAILED');
    expect(failure.message).toContain('quota exceeded for merchant 42');
  });
});
