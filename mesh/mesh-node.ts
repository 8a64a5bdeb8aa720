import { join } from 'node:path';
import type { Clock } from '../platform/clock.js';
import type { Random } from '../platform/random.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics } from '../platform/metrics.js';
import type { Store } from '../platform/store/store.js';
import { CellMesh } from './cell-mesh.js';
import type { CellRecordContent, HandedOver, MerchantClaim } from './cell-record.js';
import { createLibp2pTransport, loadOrCreatePeerKey, type Libp2pMeshTransport } from './libp2p-transport.js';
import { libp2pPublicKeyOf } from './libp2p-record-keys.js';
import { publishLoadPeriodically, type LoadSource } from './load-publisher.js';
import { LocationService } from './location.js';
import { MEMBERSHIP_PRESETS, membershipOptions, type MembershipOptions } from './membership-config.js';
import { Inbox } from './inbox.js';
import { meshMetricsOn } from './mesh-metrics.js';
import { Outbox } from './outbox.js';
import { Ed25519RecordSigner } from './record-signer.js';

export interface MeshNodeSettings {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly bootstrap: readonly string[];
  /** Dialled with and accepted. */
  readonly clusterSecret: string;
  /** Also accepted from dialling cells during a rotation (docs/operations.md). */
  readonly acceptClusterSecrets: readonly string[];
  /** Admission of inbound connections that have not proven the secret; unset fields keep the transport's defaults. */
  readonly admission: { readonly handshakeTimeoutMs?: number | undefined; readonly maxUnauthenticatedInbound?: number | undefined };
  /** Where the libp2p key lives; `<store directory>/mesh-peer.key` when the cell has one. */
  readonly keyFile: string | undefined;
  readonly maxDevices: number;
  /**
   * Largest client frame the cell accepts; a relayed send carries one, so outbox entries and
   * batches must hold it with room for the envelope.
   */
  readonly maxFrameBytes: number;
  /** Overrides of the LAN preset (membership-config.ts), by option name. */
  readonly timings: Readonly<Record<string, number>>;
}

export interface MeshNodeInit {
  readonly cellId: string;
  readonly settings: MeshNodeSettings;
  /** The cell's store directory, for the default key file; undefined for a memory store. */
  readonly storeDirectory: string | undefined;
  readonly store: Store;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly endpoints: { readonly ws: string; readonly http: string };
  readonly tenants: readonly string[];
  readonly merchants: readonly MerchantClaim[];
  /** Merchants this cell handed to other cells (cell-record.ts, HandedOverSchema). */
  readonly handedOver: readonly HandedOver[];
  /** Operator public keys whose placements this cell accepts (`mesh.operatorKeys`). */
  readonly operatorKeys: readonly string[];
  /** Users of `tenant` among `userIds` with a device on this cell (answers location queries). */
  readonly localUsers: (tenant: string, userIds: readonly string[]) => readonly string[];
  /** The cell's load, gossiped in its record when it changed noticeably (the first record says zero). */
  readonly load: LoadSource;
}

/**
 * A cell's node of the mesh, as production runs it: libp2p, the membership (CellMesh), user
 * location, and the outbox and inbox of cross-cell forwarding, all on one transport.
 */
export interface MeshNode {
  readonly mesh: CellMesh;
  readonly transport: Libp2pMeshTransport;
  readonly location: LocationService;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  /** Leaves gracefully: 'leaving' is gossiped, `drain` runs, 'left' is gossiped, then everything stops. */
  leave(drain: () => Promise<void>): Promise<void>;
  /** Stops without telling the cluster (it will detect the absence). Idempotent. */
  stop(): Promise<void>;
}

/** Starts the mesh node of a cell; on failure everything started so far is stopped again. */
export async function startMeshNode(init: MeshNodeInit): Promise<MeshNode> {
  const { settings, logger } = init;
  const privateKey = await loadOrCreatePeerKey(keyFileOf(init));
  const transport = await createLibp2pTransport({
    clusterSecret: settings.clusterSecret,
    acceptClusterSecrets: settings.acceptClusterSecrets,
    privateNetworkHandshakeTimeoutMs: settings.admission.handshakeTimeoutMs,
    maxUnauthenticatedInbound: settings.admission.maxUnauthenticatedInbound,
    privateKey,
    listenHost: settings.listenHost,
    listenPort: settings.listenPort,
    logger,
  });
  const options = membershipTimings(settings.timings);
  await transport.start();
  const stopped: Array<() => Promise<void> | void> = [() => transport.stop()];
  const unwind = async (): Promise<void> => {
    for (const step of stopped.reverse()) await Promise.resolve(step()).catch(() => undefined);
  };
  try {
    const mesh = new CellMesh({
      cellId: init.cellId,
      transport,
      clock: init.clock,
      random: init.random,
      store: init.store,
      signer: new Ed25519RecordSigner({ privateKey: privateKey.raw, publicKeyOf: libp2pPublicKeyOf }),
      record: initialRecord(init, transport.addresses()),
      operatorKeys: init.operatorKeys,
      bootstrap: settings.bootstrap,
      options,
      metrics: meshMetricsOn(init.metrics),
      logger,
    });
    const cellOfPeer = (peer: string): string | undefined => mesh.directory.cellOfPeer(peer);
    const resolvePeer = (cellId: string): string | undefined => mesh.peerOf(cellId);
    const location = new LocationService({
      transport,
      clock: init.clock,
      random: init.random,
      cellId: init.cellId,
      cellOfPeer,
      localUsers: init.localUsers,
      metrics: init.metrics,
    });
    const maxEntryBytes = 2 * settings.maxFrameBytes;
    const outbox = new Outbox(
      { store: init.store, transport, clock: init.clock, random: init.random, cellId: init.cellId, resolvePeer, metrics: init.metrics },
      { maxEntryBytes, maxBatchBytes: Math.max(256 * 1024, 4 * maxEntryBytes) },
    );
    const inbox = new Inbox({ store: init.store, transport, cellOfPeer, metrics: init.metrics });

    // Requests (outbox, handover, history) go to cells this one may not be connected to yet:
    // libp2p can dial them only if it knows their addresses, which the directory has.
    const stopAddressing = mesh.directory.onChange((_cellId, _before, after) => {
      if (after !== undefined && after.record.peerId !== transport.self) transport.addPeerAddresses(after.record.peerId, after.record.endpoints.p2p);
    });
    stopped.push(stopAddressing);
    await mesh.start();
    stopped.push(() => mesh.stop());
    location.start();
    stopped.push(() => location.stop());
    await outbox.start();
    stopped.push(() => outbox.stop());
    await inbox.start();
    stopped.push(() => inbox.stop());
    // A cell coming back (after a partition or a restart) gets its waiting entries at once,
    // not after the outbox's backoff.
    const stopNudging = mesh.onPeerConnected((peer) => {
      const cellId = cellOfPeer(peer);
      if (cellId !== undefined) outbox.nudge(cellId);
    });
    stopped.push(stopNudging);
    const loadTimer = publishLoadPeriodically(mesh, init.clock, init.load, (error) => logger.warn({ err: error }, 'publishing the load failed'));
    stopped.push(() => loadTimer.cancel());

    let ending: Promise<void> | undefined;
    const end = (leaveFirst: ((drain: () => Promise<void>) => Promise<void>) | undefined, drain: () => Promise<void>): Promise<void> => {
      ending ??= (async () => {
        loadTimer.cancel();
        if (leaveFirst !== undefined) {
          await leaveFirst(drain).catch((error: unknown) => logger.warn({ err: error }, 'leaving the mesh gracefully failed; stopping anyway'));
        }
        await unwind();
      })();
      return ending;
    };
    return {
      mesh,
      transport,
      location,
      outbox,
      inbox,
      leave: (drain) => end((run) => mesh.leave({ drain: run }), drain),
      stop: () => end(undefined, async () => {}),
    };
  } catch (error) {
    await unwind();
    throw error;
  }
}

/** The configured timing overrides, checked by name and value before anything starts. */
function membershipTimings(timings: Readonly<Record<string, number>>): MembershipOptions {
  const known = Object.keys(MEMBERSHIP_PRESETS.lan);
  const unknown = Object.keys(timings).filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new RangeError(`unknown mesh.timings option(s) ${unknown.join(', ')}; known: ${known.join(', ')}`);
  return membershipOptions(timings as Partial<MembershipOptions>);
}

function keyFileOf(init: MeshNodeInit): string {
  if (init.settings.keyFile !== undefined) return init.settings.keyFile;
  if (init.storeDirectory === undefined) {
    throw new Error('mesh.keyFile is required when the store has no directory (memory store): the key is the cell\'s identity in the cluster');
  }
  return join(init.storeDirectory, 'mesh-peer.key');
}

function initialRecord(init: MeshNodeInit, p2p: readonly string[]): CellRecordContent {
  return {
    endpoints: { ws: init.endpoints.ws, http: init.endpoints.http, p2p: [...p2p] },
    tenants: [...init.tenants],
    merchants: [...init.merchants],
    handedOver: [...init.handedOver],
    load: { devices: 0, messagesPerSecond: 0 },
    capacity: { maxDevices: init.settings.maxDevices },
  };
}

