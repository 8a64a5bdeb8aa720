import { AuditLog } from '../cell/audit-log.js';
import { CustomerErasure } from '../cell/customer-erasure.js';
import { RetentionSweeper } from '../cell/retention-sweeper.js';
import type { CustomerBlocks } from '../cell/desk/customer-blocks.js';
import { CellCore } from '../cell/cell-core.js';
import { CloseCode } from '../cell/protocol/errors.js';
import { TenantCatalogue } from '../cell/tenant-catalogue.js';
import { PeopleDirectory } from '../cell/desk/people.js';
import { AttachmentStore, AttachmentSweeper } from '../cell/attachments/index.js';
import { DeskConfig, type LimitsConfig, type TenantConfig } from '../cell/settings.js';
import { KEY_LAYOUT_VERSION, upgradeKeyLayout } from '../cell/messaging/key-layout.js';
import { CellMetrics } from '../cell/metrics.js';
import type { MoveHost } from '../cell/move-host.js';
import { CellMesh } from '../mesh/cell-mesh.js';
import { publishLoadPeriodically } from '../mesh/load-publisher.js';
import type { LocationService } from '../mesh/location.js';
import type { MembershipOptions, MembershipPreset } from '../mesh/membership-config.js';
import { MerchantClaimsStore, catalogueClaimsOf, meshMerchantClaims, recordClaims, tenantsHosting, type HostedMerchant } from '../mesh/merchant-claims.js';
import { homeDirectoryOf, onHomesServing, relayDirectoryOf } from '../mesh/merchant-home.js';
import { MerchantMover } from '../mesh/merchant-move.js';
import type { PlacementComponents } from '../mesh/merchant-placement.js';
import { meshMetricsOn } from '../mesh/mesh-metrics.js';
import type { Inbox } from '../mesh/inbox.js';
import type { Outbox, OutboxInit } from '../mesh/outbox.js';
import type { RecordSigner } from '../mesh/record-signer.js';
import type { MeshTransport } from '../mesh/transport.js';
import type { Clock } from '../platform/clock.js';
import { CodedError } from '../platform/coded-error.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics } from '../platform/metrics.js';
import type { Random } from '../platform/random.js';
import type { Store } from '../platform/store/store.js';
import type { ProcessCoordinator } from '../cell/processes/process-coordinator.js';
import type { CellWideCatalogue } from '../cell/processes/cell-wide-catalogue.js';
import { erasureProcessesOf } from '../cell/processes/sibling-access.js';
import type { ProcessClusterPort } from '../cell/processes/process-cluster-port.js';
import type { OwnerChannel } from '../cell/processes/speaker-channel.js';
import { SpeakerDispatch } from '../cell/processes/speaker-dispatch.js';
import type { ClusterPort } from '../cell/messaging/cluster-port.js';
import { liveHomesView } from '../mesh/homes-snapshot.js';
import { startCrossCellServices } from './cross-cell-services.js';
import type { Readiness } from '../cell/access/probes.js';
import { merchantsOf, ownedMerchantsHost } from './owned-merchants.js';
import type { MerchantRef } from '../cell/processes/coordination-port.js';
import { weakSecretProblems } from './secret-strength.js';

/**
 * The one place a cell is wired: the process (assembly/process-cell.ts), the simulator
 * (sim/sim-cell.ts) and the tests call `assembleCell` with their own ports, and get the same
 * core, the same mesh services in the same start order and the same stop order.
 */

/** Where the cell's devices come from: uWS in a process, in-memory links in the simulator. */
export interface DeviceAccess {
  /**
   * Starts accepting devices for `cell.core` (the mesh is not joined yet: a cell serves its own
   * merchants first). Returns the endpoints devices reach it at, which a cell in a cluster
   * advertises in its record.
   */
  open(cell: OpenedCell): Promise<DeviceEndpoints>;
  /** Stops accepting new devices; those connected are closed by the core's drain. */
  stopAccepting(): void;
}

export interface DeviceEndpoints {
  readonly ws: string;
  readonly http: string;
  /** Where the cell's other processes reach this one, when not here (a cell in a mesh advertises its balancer). */
  readonly process?: { readonly ws: string; readonly http: string } | undefined;
}

/** What the device access needs from the cell while it serves. */
export interface OpenedCell {
  readonly core: CellCore;
  /** The cell's figures, on the `metrics` port the assembly was given. */
  readonly metrics: CellMetrics;
  /** The agents of the merchants the cell hosts, loaded. */
  readonly people: PeopleDirectory;
  /** Where admin actions are recorded. */
  readonly audit: AuditLog;
  /** Erasures of customers, here and in the other cells. */
  readonly erasure: CustomerErasure;
  /** The attachments of the cell's conversations: the one instance uploads and the retention sweeper share. */
  readonly attachments: AttachmentStore;
  /** The tenants and merchants of the config and of the admin API. */
  readonly catalogue: TenantCatalogue;
  /** What the readiness probe reports: starting, ready (serving its merchants), draining (stopping). */
  readiness(): Readiness;
}

/** The cell's part in a cluster. */
export interface MeshPorts<Transport extends MeshTransport = MeshTransport> {
  /**
   * Makes the transport (not started) and the signer of this cell's record with the key of
   * `transport.self`. The assembly calls it once device access is open, starts the transport
   * before the other mesh services and stops it after them.
   */
  readonly createTransport: () => Promise<{ readonly transport: Transport; readonly signer: RecordSigner }>;
  readonly bootstrap: readonly string[];
  readonly options?: Partial<MembershipOptions>;
  readonly preset?: MembershipPreset;
  /** Operator public keys whose placements this cell accepts (`mesh.operatorKeys`). */
  readonly operatorKeys?: readonly string[];
  /** Devices this cell admits, as its record says to routers. */
  readonly maxDevices?: number;
  /** Tuning of the outbox (tests shorten its timeouts); its entry and batch bounds follow the frame limit. */
  readonly outbox?: Omit<OutboxInit, 'maxEntryBytes' | 'maxBatchBytes'>;
  /**
   * The mesh services' own random stream. The simulator gives the core and the mesh a stream
   * each, so that a change in one does not shift the other's draws; defaults to the cell's.
   */
  readonly random?: Random;
}

export interface CellAssemblyInit<Transport extends MeshTransport = MeshTransport> {
  readonly cellId: string;
  /** The tenants as configured; in a cluster, moves recorded in the store change which merchants are hosted. */
  readonly tenants: readonly TenantConfig[];
  readonly limits: LimitsConfig;
  /** The desk's settings; defaults when absent. */
  readonly desk?: DeskConfig;
  readonly clock: Clock;
  readonly random: Random;
  /** Not opened yet: the assembly opens it first and closes it last. */
  readonly store: Store;
  readonly logger: Logger;
  /** Where every part of the cell counts: prom-client in a process, nowhere in the simulator. */
  readonly metrics: Metrics;
  readonly devices: DeviceAccess;
  /** Absent: a standalone cell. */
  readonly mesh?: MeshPorts<Transport>;
  /** Opening the store failed: lets the process name its own setting in the error. */
  readonly storeOpenError?: (error: unknown) => Error;
  /**
   * A cell of several processes sharing its store (docs/operations.md): the core starts hosting
   * nothing, and the coordinator (registered already: the store's writes are fenced by its lease)
   * makes it host the merchants this process owns once devices can connect.
   */
  readonly processes?: ProcessCoordinator;
  /**
   * With `processes`: the catalogue's changes run one at a time cell-wide, and this process
   * follows those of the others at each round of its lease (cell/processes/cell-wide-catalogue.ts).
   */
  readonly cellWideCatalogue?: CellWideCatalogue;
  /**
   * A cell of several processes in a mesh (with `processes` and `mesh`): the core reaches the
   * mesh through `port` from the start, and this process joins the mesh, on the running core,
   * once it takes the speaker lease.
   */
  readonly speaker?: SpeakerInit;
}

/** This process's part in speaking for a cell of several processes in a mesh. */
export interface SpeakerInit {
  readonly port: ProcessClusterPort;
  /** Resolves when this process takes the speaker lease. */
  readonly whenSpeaker: Promise<void>;
  /** How the speaker reaches the processes that own the merchants. */
  readonly owners: OwnerChannel;
  /** The mesh was joined: this process speaks for the cell. */
  readonly joined: (cluster: AssembledMesh<MeshTransport>) => void;
  /** Joining the mesh failed after the lease was taken: the process must end. */
  readonly failed: (error: unknown) => void;
}

/** The mesh services of a cell in a cluster, started, in the order they stop in reverse. */
export interface AssembledMesh<Transport extends MeshTransport = MeshTransport> {
  readonly mesh: CellMesh;
  readonly transport: Transport;
  readonly location: LocationService;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  readonly mover: MerchantMover;
  readonly placement: PlacementComponents;
  /** The first step of a graceful stop. */
  readonly stopPublishingLoad: () => void;
}

export interface AssembledCell<Transport extends MeshTransport = MeshTransport> {
  readonly cellId: string;
  readonly core: CellCore;
  readonly metrics: CellMetrics;
  /** The agents of the merchants the cell hosts (cell/desk/people.ts). */
  readonly people: PeopleDirectory;
  /** The audit log of admin actions (cell/audit-log.ts). */
  readonly audit: AuditLog;
  /** The tenants and merchants of the config and of the admin API (cell/tenant-catalogue.ts). */
  readonly catalogue: TenantCatalogue;
  readonly endpoints: DeviceEndpoints;
  /** Undefined for a standalone cell, and for a process of a cell in a mesh until it speaks for the cell. */
  readonly cluster: AssembledMesh<Transport> | undefined;
  isReady(): boolean;
  /**
   * Graceful stop, in one order for every world: readiness turns to draining; in a cluster
   * gossip 'leaving' (routers stop sending devices here), drain (refuse new devices and writes
   * SHUTTING_DOWN, finish and ack the writes under way, close devices with 1001), gossip 'left';
   * stop accepting devices (until then the probes get their answer), stop the mesh services in
   * the reverse of their start; close the store. Idempotent.
   */
  stop(): Promise<void>;
}

export type AssemblyErrorCode = 'MESH_START_FAILED';

/** The mesh transport could not start (its listen address is taken, for example); `cause` says why. */
export class AssemblyError extends CodedError<AssemblyErrorCode> {}

/** One step of the stop order; run in reverse of registration. */
type StopStep = () => Promise<void> | void;

/**
 * Opens the store, builds the core on what the cell hosts, opens device access, then (in a
 * cluster) joins the mesh and attaches the core to it. On a failure, everything started so far
 * is stopped again before the error propagates.
 */
export async function assembleCell<Transport extends MeshTransport>(init: CellAssemblyInit<Transport>): Promise<AssembledCell<Transport>> {
  const { cellId, store, logger } = init;
  try {
    await store.open();
  } catch (error) {
    throw init.storeOpenError?.(error) ?? error;
  }
  const started: StopStep[] = [() => store.close()];
  const unwind = async (): Promise<void> => {
    for (const step of started.splice(0).reverse()) await Promise.resolve(step()).catch((error: unknown) => logger.warn({ err: error }, 'stopping a part of the cell failed'));
  };
  try {
    const rewritten = await upgradeKeyLayout(store);
    if (rewritten > 0) logger.info({ keys: rewritten, layout: KEY_LAYOUT_VERSION }, 'rewrote store keys of an earlier layout (users named by their whole identity)');
    // The config's tenants and merchants, and those the admin API created.
    const catalogue = new TenantCatalogue({
      store,
      clock: init.clock,
      random: init.random,
      logger,
      configTenants: init.tenants,
      weakSecret: (secret) => weakSecretProblems([{ path: 'the secret', value: secret }], [])[0],
      clustered: init.mesh !== undefined,
      cellWide: init.cellWideCatalogue,
    });
    await catalogue.load();
    const catalogued = catalogue.tenants();
    // In a cluster, moves may have changed what this cell hosts since its config was written.
    const claims = init.mesh === undefined ? undefined : new MerchantClaimsStore(store);
    await claims?.load();
    const hosted = claims?.hosted(catalogued) ?? [];
    for (const merchant of claims?.movedOut(init.tenants) ?? []) {
      logger.warn({ merchant }, 'the config lists a merchant that was moved to another cell; it stays there (update the config)');
    }
    const metrics = new CellMetrics(init.metrics);
    const tenants = init.processes !== undefined ? tenantsHosting(catalogued, []) : claims === undefined ? catalogued : tenantsHosting(catalogued, hosted);
    const audit = new AuditLog({ store, clock: init.clock });
    await audit.load();
    const people = new PeopleDirectory({ store, clock: init.clock });
    // A process of a cell of several processes hosts no merchant yet, but seeds the agents of the
    // config for all of them: the one that comes to own a merchant reads them when it claims it.
    await people.load((init.processes === undefined ? tenants : catalogued).flatMap((tenant) => tenant.merchants.map((merchant) => ({ tenant: tenant.id, merchant: merchant.id, seeds: merchant.agents }))));
    const core = new CellCore({
      cellId,
      tenants,
      limits: init.limits,
      clock: init.clock,
      random: init.random,
      store,
      metrics,
      logger,
      desk: { people, settings: init.desk ?? DeskConfig.parse({}), audit },
    });
    // The desk follows its people at once: more capacity pulls the queue, a removed agent's consultations move.
    const stopFollowingPeople = people.onChange((change) => core.desk.peopleChanged(change.tenant, change.merchant, change.agentId, change.after));
    started.push(stopFollowingPeople);
    await core.loadDesks();
    const host = peopleFollowMoves(core.moveHost(), people, core.blocks, logger);
    const attachments = new AttachmentStore(store, init.clock);
    started.push(() => core.desk.stop());
    // The sweepers take the tenants' retention when they start: a change of the tenants through
    // the admin API starts them again.
    const startSweepers = (served: readonly TenantConfig[]): (() => Promise<void>) => {
      const sweeper = new AttachmentSweeper({ attachments, store, clock: init.clock, logger, tenants: served });
      const retention = new RetentionSweeper({ store, clock: init.clock, logger, tenants: served, attachments, forgetConversations: (tenant, merchant) => core.forgetConversations(tenant, merchant), settleReadCursors: (tenant, conv) => core.settleReadCursors(tenant, conv) });
      sweeper.start();
      retention.start();
      return async () => {
        await Promise.all([sweeper.stop(), retention.stop()]);
      };
    };
    let stopSweepers = startSweepers(tenants);
    started.push(() => stopSweepers());
    // In a cluster, the cell's record lists the tenants it serves: bound once it joined.
    let advertiseTenants: (() => void) | undefined;
    catalogue.attachHost({
      serveTenant: (tenant) => core.serveTenant(tenant),
      stopServingTenant: (tenant) => core.stopServingTenant(tenant),
      hostedMerchants: (tenant) => {
        const served = core.servedTenants().find((candidate) => candidate.id === tenant);
        // In a cell of several processes, the cell's merchants are the catalogue's, each hosted by its owner.
        if (served === undefined || init.processes === undefined) return served?.merchants;
        return catalogue.tenantConfig(tenant)?.merchants.map((merchant) => merchant.id) ?? [];
      },
      // In a cell of several processes, the process that should own a new merchant claims it at its next round.
      hostMerchant: async (tenant, merchant) => (init.processes === undefined ? host.hostMerchant(tenant, merchant) : undefined),
      removeMerchant: async (tenant, merchant) => {
        // In a cell of several processes only its owner hosts it (and the others apply the removal as nothing).
        if (!host.hosts(tenant, merchant)) return;
        for (const agent of [...core.presence.agentsOf(tenant, merchant)]) agent.port.close(CloseCode.Forbidden, `merchant ${merchant} was removed`);
        host.releaseMerchant(tenant, merchant, undefined);
        // Its desk's writes already under way land before its desk is deleted, not after.
        await host.whenMerchantIdle(tenant, merchant);
      },
      tenantsChanged: () => {
        const stopPrevious = stopSweepers;
        stopSweepers = startSweepers(catalogue.tenants());
        void stopPrevious();
        advertiseTenants?.();
      },
    });
    let ready = false;
    let shuttingDown = false;
    const readiness = (): Readiness => (shuttingDown || core.isDraining ? 'draining' : ready ? 'ready' : 'starting');
    const isReady = (): boolean => readiness() === 'ready';
    // In a cell of several processes, each process erases the conversations of the merchants it owns.
    const speaker = init.mesh === undefined ? undefined : init.speaker;
    // In a mesh the processes reach each other over the internal channel (an erasure another cell asked carries no admin token).
    const erasure = new CustomerErasure({ store, core, attachments, audit, logger, processes: init.processes === undefined ? undefined : erasureProcessesOf(init.processes, speaker?.owners) });
    if (speaker !== undefined) {
      // The core reaches the mesh through the speaker, wherever it is, from the start.
      core.attachCluster(erasure.attach(speaker.port, () => speaker.port.homes.otherCells()));
      core.redirects.attach(speaker.port.homes);
      // Every process counts its own core's cross-cell traffic.
      metrics.collectCrossCellStats(() => core.crossCellStats());
      metrics.collectClosure(() => core.closure());
    }
    const endpoints = await init.devices.open({ core, metrics, people, audit, attachments, catalogue, erasure, readiness });
    started.push(() => init.devices.stopAccepting());
    if (init.processes !== undefined) {
      const coordinator = init.processes;
      // In a mesh, the cell's merchants are those it claims, read again each round: moves change them.
      const listed = init.mesh === undefined ? undefined : new MerchantClaimsStore(store);
      const merchants = listed === undefined ? () => merchantsOf(catalogue) : async () => claimedMerchantsOf(listed, catalogue);
      const cellWide = init.cellWideCatalogue;
      await coordinator.startOwning(endpoints.process ?? endpoints, ownedMerchantsHost(core, host), merchants, cellWide === undefined ? undefined : () => cellWide.followRound(() => catalogue.followStore()));
      started.push(() => coordinator.stop());
    }
    let cluster: AssembledMesh<Transport> | undefined;
    let stopping: Promise<void> | undefined;
    /** A speaker's join of the mesh under way: a stop waits for it, then leaves the mesh as usual. */
    let joiningMesh: Promise<void> = Promise.resolve();
    const joining: JoiningCell = { core, host, catalogue, tenants, metrics, endpoints, hosted, claims: claims as MerchantClaimsStore, erasure, started };
    const joined = (assembled: AssembledMesh<Transport>): void => {
      cluster = assembled;
      advertiseTenants = () =>
        void assembled.mesh.updateOwnRecord({ tenants: core.servedTenants().map((tenant) => tenant.id) }).catch((error: unknown) => logger.warn({ err: error }, 'could not update the tenants of the cell\'s record'));
    };
    if (init.mesh !== undefined && speaker === undefined) joined(await joinMesh(init, init.mesh, joining));
    if (init.mesh !== undefined && speaker !== undefined && init.processes !== undefined) {
      const meshPorts = init.mesh;
      const dispatch = speakerDispatchOf(init.processes, speaker, core);
      await speaker.port.start();
      started.push(() => speaker.port.stop());
      // The speaker lease may come at any time: the mesh joins then, on the core as it runs.
      const coordinator = init.processes;
      void speaker.whenSpeaker.then(() => {
        if (stopping !== undefined) return;
        joiningMesh = (async () => {
          logger.info({ cell: cellId }, 'this process speaks for the cell: joining the mesh');
          const assembled = await joinMesh(init, meshPorts, joining, { port: speaker.port, dispatch, coordinator });
          joined(assembled);
          speaker.joined(assembled);
        })().catch((error: unknown) => speaker.failed(error));
      });
    }
    ready = true;

    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        // Not ready first, while the probes can still ask: new devices are refused from the
        // drain on, so the listen socket stays open until the devices are closed.
        shuttingDown = true;
        await joiningMesh;
        if (cluster === undefined) await core.drain();
        else {
          cluster.stopPublishingLoad();
          await cluster.mesh.leave({ drain: () => core.drain() }).catch((error: unknown) => logger.warn({ err: error }, 'leaving the mesh gracefully failed; stopping anyway'));
        }
        init.devices.stopAccepting();
        await unwind();
      })();
      return stopping;
    };
    return {
      cellId,
      core,
      metrics,
      people,
      audit,
      catalogue,
      endpoints,
      get cluster() {
        return cluster;
      },
      isReady,
      stop,
    };
  } catch (error) {
    await unwind();
    throw error;
  }
}

/** A process of a cell of several processes joining the mesh as its speaker. */
interface Speaking {
  readonly port: ProcessClusterPort;
  readonly dispatch: SpeakerDispatch;
  readonly coordinator: ProcessCoordinator;
}

/** How long the speaker waits for a merchant's owner to hand it over before it moves the merchant out. */
const ACQUIRE_FOR_MOVE_TIMEOUT_MS = 15_000;

/** The merchants a cell in a mesh claims now, read from its store. */
async function claimedMerchantsOf(claims: MerchantClaimsStore, catalogue: TenantCatalogue): Promise<MerchantRef[]> {
  await claims.load();
  return claims.hosted(catalogue.tenants()).map(({ tenant, merchant }) => ({ tenant, merchant }));
}

/** The speaker's dispatch: entries and requests to the process that owns their merchant, this one's through its port. */
function speakerDispatchOf(coordinator: ProcessCoordinator, speaker: SpeakerInit, core: CellCore): SpeakerDispatch {
  return new SpeakerDispatch({
    placement: (tenant, merchant) => coordinator.placement(tenant, merchant),
    siblings: () => coordinator.liveSiblings(),
    owners: speaker.owners,
    local: {
      forward: (source, entries) => speaker.port.applyForwarded(source, entries),
      request: (from, protocol, data) => speaker.port.serve(from, protocol, data),
      localUsers: (tenant, users, asker) => core.localUsers(tenant, users, asker),
    },
  });
}

interface JoiningCell {
  readonly core: CellCore;
  /** The core's moves, with the merchant's people and blocks following it. */
  readonly host: MoveHost;
  readonly catalogue: TenantCatalogue;
  /** Every tenant served, of the config and of the admin API. */
  readonly tenants: readonly TenantConfig[];
  readonly metrics: CellMetrics;
  readonly endpoints: DeviceEndpoints;
  readonly hosted: readonly HostedMerchant[];
  readonly claims: MerchantClaimsStore;
  readonly erasure: CustomerErasure;
  /** Where each started part registers how it stops. */
  readonly started: StopStep[];
}

/** Starts the cell's mesh services on one transport, advertising its endpoints, tenants and merchants. */
async function joinMesh<Transport extends MeshTransport>(init: CellAssemblyInit<Transport>, ports: MeshPorts<Transport>, cell: JoiningCell, speaking?: Speaking): Promise<AssembledMesh<Transport>> {
  const { cellId, clock, store, logger } = init;
  const { transport, signer } = await ports.createTransport();
  const { core, metrics, started } = cell;
  const random = ports.random ?? init.random;
  try {
    await transport.start();
  } catch (error) {
    throw new AssemblyError('MESH_START_FAILED', `the mesh transport did not start: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  started.push(() => transport.stop());
  const mesh = new CellMesh({
    cellId,
    transport,
    clock,
    random,
    store,
    signer,
    record: {
      endpoints: { ...cell.endpoints, p2p: transport.addresses() },
      tenants: cell.tenants.map((tenant) => tenant.id),
      // Merchants named in the config are claimed at epoch 0; a move or a placement claims a higher epoch.
      ...recordClaims(cell.hosted, cell.claims),
      load: { devices: 0, messagesPerSecond: 0 },
      capacity: { maxDevices: ports.maxDevices ?? 100_000 },
    },
    operatorKeys: ports.operatorKeys ?? [],
    bootstrap: ports.bootstrap,
    ...(ports.options === undefined ? {} : { options: ports.options }),
    ...(ports.preset === undefined ? {} : { preset: ports.preset }),
    metrics: meshMetricsOn(init.metrics),
    logger,
  });
  // Requests (outbox, handover, history) go to cells this one may not be connected to yet: the
  // transport can dial them only if it knows their addresses, which the directory has.
  started.push(
    mesh.directory.onChange((_cellId, _before, after) => {
      if (after !== undefined && after.record.peerId !== transport.self) transport.addPeerAddresses(after.record.peerId, after.record.endpoints.p2p);
    }),
  );
  await mesh.start();
  started.push(() => mesh.stop());
  // Devices and requests for merchants that live elsewhere are redirected to their home (a
  // process of a cell of several processes attached the speaker's homes at start).
  if (speaking === undefined) core.redirects.attach(homeDirectoryOf(mesh.directory));
  // Customers who left messages here while their merchant's home was down go to it once it serves.
  started.push(onHomesServing(mesh.directory, cellId, (merchants) => core.homesServing(merchants)));
  const services = await startCrossCellServices({
    cellId,
    core,
    transport,
    // Sends for a merchant whose home left wait for it (leave-a-message mode) rather than being refused.
    directory: relayDirectoryOf(mesh.directory),
    clock,
    random,
    store,
    maxFrameBytes: init.limits.maxFrameBytes,
    metrics: init.metrics,
    outbox: ports.outbox,
    erasure: cell.erasure,
    ...(speaking === undefined
      ? {}
      : {
          // The core attached to the process's port at start: that port speaks through these services from now on.
          attach: (clusterPort: ClusterPort) => speaking.port.speak({ port: clusterPort, homes: liveHomesView(mesh.directory, cellId), forward: (source, entries) => speaking.dispatch.forward(source, entries), request: (from, protocol, data) => speaking.dispatch.request(from, protocol, data) }),
          localUsers: (tenant: string, users: readonly string[], asker: string) => speaking.dispatch.localUsers(tenant, users, asker),
        }),
  });
  started.push(() => services.stop());
  const { location, outbox, inbox, clusterPort } = services;
  const cellOfPeer = (peer: string): string | undefined => mesh.directory.cellOfPeer(peer);
  // A cell coming back (after a partition or a restart) gets its waiting entries at once, not after the outbox's backoff.
  started.push(
    mesh.onPeerConnected((peer) => {
      const target = cellOfPeer(peer);
      if (target !== undefined) outbox.nudge(target);
    }),
  );
  const loadTimer = publishLoadPeriodically(mesh, clock, { devices: () => core.presence.connections, messagesTotal: () => metrics.messagesInTotal() }, (error) =>
    logger.warn({ err: error }, 'publishing the load failed'),
  );
  started.push(() => loadTimer.cancel());
  // Leaving changes the record itself: no load update may race it.
  const stopPublishingLoad = (): void => loadTimer.cancel();

  if (speaking === undefined) {
    metrics.collectCrossCellStats(() => core.crossCellStats());
    metrics.collectClosure(() => core.closure());
  }
  const merchantClaims = meshMerchantClaims(mesh, cell.claims);
  cell.catalogue.attachClaims(catalogueClaimsOf(mesh, cell.claims));
  // A merchant moving in may bring its tenant, which this cell then serves before hosting it. In
  // a cell of several processes the speaker owns it first (before any other process could claim
  // it), and owner assignment spreads it at a later round.
  const host: MoveHost = {
    ...cell.host,
    hostMerchant: async (tenant, merchant) => {
      await cell.catalogue.merchantMovedIn(tenant, merchant);
      await speaking?.coordinator.adopt(tenant, merchant);
      await cell.host.hostMerchant(tenant, merchant);
    },
  };
  const coordinator = speaking?.coordinator;
  // A merchant of the cell moves out from the speaker: its owner hands it over first.
  const acquire =
    coordinator === undefined
      ? undefined
      : async (tenant: string, merchant: string): Promise<() => Promise<void>> =>
          coordinator.isCellMerchant(tenant, merchant) ? coordinator.acquire(tenant, merchant, ACQUIRE_FOR_MOVE_TIMEOUT_MS) : async () => undefined;
  const mover = new MerchantMover({ cellId, store, cluster: clusterPort, clock, logger, host, claims: merchantClaims, acquire });
  const placement: PlacementComponents = { cellId, operatorKeys: ports.operatorKeys ?? [], directory: mesh.directory, host, claims: merchantClaims, logger };
  return { mesh, transport, location, outbox, inbox, mover, placement, stopPublishingLoad };
}

/**
 * A merchant's people follow it: read from the copied keys when it moves in (before its claim is
 * gossiped, so its agents find themselves at the new home), forgotten when it moves out. So do
 * its blocks of customers (read again: those held here from an earlier stay may be stale).
 */
function peopleFollowMoves(host: MoveHost, people: PeopleDirectory, blocks: CustomerBlocks, logger: Logger): MoveHost {
  return {
    ...host,
    hostMerchant: async (tenant, merchant) => {
      // Read first, so the core (and its desk) find the agents as soon as they host the merchant.
      // The claim is durable already: a failed read must not undo the move; a restart reads them.
      await people.reloadMerchant(tenant, merchant).catch((error: unknown) => logger.error({ err: error, tenant, merchant }, 'could not read the agents of a merchant that moved in'));
      blocks.reloadMerchant(tenant, merchant);
      await host.hostMerchant(tenant, merchant);
    },
    releaseMerchant: (tenant, merchant, newHome) => {
      host.releaseMerchant(tenant, merchant, newHome);
      people.forgetMerchant(tenant, merchant);
    },
  };
}
