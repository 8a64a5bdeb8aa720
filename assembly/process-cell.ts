import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { loginRoutes } from '../cell/access/login-routes.js';
import { newestSigningKey } from '../cell/access/token-minter.js';
import { signingKeysOf } from '../cell/access/tokens.js';
import { adminPeopleRoutes } from '../cell/access/admin-people-routes.js';
import { adminCatalogueRoutes } from '../cell/access/admin-catalogue-routes.js';
import { adminClosureRoutes } from '../cell/access/admin-closure-routes.js';
import { adminDeskRoutes } from '../cell/access/admin-desk-routes.js';
import { adminBackupRoutes } from '../cell/access/admin-backup-routes.js';
import { adminCustomerRoutes } from '../cell/access/admin-customer-routes.js';
import { adminDrainRoutes } from '../cell/access/admin-drain-routes.js';
import { CustomerData, customerDataHostOf } from '../cell/customer-data.js';
import { AccessServer, type ClusterApi } from '../cell/access/uws-server.js';
import { cellProbes, type Probes } from '../cell/access/probes.js';
import { attachmentRoutes } from '../cell/access/attachment-routes.js';
import type { CellCore } from '../cell/cell-core.js';
import type { AuditLog } from '../cell/audit-log.js';
import type { PeopleDirectory } from '../cell/desk/people.js';
import type { CellMetrics } from '../cell/metrics.js';
import { createLibp2pTransport, type Libp2pMeshTransport } from '../mesh/libp2p-transport.js';
import { loadOrCreatePeerKey } from '../mesh/peer-key-file.js';
import { libp2pPublicKeyOf } from '../mesh/libp2p-record-keys.js';
import { membershipOptions } from '../mesh/membership-config.js';
import { placeMerchant } from '../mesh/merchant-placement.js';
import { Ed25519RecordSigner } from '../mesh/record-signer.js';
import { SystemClock, type Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { SystemRandom, type Random } from '../platform/random.js';
import type { Store } from '../platform/store/index.js';
import type { ProcessAddress } from '../cell/processes/coordination-port.js';
import { summarizeDirectory } from '../router/route.js';
import { RouteMetrics } from '../router/route-metrics.js';
import { routeRoutes } from '../router/route-routes.js';
import type { DirectoryView } from '../mesh/directory.js';
import { AssemblyError, assembleCell, type AssembledCell, type AssembledMesh, type DeviceAccess, type MeshPorts } from './assemble-cell.js';
import { isWildcardHost, meshTimings, redisKeyPrefixOf, type CellConfig, type MeshConfig } from './config.js';
import { storeFromConfig, storeOpenError, warnOfWeakDurability } from './cell-store.js';
import type { MeshTransport } from '../mesh/transport.js';
import { ProcessClusterPort } from '../cell/processes/process-cluster-port.js';
import { meshProcessRoutes } from './mesh-process-routes.js';
import { CellStartError, listenStartError } from './start-errors.js';
import { cellDrainOf } from './cell-drain-service.js';
import type { CellDrain } from '../mesh/cell-drain.js';
import { registerScaledProcess, type ScaledProcess } from './scaled-process.js';
import { webPagesRoutes } from '../cell/access/web-pages.js';
import { webPagesOf } from './web-pages.js';

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
  /**
   * The process lost the speaker lease of its cell in a mesh (or could not join the mesh with
   * it): another process may speak for the cell already, so this one must end at once
   * (`cellmesh cell` exits 1). Default: stop the cell.
   */
  onSpeakerLost?: (reason: string) => void;
}

/** A cell listening for devices. */
export interface RunningCell {
  readonly cellId: string;
  readonly port: number;
  readonly core: CellCore;
  readonly metrics: CellMetrics;
  /** The agents of the merchants the cell hosts. */
  readonly people: PeopleDirectory;
  /** The audit log of admin actions. */
  readonly audit: AuditLog;
  /** The cell's mesh services; undefined for a standalone cell, and for a process of a cell in a mesh that does not speak for it. */
  readonly mesh: AssembledMesh<Libp2pMeshTransport> | undefined;
  /**
   * Graceful stop: stop accepting, let writes under way finish and be acked, close devices
   * with "going away", close the store. Idempotent.
   */
  stop(): Promise<void>;
}

/** Production wiring of one cell: uWS access, the configured store, the system clock, libp2p. */
export async function startCell(options: StartCellOptions): Promise<RunningCell> {
  const { config, logger } = options;
  const clock = options.clock ?? new SystemClock();
  const random = options.random ?? new SystemRandom();
  const metricsPort = new PromMetrics();
  if (options.processMetrics === true) metricsPort.collectProcessMetrics();
  // Bound once the cell has joined its cluster; until then (and for a standalone cell) the API says so.
  let clusterApi: ClusterApi | undefined;
  let meshDirectory: DirectoryView | undefined;
  let drain: CellDrain | undefined;
  let probes: Probes | undefined;
  let port = 0;
  let access: AccessServer | undefined;
  const devices: DeviceAccess = {
    open: async ({ core, metrics, people, audit, attachments, catalogue, erasure, readiness }) => {
      // The watchdog times the process's real event loop: on the system clock even when a test gives the cell a virtual one.
      probes = cellProbes({ clock: new SystemClock(), metrics: metricsPort, logger, maxEventLoopStallMs: config.health.maxEventLoopStallMs, readiness });
      const { liveness } = probes;
      const adminTokens = config.admin.token === undefined ? [] : [config.admin.token, ...config.admin.acceptTokens];
      access = new AccessServer({
        core,
        metrics,
        exposition: metricsPort,
        logger,
        limits: config.limits,
        host: config.listen.host,
        port: config.listen.port,
        readiness,
        liveness,
        siblings: scaled?.siblings,
        adminTokens,
        audit,
        get cluster() {
          return clusterApi;
        },
        routeModules: [
          adminCatalogueRoutes({ catalogue, people, audit, adminTokens, merchantIntakeRefusal: () => drain?.merchantIntakeRefusal() }),
          adminDrainRoutes({ drain: () => drain, standalone: config.mesh === undefined, audit, adminTokens }),
          adminPeopleRoutes({ servedTenants: () => core.servedTenants(), people, audit, adminTokens }),
          adminCustomerRoutes({ servedTenants: () => core.servedTenants(), blocks: core.blocks, closeConsultation: (tenant, conv) => core.desk.closeIfOpen(tenant, conv), data: new CustomerData({ store, host: customerDataHostOf(core), attachments }), erasure, audit, adminTokens }),
          loginRoutes({
            store,
            clock,
            random,
            signingKeyOf: (tenant) => {
              const served = catalogue.tenantConfig(tenant);
              return served === undefined ? undefined : newestSigningKey(signingKeysOf(served));
            },
            hostsMerchant: core.moveHost().hosts,
            refuseMerchant: (tenant, merchant, message) => core.redirects.refusal(tenant, merchant, message),
            agents: { passwordHashOf: (tenant, merchant, agent) => people.get(tenant, merchant, agent)?.passwordHash },
            settings: config.logins,
          }),
          attachmentRoutes({ core, attachments, clock, tenantOf: (tenant) => catalogue.tenantConfig(tenant) }),
          adminClosureRoutes({ cellId: config.cell.id, closure: () => core.closure(), adminTokens }),
          adminDeskRoutes({ cellId: config.cell.id, overview: () => core.desk.overview(), servedTenants: () => core.servedTenants(), adminTokens }),
          adminBackupRoutes({ cellId: config.cell.id, store, source: config.store.kind, clock, logger, adminTokens, meshKeyFile: config.mesh === undefined ? undefined : keyFileOf(config, config.mesh) }),
          routeRoutes({ directory: () => meshDirectory, standalone: config.mesh === undefined, clock, settings: config.routing, metrics: new RouteMetrics(metricsPort) }),
          webPagesRoutes(webPagesOf(() => meshDirectory)),
          ...(scaled?.mesh === undefined || processPort === undefined ? [] : [meshProcessRoutes(scaled.coordinator, scaled.mesh, processPort, core, erasure, () => speakingMesh)]),
        ],
      });
      port = await access.listen().catch(async (error: unknown) => {
        throw await listenStartError({ host: 'listen.host', port: 'listen.port' }, config.listen.host, config.listen.port, error);
      });
      // A pod listening on a wildcard address must say in mesh.advertise how it is reached. A
      // process of a cell of several processes is reached by its siblings at processes.advertise,
      // by default at this machine's address when it listens on a wildcard one (a pod's IP).
      const host = scaled === undefined ? config.listen.host : siblingHostOf(config.listen.host);
      const advertise = config.mesh?.advertise ?? config.processes.advertise;
      const process = scaled === undefined ? undefined : processAddressOf(config, port);
      return { ws: advertise.ws ?? `ws://${host}:${port}/v1/ws`, http: advertise.http ?? `http://${host}:${port}`, process };
    },
    stopAccepting: () => access?.stopListening(),
  };
  // A cell on Redis is a cell of several processes: this one takes its lease before the store opens.
  const scaled = options.store === undefined ? await scaledProcessOf(config, clock, random, logger) : undefined;
  // In a mesh, one process at a time speaks for the cell: the others' cores reach the mesh through it.
  const meshProcess = scaled?.mesh;
  const processPort = meshProcess === undefined ? undefined : new ProcessClusterPort({ cellId: config.cell.id, channel: meshProcess.channel, clock, logger, refreshIntervalMs: config.processes.renewIntervalMs });
  let speakingMesh: AssembledMesh<Libp2pMeshTransport> | undefined;
  const speakerLost = options.onSpeakerLost ?? ((): void => void cell.stop());
  const store = options.store ?? storeFromConfig(config, scaled?.fence);
  let cell: AssembledCell<Libp2pMeshTransport>;
  try {
    cell = await assembleCell({
      cellId: config.cell.id,
      tenants: config.tenants,
      limits: config.limits,
      desk: config.desk,
      clock,
      random,
      store,
      logger,
      metrics: metricsPort,
      devices,
      ...(config.mesh === undefined ? {} : { mesh: libp2pMeshPorts(config, config.mesh, logger) }),
      ...(scaled === undefined ? {} : { processes: scaled.coordinator, cellWideCatalogue: scaled.catalogue }),
      ...(meshProcess === undefined || processPort === undefined
        ? {}
        : {
            speaker: {
              port: processPort,
              whenSpeaker: meshProcess.lease.whenSpeaker(),
              owners: meshProcess.channel,
              joined: (assembled: AssembledMesh<MeshTransport>) => {
                speakingMesh = assembled as AssembledMesh<Libp2pMeshTransport>;
                speakerJoined(speakingMesh);
              },
              failed: (error: unknown) => {
                logger.error({ err: error }, 'joining the mesh as the speaker failed');
                speakerLost('joining the mesh as the speaker failed');
              },
            },
          }),
      storeOpenError: (error) => storeOpenError(config, error),
    });
  } catch (error) {
    if (scaled !== undefined) {
      await meshProcess?.lease.stop();
      await scaled.coordinator.stop();
      scaled.close();
    }
    const meshListen = config.mesh?.listen;
    if (error instanceof AssemblyError && meshListen !== undefined) {
      throw await listenStartError({ host: 'mesh.listen.host', port: 'mesh.listen.port' }, meshListen.host, meshListen.port, error.cause);
    }
    throw error;
  }
  warnOfWeakDurability(store, logger);
  function speakerJoined(cluster: AssembledMesh<Libp2pMeshTransport>): void {
    drain = cellDrainOf(cluster, cell.core, { audit: cell.audit, clock, logger, metrics: metricsPort });
    clusterApi = clusterApiOf(cluster, cell.core, clock, drain);
    meshDirectory = cluster.mesh.directory;
  }
  if (meshProcess !== undefined) {
    meshProcess.lease.onLost(speakerLost);
    meshProcess.lease.onSpeakerChange((record) => logger.info({ speaker: record?.id }, record === undefined ? 'no process speaks for the cell right now' : 'the cell has a new speaker'));
    // It serves, and the coordinator published its address: it bids for the speaker lease from
    // now on (the first process of a cell speaks at once), and the others find it there.
    await meshProcess.lease.start();
  } else if (cell.cluster !== undefined) speakerJoined(cell.cluster);
  probes?.start();
  logger.info({ cell: config.cell.id, process: scaled?.coordinator.processId, host: config.listen.host, port, store: config.store.kind, mesh: cell.cluster?.transport.addresses() }, 'cell listening');
  const stop = async (): Promise<void> => {
    await cell.stop();
    probes?.stop();
    // After the cell left the mesh: another process takes the speaker lease, and the mesh, at once.
    await meshProcess?.lease.stop();
    scaled?.close();
    logger.info({ cell: config.cell.id }, 'cell stopped');
  };
  return {
    cellId: config.cell.id,
    port,
    core: cell.core,
    metrics: cell.metrics,
    people: cell.people,
    audit: cell.audit,
    get mesh() {
      return cell.cluster;
    },
    stop: once(stop),
  };
}

/** The lease of this process when the cell is on Redis (a cell of several processes); undefined otherwise. */
async function scaledProcessOf(config: CellConfig, clock: Clock, random: Random, logger: Logger): Promise<ScaledProcess | undefined> {
  if (config.store.kind !== 'redis') return undefined;
  const { redis } = config.store;
  try {
    return await registerScaledProcess({ url: redis.url, keyPrefix: redisKeyPrefixOf(config, redis), processes: config.processes, clock, random, logger, mesh: config.mesh !== undefined });
  } catch (error) {
    throw new CellStartError('store.redis.url', `cannot open the Redis store at ${new URL(redis.url).host}: taking this process's lease failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** Where the other processes of the cell reach this one: `processes.advertise`, or where it listens. */
export function processAddressOf(config: CellConfig, port: number): ProcessAddress {
  const { advertise } = config.processes;
  const host = siblingHostOf(config.listen.host);
  return { ws: advertise.ws ?? `ws://${host}:${port}/v1/ws`, http: advertise.http ?? `http://${host}:${port}` };
}

/** Where siblings reach a process listening on `host`: a wildcard address is this machine's first external IPv4 address. */
function siblingHostOf(host: string): string {
  if (!isWildcardHost(host)) return host;
  const external = Object.values(networkInterfaces()).flat().find((address) => address !== undefined && address.family === 'IPv4' && !address.internal);
  return external?.address ?? '127.0.0.1';
}

/** `run` the first time; the same promise after. */
function once(run: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= run());
}

/** The libp2p side of a cell process: its key, its private network, its listen address, its timings. */
function libp2pMeshPorts(config: CellConfig, mesh: MeshConfig, logger: Logger): MeshPorts<Libp2pMeshTransport> {
  const options = membershipOptions(meshTimings(mesh));
  return {
    createTransport: async () => {
      const privateKey = await loadOrCreatePeerKey(keyFileOf(config, mesh));
      const transport = await createLibp2pTransport({
        clusterSecret: mesh.clusterSecret,
        acceptClusterSecrets: mesh.acceptClusterSecrets ?? [],
        ...definedOnly({ privateNetworkHandshakeTimeoutMs: mesh.admission.handshakeTimeoutMs, maxUnauthenticatedInbound: mesh.admission.maxUnauthenticatedInbound }),
        privateKey,
        listenHost: mesh.listen.host,
        listenPort: mesh.listen.port,
        logger,
      });
      return { transport, signer: new Ed25519RecordSigner({ privateKey: privateKey.raw, publicKeyOf: libp2pPublicKeyOf }) };
    },
    bootstrap: mesh.bootstrap,
    options,
    operatorKeys: mesh.operatorKeys,
    maxDevices: mesh.maxDevices,
  };
}

/** Where the libp2p key lives: `mesh.keyFile`, or `<store directory>/mesh-peer.key`. */
export function keyFileOf(config: CellConfig, mesh: MeshConfig): string {
  if (mesh.keyFile !== undefined) return mesh.keyFile;
  if (config.store.kind !== 'level') {
    throw new Error("mesh.keyFile is required when the store has no directory (memory or redis store): the key is the cell's identity in the cluster");
  }
  return join(config.store.directory, 'mesh-peer.key');
}

/** The HTTP API's view of the mesh (routes, the cluster view, partition tools). */
function clusterApiOf(cluster: AssembledMesh<Libp2pMeshTransport>, core: CellCore, clock: Clock, drain: CellDrain): ClusterApi {
  const { mesh, transport, location, mover, placement } = cluster;
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
    placeMerchant: async (signed) => {
      const refusal = drain.merchantIntakeRefusal();
      if (refusal !== undefined) throw refusal;
      return placeMerchant(placement, signed);
    },
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

/** The entries of `values` that are set: unset admission settings keep the transport's defaults. */
function definedOnly<T extends Record<string, number | undefined>>(values: T): { [K in keyof T]?: number } {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as { [K in keyof T]?: number };
}
