import { SystemClock, type Clock } from '../platform/clock.js';
import { SystemRandom, type Random } from '../platform/random.js';
import { createClusterPort } from '../mesh/cluster-port-adapter.js';
import { startMeshNode, type MeshNode } from '../mesh/mesh-node.js';
import { routeToMerchant, summarizeDirectory } from '../router/route.js';
import { AccessServer, type ClusterApi } from '../cell/access/uws-server.js';
import { CellCore } from '../cell/cell-core.js';
import type { CellConfig } from './config.js';
import type { Logger } from '../platform/logger.js';
import { MerchantClaimsStore, meshMerchantClaims, recordClaims, tenantsHosting, type HostedMerchant } from '../mesh/merchant-claims.js';
import { MerchantMover } from '../mesh/merchant-move.js';
import { KEY_LAYOUT_VERSION, upgradeKeyLayout } from '../cell/messaging/key-layout.js';
import { placeMerchant, type PlacementComponents } from '../mesh/merchant-placement.js';
import { CellMetrics } from '../cell/metrics.js';
import type { Metrics } from '../platform/metrics.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { CellStartError, listenStartError } from './start-errors.js';
import { LevelStore, MemoryStore, isLockedByAnotherProcess, type Store } from '../platform/store/index.js';

export interface StartCellOptions {
  config: CellConfig;
  logger: Logger;
  /** Defaults to the system clock; tests may pass a virtual one. */
  clock?: Clock;
  random?: Random;
  /** Defaults to the store the config names. */
  store?: Store;
  /** Adds process metrics (CPU, memory, event loop) to /v1/metrics; on for a real process. */
  processMetrics?: boolean;
}

/** A cell listening for devices. */
export interface RunningCell {
  readonly cellId: string;
  readonly port: number;
  readonly core: CellCore;
  readonly metrics: CellMetrics;
  /** The cell's node of the mesh; undefined for a standalone cell. */
  readonly mesh: MeshNode | undefined;
  /**
   * Graceful stop: stop accepting, let writes under way finish and be acked, close devices
   * with "going away", close the store. Idempotent.
   */
  stop(): Promise<void>;
}

function storeFromConfig(config: CellConfig): Store {
  return config.store.kind === 'level'
    ? new LevelStore({ directory: config.store.directory, sync: config.store.sync, minFlushIntervalMs: config.store.minFlushIntervalMs })
    : new MemoryStore();
}

/**
 * Opens the store; a LevelDB directory that cannot be opened (held by another cell, not
 * writable) is a CellStartError naming store.directory, not a stack trace.
 */
async function openStore(config: CellConfig, store: Store): Promise<void> {
  try {
    await store.open();
  } catch (error) {
    if (config.store.kind !== 'level') throw error;
    const { directory } = config.store;
    if (isLockedByAnotherProcess(error)) {
      throw new CellStartError('store.directory', `${directory} is locked by another process (another cell uses this directory)`, { cause: error });
    }
    throw new CellStartError('store.directory', `cannot open the LevelDB store at ${directory}: ${deepestMessage(error)}`, { cause: error });
  }
}

/** The message of the innermost cause: the OS's or LevelDB's own words. */
function deepestMessage(error: unknown): string {
  let current = error;
  for (let depth = 0; depth < 8 && current instanceof Error && current.cause instanceof Error; depth++) current = current.cause;
  return current instanceof Error ? current.message : String(current);
}

/** Production wiring of one cell: uWS access, the configured store, the system clock. */
export async function startCell(options: StartCellOptions): Promise<RunningCell> {
  const { config, logger } = options;
  const store = options.store ?? storeFromConfig(config);
  const metricsPort = new PromMetrics();
  const metrics = new CellMetrics(metricsPort);
  if (options.processMetrics === true) metricsPort.collectProcessMetrics();
  await openStore(config, store);
  try {
    const rewritten = await upgradeKeyLayout(store);
    if (rewritten > 0) logger.info({ keys: rewritten, layout: KEY_LAYOUT_VERSION }, 'rewrote store keys of an earlier layout (users named by their whole identity)');
  } catch (error) {
    await store.close();
    throw error;
  }
  const clock = options.clock ?? new SystemClock();
  const random = options.random ?? new SystemRandom();
  // In a cluster, moves may have changed what this cell hosts since its config was written.
  const claims = config.mesh === undefined ? undefined : new MerchantClaimsStore(store);
  await claims?.load();
  const hosted = claims?.hosted(config.tenants) ?? [];
  for (const merchant of claims?.movedOut(config.tenants) ?? []) {
    logger.warn({ merchant }, 'the config lists a merchant that was moved to another cell; it stays there (update the config)');
  }
  const core = new CellCore({
    cellId: config.cell.id,
    tenants: claims === undefined ? config.tenants : tenantsHosting(config.tenants, hosted),
    limits: config.limits,
    clock,
    random,
    store,
    metrics,
    logger,
  });
  let ready = false;
  let meshNode: MeshNode | undefined;
  // Bound once the mesh node runs; until then (and for a standalone cell) the API says so.
  let cluster: ClusterApi | undefined;
  const access = new AccessServer({
    core,
    metrics,
    exposition: metricsPort,
    logger,
    limits: config.limits,
    host: config.listen.host,
    port: config.listen.port,
    isReady: () => ready && !core.isDraining,
    adminTokens: config.admin.token === undefined ? [] : [config.admin.token, ...config.admin.acceptTokens],
    get cluster() {
      return cluster;
    },
  });
  let port: number;
  try {
    port = await access.listen().catch(async (error: unknown) => {
      throw await listenStartError({ host: 'listen.host', port: 'listen.port' }, config.listen.host, config.listen.port, error);
    });
    if (config.mesh !== undefined) {
      const meshListen = config.mesh.listen;
      meshNode = await startCellMesh(config, hosted, claims as MerchantClaimsStore, { store, clock, random, logger, metrics, metricsPort, core, port }).catch(async (error: unknown) => {
        throw await listenStartError({ host: 'mesh.listen.host', port: 'mesh.listen.port' }, meshListen.host, meshListen.port, error);
      });
      const { mesh, location, outbox, inbox, transport } = meshNode;
      const clusterPort = createClusterPort({ cellId: config.cell.id, directory: mesh.directory, location, outbox, inbox, transport });
      // From here on, conversations of merchants homed on other cells are served cross-cell.
      core.attachCluster(clusterPort);
      metrics.collectCrossCellStats(() => core.crossCellStats());
      const merchantClaims = meshMerchantClaims(meshNode.mesh, claims as MerchantClaimsStore);
      const mover = new MerchantMover({ cellId: config.cell.id, store, cluster: clusterPort, clock, logger, host: core.moveHost(), claims: merchantClaims });
      const placement: PlacementComponents = {
        cellId: config.cell.id,
        operatorKeys: config.mesh.operatorKeys,
        directory: mesh.directory,
        host: core.moveHost(),
        claims: merchantClaims,
        logger,
      };
      cluster = clusterApiOf(meshNode, core, mover, placement, clock);
    }
  } catch (error) {
    access.stopListening();
    await store.close();
    throw error;
  }
  ready = true;
  logger.info({ cell: config.cell.id, host: config.listen.host, port, store: config.store.kind, mesh: meshNode?.transport.addresses() }, 'cell listening');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      ready = false;
      access.stopListening();
      // In a mesh the others hear 'leaving' first (routers stop sending devices here), then
      // 'left' once the devices are closed and the writes are done.
      if (meshNode !== undefined) await meshNode.leave(() => core.drain());
      else await core.drain();
      await store.close();
      logger.info({ cell: config.cell.id }, 'cell stopped');
    })();
    return stopping;
  };
  return { cellId: config.cell.id, port, core, metrics, mesh: meshNode, stop };
}

interface CellParts {
  store: Store;
  clock: Clock;
  random: Random;
  logger: Logger;
  metrics: CellMetrics;
  metricsPort: Metrics;
  core: CellCore;
  port: number;
}

/** Joins the cluster the config names, advertising this cell's endpoints, tenants and merchants. */
function startCellMesh(config: CellConfig, hosted: readonly HostedMerchant[], claims: MerchantClaimsStore, parts: CellParts): Promise<MeshNode> {
  const mesh = config.mesh as NonNullable<CellConfig['mesh']>;
  const { core, metrics } = parts;
  // A pod listening on a wildcard address must say in mesh.advertise how it is reached.
  const advertisedHost = config.listen.host;
  return startMeshNode({
    cellId: config.cell.id,
    settings: {
      listenHost: mesh.listen.host,
      listenPort: mesh.listen.port,
      bootstrap: mesh.bootstrap,
      clusterSecret: mesh.clusterSecret,
      acceptClusterSecrets: mesh.acceptClusterSecrets ?? [],
      admission: mesh.admission,
      keyFile: mesh.keyFile,
      maxDevices: mesh.maxDevices,
      maxFrameBytes: config.limits.maxFrameBytes,
      timings: mesh.timings,
    },
    storeDirectory: config.store.kind === 'level' ? config.store.directory : undefined,
    store: parts.store,
    clock: parts.clock,
    random: parts.random,
    logger: parts.logger,
    metrics: parts.metricsPort,
    endpoints: {
      ws: mesh.advertise.ws ?? `ws://${advertisedHost}:${parts.port}/v1/ws`,
      http: mesh.advertise.http ?? `http://${advertisedHost}:${parts.port}`,
    },
    tenants: config.tenants.map((tenant) => tenant.id),
    // Merchants named in the config are claimed at epoch 0; a move or a placement claims a higher epoch.
    ...recordClaims(hosted, claims),
    operatorKeys: mesh.operatorKeys,
    localUsers: (tenant, userIds) => core.localUsers(tenant, userIds),
    load: { devices: () => core.presence.connections, messagesTotal: () => metrics.messagesInTotal() },
  });
}

/** The HTTP API's view of the mesh (routes, the cluster view, partition tools). */
function clusterApiOf(node: MeshNode, core: CellCore, mover: MerchantMover, placement: PlacementComponents, clock: Clock): ClusterApi {
  const { mesh, transport, location } = node;
  const peersOf = (cellIds: readonly string[]): { peers: string[]; unknown: string[] } => {
    const peers: string[] = [];
    const unknown: string[] = [];
    for (const cellId of cellIds) {
      const peer = mesh.peerOf(cellId);
      if (peer === undefined) unknown.push(cellId);
      else peers.push(peer);
    }
    return { peers, unknown };
  };
  return {
    route: (tenant, merchant) => routeToMerchant(mesh.directory, tenant, merchant),
    view: () => ({
      self: mesh.cellId,
      incarnation: mesh.incarnation,
      localHealth: mesh.localHealth(),
      peers: transport.connectedPeers().length,
      cells: summarizeDirectory(mesh.directory, mesh.cellId, clock.now()),
      conflicts: mesh.conflicts(),
    }),
    locate: async (tenant, user) => {
      // Only customers are located (agents work in their merchant's home cell).
      const here = core.localUsers(tenant, [user]).length > 0 ? [mesh.cellId] : [];
      const elsewhere = await location.locate(tenant, user);
      return { tenant, user, cells: [...here, ...elsewhere] };
    },
    moveMerchant: (tenant, merchant, to) => mover.move(tenant, merchant, to),
    placeMerchant: (signed) => placeMerchant(placement, signed),
    setCapacity: async (maxDevices) => {
      const record = await mesh.updateOwnRecord({ capacity: { maxDevices } });
      return { cellId: record.cellId, version: record.version, capacity: record.capacity };
    },
    block: async (cellIds) => {
      const { peers, unknown } = peersOf(cellIds);
      await transport.blockPeers(peers);
      return { blocked: cellIds.filter((cellId) => !unknown.includes(cellId)), unknown };
    },
    unblock: async (cellIds) => {
      const { peers, unknown } = peersOf(cellIds);
      transport.unblockPeers(peers);
      return { unblocked: cellIds.filter((cellId) => !unknown.includes(cellId)), unknown };
    },
  };
}
