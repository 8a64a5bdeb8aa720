import { afterEach, describe, expect, it } from 'vitest';
import { MemoryNetwork, type MemoryTransport } from './memory-network.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import { silentLogger } from '../platform/logger.js';
import type { MoveHost } from '../cell/move-host.js';
import { HANDOVER_PROTOCOL, MerchantMover, type MerchantClaims } from './merchant-move.js';
import type { ClusterPort } from '../cell/messaging/cluster-port.js';
import { MemoryStore } from '../platform/store/memory-store.js';
import { TrackedStore, whenStoresIdle } from '../testing/tracked-store.js';
import { AttachmentStore, CHUNK_BYTES } from '../cell/attachments/index.js';

const TENANT = 'mall';
const MERCHANT = 'acme';
const STEP_MS = 50;

/**
 * One side of a move: a real MerchantMover and store on a memory network, with the core and the
 * claims reduced to what a move touches. `homeSeen` is this cell's directory view of the home,
 * set by the test (gossip is not part of this test).
 */
class MoveSide {
  readonly store = new TrackedStore(new MemoryStore());
  readonly hosted = new Set<string>();
  readonly epochs = new Map<string, number>();
  homeSeen: string;
  fences = 0;
  /** Called while serving a commit, between hosting and the claim. */
  onHost: () => void = () => {};
  /** Makes the durable claim fail, as a disk refusing the write would. */
  failClaims = false;
  /** Requests to drop (as if lost on the way), by handover stage. */
  readonly dropStages = new Set<string>();
  readonly mover: MerchantMover;

  constructor(
    readonly cellId: string,
    readonly transport: MemoryTransport,
    readonly clock: ManualClock,
    home: string,
  ) {
    this.homeSeen = home;
    const host: MoveHost = {
      hosts: (_tenant, merchant) => this.hosted.has(merchant),
      fence: () => {
        this.fences++;
        return () => this.fences--;
      },
      whenMerchantIdle: async () => {},
      cursorsFlushed: async () => {},
      hostMerchant: (_tenant, merchant) => {
        this.hosted.add(merchant);
        this.onHost();
      },
      releaseMerchant: (_tenant, merchant) => this.hosted.delete(merchant),
    };
    const claims: MerchantClaims = {
      epochOf: (_tenant, merchant) => this.epochs.get(merchant),
      handoverProof: (_tenant, _merchant, to, epoch) => ({ kind: 'handover', fromCell: cellId, fromPeer: `peer-${cellId}`, fromEpoch: epoch - 1, signature: Buffer.from(`signed-to-${to}`).toString('base64') }),
      claim: async (_tenant, merchant, epoch, _proof, whenDurable) => {
        if (this.failClaims) throw new Error('the disk refused the write');
        this.epochs.set(merchant, epoch);
        whenDurable();
      },
      release: async (_tenant, merchant) => void this.epochs.delete(merchant),
      homeOf: () => this.homeSeen,
    };
    const cluster: Pick<ClusterPort, 'request' | 'handle'> = {
      request: (cell, protocol, data, options) => {
        const stage = (JSON.parse(new TextDecoder().decode(data)) as { stage: string }).stage;
        if (this.dropStages.has(stage)) {
          // Lost on the way: the caller hears nothing until its time-out.
          return new Promise((_resolve, reject) => clock.setTimer(options.timeoutMs, () => reject(Object.assign(new Error('timed out'), { code: 'REQUEST_TIMEOUT' }))));
        }
        return transport.request(`peer-${cell}`, protocol, data, options);
      },
      handle: (protocol, handler) => transport.handle(protocol, (peer, data) => handler(peer.slice('peer-'.length), data)),
    };
    this.mover = new MerchantMover({ cellId, store: this.store, cluster, clock, logger: silentLogger, host, claims });
  }
}

describe('moving a merchant: the outcome of the commit', () => {
  const opened: TrackedStore[] = [];
  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
  });

  async function twoCells(): Promise<{ clock: ManualClock; network: MemoryNetwork; source: MoveSide; target: MoveSide; run: (ms: number) => Promise<void> }> {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(5), latencyMs: () => 2 });
    const transports = [network.createTransport('peer-cell-a'), network.createTransport('peer-cell-b')];
    for (const transport of transports) await transport.start();
    await transports[0]!.dial(transports[1]!.addresses()[0]!);
    const source = new MoveSide('cell-a', transports[0]!, clock, 'cell-a');
    const target = new MoveSide('cell-b', transports[1]!, clock, 'cell-a');
    for (const side of [source, target]) {
      await side.store.open();
      opened.push(side.store);
    }
    source.hosted.add(MERCHANT);
    source.epochs.set(MERCHANT, 0);
    await source.store.write([{ type: 'put', key: `m/${TENANT}/${MERCHANT}:bob/00000001`, value: '{"seq":1}' }]);
    const run = async (ms: number): Promise<void> => {
      for (let elapsed = 0; elapsed < ms; elapsed += STEP_MS) {
        clock.advance(STEP_MS);
        await whenStoresIdle([source.store, target.store]);
      }
    };
    return { clock, network, source, target, run };
  }

  it('fails at once, without holding up the merchant, when the target cannot be reached', async () => {
    const { network, source, target, run } = await twoCells();
    network.blockOneWay(['peer-cell-a'], ['peer-cell-b']);
    const outcome = source.mover.move(TENANT, MERCHANT, 'cell-b').then(
      () => 'moved',
      (error: { code: string }) => error.code,
    );
    let maxFences = 0;
    for (let second = 0; second < 12; second++) {
      await run(1_000);
      maxFences = Math.max(maxFences, source.fences);
    }
    expect(await outcome).toBe('MOVE_FAILED');
    expect(maxFences).toBe(0);
    expect([...source.hosted]).toEqual([MERCHANT]);
    expect(target.hosted.size).toBe(0);
  });

  it('keeps the merchant fenced while the commit went unanswered, and learns from an abort that the target committed', async () => {
    const { network, source, target, run } = await twoCells();
    // The commit arrives, but the way back is cut right then: its answer, and the answers to the aborts, are lost.
    target.onHost = () => network.blockOneWay(['peer-cell-b'], ['peer-cell-a']);
    let settled = false;
    const moved = source.mover.move(TENANT, MERCHANT, 'cell-b').finally(() => (settled = true));
    await run(8_000);
    expect(settled).toBe(false);
    expect(source.fences).toBe(1);
    expect([...target.hosted]).toEqual([MERCHANT]);
    network.heal();
    await run(6_000);
    // The abort was refused as committed; the directory then routes the merchant to the target.
    source.homeSeen = 'cell-b';
    await run(500);
    expect(settled).toBe(true);
    expect((await moved).epoch).toBe(1);
    expect(source.hosted.size).toBe(0);
    expect(source.fences).toBe(0);
    expect(target.epochs.get(MERCHANT)).toBe(1);
  });

  it('aborts a commit that was lost: the merchant stays, and the late commit is refused', async () => {
    const { source, target, run } = await twoCells();
    source.dropStages.add('commit');
    const outcome = source.mover.move(TENANT, MERCHANT, 'cell-b').then(
      () => 'moved',
      (error: { code: string }) => error.code,
    );
    await run(5_000);
    expect(await outcome).toBe('MOVE_FAILED');
    expect(source.fences).toBe(0);
    expect([...source.hosted]).toEqual([MERCHANT]);
    // The commit shows up after all (a retransmission): the target promised not to take it.
    const late = source.transport.request('peer-cell-b', HANDOVER_PROTOCOL, new TextEncoder().encode(JSON.stringify({ v: 1, stage: 'commit', tenant: TENANT, merchant: MERCHANT, epoch: 1 })), { timeoutMs: 1_000 });
    await run(100);
    expect(JSON.parse(new TextDecoder().decode(await late))).toMatchObject({ ok: false, code: 'ABORTED' });
    expect(target.hosted.size).toBe(0);
  });

  it('does not host a merchant whose claim it failed to write, so the abort leaves one home', async () => {
    const { source, target, run } = await twoCells();
    target.failClaims = true;
    const outcome = source.mover.move(TENANT, MERCHANT, 'cell-b').then(
      () => 'moved',
      (error: { code: string }) => error.code,
    );
    await run(5_000);
    expect(await outcome).toBe('MOVE_FAILED');
    expect(target.hosted.size).toBe(0);
    expect(target.epochs.has(MERCHANT)).toBe(false);
    expect([...source.hosted]).toEqual([MERCHANT]);
    expect(source.fences).toBe(0);
  });

  it('answers a repeated commit as done and refuses copies after it', async () => {
    const { source, target, run } = await twoCells();
    const moved = source.mover.move(TENANT, MERCHANT, 'cell-b');
    for (let step = 0; step < 100 && !target.hosted.has(MERCHANT); step++) await run(STEP_MS);
    // The target's claim reaches both directories.
    source.homeSeen = 'cell-b';
    target.homeSeen = 'cell-b';
    await run(200);
    expect((await moved).to).toBe('cell-b');
    const ask = async (body: object): Promise<unknown> => {
      const answer = source.transport.request('peer-cell-b', HANDOVER_PROTOCOL, new TextEncoder().encode(JSON.stringify(body)), { timeoutMs: 1_000 });
      await run(100);
      return JSON.parse(new TextDecoder().decode(await answer));
    };
    expect(await ask({ v: 1, stage: 'commit', tenant: TENANT, merchant: MERCHANT, epoch: 1 })).toEqual({ ok: true });
    expect(await ask({ v: 1, stage: 'copy', tenant: TENANT, merchant: MERCHANT, entries: [[`m/${TENANT}/${MERCHANT}:bob/00000001`, 'stale']] })).toMatchObject({ ok: false, code: 'NOT_HOME' });
    expect(await target.store.get(`m/${TENANT}/${MERCHANT}:bob/00000001`)).toBe('{"seq":1}');
  });

  it('carries the attachments of its conversations, and the target takes content only for those', async () => {
    const { clock, source, target, run } = await twoCells();
    const attachments = new AttachmentStore(source.store, clock);
    const shared = Buffer.alloc(CHUNK_BYTES + 1, 's');
    const sharedId = await attachments.put(TENANT, `${MERCHANT}:bob`, shared, { name: 'photo.png', type: 'image/png', from: 'c:bob' });
    await attachments.put(TENANT, 'other:bob', shared, { name: 'same.png', type: 'image/png', from: 'c:bob' });
    const othersOnlyId = await attachments.put(TENANT, 'other:bob', Buffer.from('not acme'), { name: 'x.txt', type: 'text/plain', from: 'c:bob' });

    const moved = source.mover.move(TENANT, MERCHANT, 'cell-b');
    for (let step = 0; step < 100 && !target.hosted.has(MERCHANT); step++) await run(STEP_MS);
    source.homeSeen = 'cell-b';
    target.homeSeen = 'cell-b';
    await run(200);
    await moved;

    const read = await new AttachmentStore(target.store, clock).read(TENANT, `${MERCHANT}:bob`, sharedId);
    expect(read.bytes.equals(shared)).toBe(true);
    const copied = (await target.store.range({ gte: 'f', lt: 'g', limit: 100 })).map(([key]) => key);
    // The other merchant's reference (and its index entry) of the shared content stays behind, and so does content only it references.
    expect(copied.filter((key) => key.includes('other:'))).toEqual([]);
    expect(copied.filter((key) => key.includes(othersOnlyId))).toEqual([]);

    // Content that no conversation of the merchant references is refused, even from the merchant's home.
    const refused = source.transport.request(
      'peer-cell-b',
      HANDOVER_PROTOCOL,
      new TextEncoder().encode(JSON.stringify({ v: 1, stage: 'copy', tenant: TENANT, merchant: 'newcomer', entries: [[`fb/${TENANT}/${othersOnlyId}`, '{}']] })),
      { timeoutMs: 1_000 },
    );
    target.homeSeen = 'cell-a';
    await run(100);
    expect(JSON.parse(new TextDecoder().decode(await refused))).toMatchObject({ ok: false, code: 'BAD_REQUEST' });
  });
});
