import { generateKeyPair } from '@libp2p/crypto/keys';
import { CellMesh } from '../mesh/cell-mesh.js';
import { isRouterRecord } from '../mesh/cell-record.js';
import { isServing } from '../mesh/directory.js';
import { createLibp2pTransport, type Libp2pMeshTransport } from '../mesh/libp2p-transport.js';
import { libp2pPublicKeyOf } from '../mesh/libp2p-record-keys.js';
import { membershipOptions } from '../mesh/membership-config.js';
import { meshMetricsOn } from '../mesh/mesh-metrics.js';
import { INCARNATION_KEY } from '../mesh/own-record.js';
import { loadOrCreatePeerKey } from '../mesh/peer-key-file.js';
import { Ed25519RecordSigner } from '../mesh/record-signer.js';
import { SystemClock, type Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import { SystemRandom, type Random } from '../platform/random.js';
import { MemoryStore } from '../platform/store/index.js';
import { RouterServer } from '../router/router-server.js';
import { meshTimings } from './config.js';
import type { RouterConfig } from './router-config.js';
import { listenStartError } from './start-errors.js';
import { webPagesOf } from './web-pages.js';

export interface StartRouterOptions {
  config: RouterConfig;
  logger: Logger;
  clock?: Clock;
  random?: Random;
  /** Adds process metrics (CPU, memory, event loop) to /v1/metrics; on for a real process. */
  processMetrics?: boolean;
}

/** A router serving route requests from its copy of the directory. */
export interface RunningRouter {
  readonly routerId: string;
  readonly port: number;
  readonly mesh: CellMesh;
  readonly transport: Libp2pMeshTransport;
  /** Ready: running, and the directory holds at least one serving cell (it has heard the cluster). */
  isReady(): boolean;
  /** Graceful stop: stop accepting, leave the cluster (others know at once), stop libp2p. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Production wiring of `cellmesh router`: a libp2p node that joins the cluster as an observer
 * (a CellMesh whose record is a router's: no tenants, no merchants), and the HTTP server that
 * answers route requests and redirects from its directory (router/router-server.ts).
 *
 * A router keeps no data. Its incarnation is its start time in milliseconds, so the record of a
 * restarted router is newer than the one the cluster holds of its previous run.
 */
export async function startRouter(options: StartRouterOptions): Promise<RunningRouter> {
  const { config, logger } = options;
  const clock = options.clock ?? new SystemClock();
  const random = options.random ?? new SystemRandom();
  const metricsPort = new PromMetrics();
  if (options.processMetrics === true) metricsPort.collectProcessMetrics();
  const cleanups: Array<() => Promise<void> | void> = [];
  const undo = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  };
  try {
    const store = new MemoryStore();
    await store.open();
    cleanups.push(() => store.close());
    await store.write([{ type: 'put', key: INCARNATION_KEY, value: String(clock.now()) }]);
    const privateKey = config.mesh.keyFile === undefined ? await generateKeyPair('Ed25519') : await loadOrCreatePeerKey(config.mesh.keyFile);
    const { mesh: meshConfig } = config;
    const transport = await createLibp2pTransport({
      clusterSecret: meshConfig.clusterSecret,
      acceptClusterSecrets: meshConfig.acceptClusterSecrets ?? [],
      ...(meshConfig.admission.handshakeTimeoutMs === undefined ? {} : { privateNetworkHandshakeTimeoutMs: meshConfig.admission.handshakeTimeoutMs }),
      ...(meshConfig.admission.maxUnauthenticatedInbound === undefined ? {} : { maxUnauthenticatedInbound: meshConfig.admission.maxUnauthenticatedInbound }),
      privateKey,
      listenHost: meshConfig.listen.host,
      listenPort: meshConfig.listen.port,
      logger,
    });
    try {
      await transport.start();
    } catch (error) {
      throw await listenStartError({ host: 'mesh.listen.host', port: 'mesh.listen.port' }, meshConfig.listen.host, meshConfig.listen.port, error);
    }
    cleanups.push(() => transport.stop());

    let mesh: CellMesh | undefined;
    // Heard the cluster: a serving cell's record reached the directory (by the join's pull, gossip or anti-entropy).
    const isReady = (): boolean => mesh?.state === 'running' && hasServingCell(mesh);
    // The server listens before the mesh starts, since the router's record advertises the port it got.
    const server = new RouterServer({ host: config.listen.host, port: config.listen.port, directory: () => mesh?.directory, isReady, clock, settings: config.routing, metrics: metricsPort, exposition: metricsPort, logger, webPages: webPagesOf(() => mesh?.directory) });
    cleanups.push(() => server.close());
    const port = await server.listen().catch(async (error: unknown) => {
      throw await listenStartError({ host: 'listen.host', port: 'listen.port' }, config.listen.host, config.listen.port, error);
    });
    const http = meshConfig.advertise.http ?? `http://${config.listen.host}:${port}`;
    mesh = new CellMesh({
      cellId: config.router.id,
      role: 'router',
      transport,
      clock,
      random,
      store,
      signer: new Ed25519RecordSigner({ privateKey: privateKey.raw, publicKeyOf: libp2pPublicKeyOf }),
      operatorKeys: meshConfig.operatorKeys,
      record: {
        // A router serves no WebSocket; every reader's schema requires `ws`, so it names the router's own address.
        endpoints: { ws: http.replace(/^http/, 'ws'), http, p2p: transport.addresses() },
        tenants: [],
        merchants: [],
        load: { devices: 0, messagesPerSecond: 0 },
        capacity: { maxDevices: 0 },
      },
      bootstrap: meshConfig.bootstrap,
      options: membershipOptions(meshTimings(meshConfig)),
      metrics: meshMetricsOn(metricsPort),
      logger,
    });
    const started = mesh;
    // Requests and probes go to members this router may not be connected to yet: the transport dials only addresses it was given.
    const unsubscribe = started.directory.onChange((_cellId, _before, after) => {
      if (after !== undefined && after.record.peerId !== transport.self) transport.addPeerAddresses(after.record.peerId, after.record.endpoints.p2p);
    });
    cleanups.push(unsubscribe);
    await started.start();
    cleanups.push(() => started.stop());
    void started.waitJoined().then(
      () => logger.info({ router: config.router.id, members: started.directory.size }, 'router joined the cluster'),
      (error: unknown) => logger.error({ err: error }, 'the router could not join the cluster through its bootstrap addresses; it keeps trying while isolated'),
    );
    logger.info({ router: config.router.id, host: config.listen.host, port, mesh: transport.addresses() }, 'router listening');
    let stopping: Promise<void> | undefined;
    const stop = async (): Promise<void> => {
      server.close();
      if (started.state === 'running') await started.leave().catch((error: unknown) => logger.warn({ err: error }, 'leaving the cluster gracefully failed; stopping anyway'));
      await undo();
      logger.info({ router: config.router.id }, 'router stopped');
    };
    return {
      routerId: config.router.id,
      port,
      mesh: started,
      transport,
      isReady,
      stop: () => (stopping ??= stop()),
    };
  } catch (error) {
    await undo();
    throw error;
  }
}

/** Whether the directory holds a cell (not a router) that serves: a router without one routes nothing. */
function hasServingCell(mesh: CellMesh): boolean {
  for (const entry of mesh.directory.values()) if (!isRouterRecord(entry.record) && isServing(entry.liveness)) return true;
  return false;
}
