import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { ClusterEntry, ClusterForwardHandler, ClusterForwardedEntry, ClusterPort, ClusterRequestHandler, ClusterRequestOptions } from '../messaging/cluster-port.js';
import type { MerchantHome } from '../protocol/frames.js';
import { EMPTY_HOMES, homesViewOf, type HomesView, type LocationHint, type SpeakerChannel } from './speaker-channel.js';

export interface ProcessClusterPortInit {
  readonly cellId: string;
  /** The way to the speaker while this process does not speak. */
  readonly channel: SpeakerChannel;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How often a process that does not speak copies the homes from the speaker: their staleness bound. */
  readonly refreshIntervalMs: number;
}

/** The mesh side of the speaker, once this process speaks. */
export interface SpeakingSide {
  /** The cluster port of the mesh services (mesh/cluster-port-adapter.ts). */
  readonly port: ClusterPort;
  /** The homes, live from the mesh's directory. */
  readonly homes: HomesView;
  /** Sends each forwarded entry and request on to the process that owns its merchant (SpeakerDispatch). */
  forward(sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void>;
  request(fromCellId: string, protocol: string, data: Uint8Array): Promise<Uint8Array>;
}

/**
 * The cluster port of a process of a cell of several processes in a mesh (docs/operations.md,
 * "In a mesh: owners spread, one speaker"). The core attaches to it once, at start; whether this
 * process speaks for the cell is this port's business: while it does not, every call goes to the
 * speaker over the internal channel and the homes are a copy pulled from it each round; once it
 * speaks (`speak`), calls go to the mesh services here, and the entries and requests other cells
 * send arrive through the speaker's dispatch. Either way the core's own handlers (forwarded
 * entries, history requests) are held here, and run when the dispatch names this process.
 */
export class ProcessClusterPort implements ClusterPort {
  readonly selfCellId: string;
  private speaking: SpeakingSide | undefined;
  private copy: HomesView;
  private digest: string | undefined;
  private leftCells = new Set<string>();
  private forwardHandler: ClusterForwardHandler | undefined;
  private readonly requestHandlers = new Map<string, ClusterRequestHandler>();
  private readonly goneListeners: Array<(cellId: string) => void> = [];
  private timer: TimerHandle | undefined;
  private stopped = false;
  private refreshFailed = false;

  constructor(private readonly init: ProcessClusterPortInit) {
    this.selfCellId = init.cellId;
    this.copy = homesViewOf(EMPTY_HOMES, init.cellId);
  }

  /**
   * The homes as the core's redirects read them: live at the speaker, a copy elsewhere. A new
   * speaker's directory knows no other cell until gossip reaches it: until it names a merchant's
   * home, the copy it took while it did not speak (a round old at most then) answers.
   */
  readonly homes: HomesView = {
    relayHomeOf: (tenant, merchant) => this.speaking?.homes.relayHomeOf(tenant, merchant) ?? this.copy.relayHomeOf(tenant, merchant),
    homeOf: (tenant, merchant): MerchantHome | undefined => this.speaking?.homes.homeOf(tenant, merchant) ?? this.copy.homeOf(tenant, merchant),
    homeIsDown: (tenant, merchant) => (this.speaking !== undefined && this.speaking.homes.relayHomeOf(tenant, merchant) !== undefined ? this.speaking.homes : this.copy).homeIsDown(tenant, merchant),
    endpointsOf: (cellId) => this.speaking?.homes.endpointsOf(cellId) ?? this.copy.endpointsOf(cellId),
    otherCells: () => (this.speaking === undefined ? this.copy : this.speaking.homes).otherCells(),
  };

  /** Starts copying the homes from the speaker, one round now. */
  async start(): Promise<void> {
    await this.refresh();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /** The mesh services' cluster port once this process speaks; undefined before. */
  meshPort(): ClusterPort | undefined {
    return this.speaking?.port;
  }

  /** True once this process speaks for the cell. */
  isSpeaking(): boolean {
    return this.speaking !== undefined;
  }

  /**
   * This process speaks for the cell from now on: the mesh's entries and requests are dispatched
   * to their owners, its gone cells told to the core. Once only (a speaker that loses the lease ends).
   */
  speak(side: SpeakingSide): void {
    if (this.speaking !== undefined) throw new Error('this process speaks for the cell already');
    this.speaking = side;
    this.timer?.cancel();
    side.port.onCellGone((cellId) => this.cellGone(cellId));
    side.port.onForward((source, entries) => side.forward(source, entries));
    for (const protocol of this.requestHandlers.keys()) side.port.handle(protocol, (from, data) => side.request(from, protocol, data));
  }

  /** Applies entries forwarded by another cell to the merchants this process owns (the core's handler). */
  applyForwarded(sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    if (this.forwardHandler === undefined) return Promise.reject(new Error('the core has not attached to the cluster yet'));
    return this.forwardHandler(sourceCellId, entries);
  }

  /** Answers a request of another cell about a merchant this process owns (the core's handler). */
  serve(fromCellId: string, protocol: string, data: Uint8Array): Promise<Uint8Array> {
    const handler = this.requestHandlers.get(protocol);
    if (handler === undefined) return Promise.reject(new Error(`no handler of ${protocol}`));
    return handler(fromCellId, data);
  }

  // -- ClusterPort ------------------------------------------------------------------------------

  homeCellOf(tenant: string, merchant: string): string | undefined {
    return this.speaking?.port.homeCellOf(tenant, merchant) ?? this.copy.relayHomeOf(tenant, merchant);
  }

  locate(tenant: string, user: string, options?: { signal?: AbortSignal }): Promise<string[]> {
    return this.speaking === undefined ? this.init.channel.locate(tenant, user) : this.speaking.port.locate(tenant, user, options);
  }

  forget(tenant: string, user: string, cellId: string): void {
    if (this.speaking !== undefined) this.speaking.port.forget(tenant, user, cellId);
    else this.tell({ kind: 'forget', tenant, user, cellId });
  }

  remember(tenant: string, user: string, cellId: string): void {
    if (this.speaking !== undefined) this.speaking.port.remember(tenant, user, cellId);
    else this.tell({ kind: 'remember', tenant, user, cellId });
  }

  invalidate(tenant: string, user: string): void {
    if (this.speaking !== undefined) this.speaking.port.invalidate(tenant, user);
    else this.tell({ kind: 'invalidate', tenant, user });
  }

  userArrived(tenant: string, user: string): void {
    if (this.speaking !== undefined) this.speaking.port.userArrived(tenant, user);
    else this.tell({ kind: 'userArrived', tenant, user });
  }

  enqueue(destinationCellId: string, entries: readonly ClusterEntry[]): Promise<void> {
    return this.speaking === undefined ? this.init.channel.enqueue(destinationCellId, entries) : this.speaking.port.enqueue(destinationCellId, entries);
  }

  onCellGone(listener: (cellId: string) => void): void {
    this.goneListeners.push(listener);
  }

  onForward(handler: ClusterForwardHandler): void {
    this.forwardHandler = handler;
  }

  request(cellId: string, protocol: string, data: Uint8Array, options: ClusterRequestOptions): Promise<Uint8Array> {
    return this.speaking === undefined ? this.init.channel.request(cellId, protocol, data, options.timeoutMs) : this.speaking.port.request(cellId, protocol, data, options);
  }

  handle(protocol: string, handler: ClusterRequestHandler): void {
    this.requestHandlers.set(protocol, handler);
    const side = this.speaking;
    if (side !== undefined) side.port.handle(protocol, (from, data) => side.request(from, protocol, data));
  }

  // ---------------------------------------------------------------------------------------------

  /** A hint the location cache can do without: a lost one costs a broadcast later, never a message. */
  private tell(hint: LocationHint): void {
    void this.init.channel.tell(hint).catch((error: unknown) => this.init.logger.debug({ err: error, hint: hint.kind }, 'a location hint did not reach the speaker'));
  }

  private cellGone(cellId: string): void {
    for (const listener of this.goneListeners) listener(cellId);
  }

  private schedule(): void {
    if (this.stopped || this.speaking !== undefined) return;
    this.timer = this.init.clock.setTimer(this.init.refreshIntervalMs, () => {
      void this.refresh().finally(() => this.schedule());
    });
  }

  private async refresh(): Promise<void> {
    if (this.stopped || this.speaking !== undefined) return;
    try {
      const answer = await this.init.channel.homes(this.digest);
      this.refreshFailed = false;
      if (answer.snapshot === undefined || this.speaking !== undefined) return;
      this.digest = answer.digest;
      this.copy = homesViewOf(answer.snapshot, this.selfCellId);
      const left = new Set(answer.snapshot.cells.filter((cell) => cell.left).map((cell) => cell.cellId));
      for (const cellId of left) if (!this.leftCells.has(cellId)) this.cellGone(cellId);
      this.leftCells = left;
    } catch (error) {
      // No speaker right now (failing over): the copy stays as it was; said once per outage.
      if (!this.refreshFailed) this.init.logger.info({ err: error }, 'could not copy the homes from the speaker; keeping the last copy');
      this.refreshFailed = true;
    }
  }
}
