import { CellmeshClient } from '../client/client.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import type { Random } from '../platform/random.js';
import { DeviceLink, SimClientTransport, type DeviceNetwork } from './device-link.js';
import type { History } from './history.js';
import { stream } from './rng.js';
import type { SimClock } from './sim-clock.js';
import { FRONT_DOOR_URL, type SimHttp } from './sim-http.js';
import { mintTokenSync } from './sim-keys.js';

export interface ActorHost {
  readonly clock: SimClock;
  readonly seed: number;
  readonly history: History;
  readonly deviceNetwork: DeviceNetwork;
  /** Route requests go over it to the front door (sim/sim-http.ts). */
  readonly http: SimHttp;
  readonly tenant: string;
  readonly secret: string;
  /** Token lifetime: longer than the run, so tokens never expire in it. */
  readonly tokenTtlSeconds: number;
  /** Client errors by code (transport failures, unfillable gaps...), for the report. */
  readonly clientErrors: Map<string, number>;
  /** Devices whose client stopped for good without being asked to. */
  deviceStopped(device: DeviceActor, reason: string): void;
  /** A device's session opened on another cell than its previous session's (it followed a move or a redirect). */
  deviceSwitchedCell(device: DeviceActor): void;
}

export interface DeviceIdentity {
  readonly user: string;
  readonly role: 'customer' | 'agent';
  readonly merchant?: string;
  readonly device: string;
}

/**
 * One simulated device: the client SDK's own CellmeshClient in route mode (docs/routing.md,
 * "SDK") on the simulator's transport, HTTP, clock and a random stream of its own: it asks the
 * front door for its merchant's home before every attempt and follows the cells' redirects by
 * itself. It records what the application would see (messages, receipts, acks, queued sends) in
 * the history. Its owner (a customer or an agent) decides what it sends.
 */
export class DeviceActor {
  readonly key: string;
  client: CellmeshClient | undefined;
  /** The cell of the device's latest connection attempt (where its routing took it). */
  cellId: string;
  /** The merchant its client is routed for: an agent's own, the one a customer came for. */
  routedFor: string;
  /** Highest seq delivered per conversation (mirrors the history's view, for reads). */
  readonly lastSeq = new Map<string, number>();
  onMessage: ((device: DeviceActor, message: ChatMessage) => void) | undefined;
  private generation = 0;
  private cmidCount = 0;
  private link: DeviceLink | undefined;
  private stopping = false;
  /** The cell of the last session, to tell when the device switched cells. */
  private sessionCell: string | undefined;
  /** The device's address, as the cells' per-address route budget sees it. */
  private readonly address: string;

  constructor(
    private readonly host: ActorHost,
    readonly identity: DeviceIdentity,
    readonly serial: number,
    routedFor: string,
    /** Where the merchant lives as far as the simulator knows: the device's cell until it connects. */
    cellId: string,
  ) {
    this.key = `${identity.user}/${identity.device}`;
    this.routedFor = routedFor;
    this.cellId = cellId;
    this.address = `10.${(serial >> 16) & 255}.${(serial >> 8) & 255}.${serial & 255}`;
    const registration = identity.merchant === undefined ? { user: identity.user, role: identity.role } : { user: identity.user, role: identity.role, merchant: identity.merchant };
    host.history.registerDevice(this.key, registration);
  }

  get isOpen(): boolean {
    return this.client?.state === 'open';
  }

  /** Starts a client routed for `routedFor` (by default the same merchant), resuming from the cursors of the previous client, if any. */
  connect(routedFor: string = this.routedFor): void {
    const { host } = this;
    const previous = this.client;
    const initialCursors = previous?.cursors();
    this.routedFor = routedFor;
    this.stopping = false;
    const generation = ++this.generation;
    const { user, role, merchant, device } = this.identity;
    const token = mintTokenSync(host.secret, merchant === undefined ? { tenant: host.tenant, user, role, device } : { tenant: host.tenant, user, role, merchant, device }, host.clock.now(), host.tokenTtlSeconds);
    const transport = new SimClientTransport(host.deviceNetwork);
    const client = new CellmeshClient({
      route: { url: FRONT_DOOR_URL, tenant: host.tenant, merchant: routedFor },
      fetch: host.http.fetchFor(this.address),
      token,
      transport: {
        connect: (url, protocols, listener) => {
          const link = transport.connect(url, protocols, listener) as DeviceLink;
          this.link = link;
          if (this.client === client) this.cellId = new URL(url).hostname.split('.')[0] ?? this.cellId;
          return link;
        },
      },
      clock: host.clock,
      random: stream(host.seed, `client/${this.key}/${generation}`),
      ...(initialCursors === undefined ? {} : { initialCursors }),
    });
    this.client = client;
    client.on('message', (message) => {
      if (this.client !== client) return;
      this.lastSeq.set(message.conv, message.seq);
      host.history.delivered(this.key, message, host.clock.now());
      this.onMessage?.(this, message);
    });
    client.on('receipt', (receipt) => {
      if (this.client === client) host.history.receipt(this.key, receipt, host.clock.now());
    });
    client.on('error', (error) => {
      host.clientErrors.set(error.code, (host.clientErrors.get(error.code) ?? 0) + 1);
    });
    client.on('queued', (queued) => {
      if (this.client === client) host.history.queued(queued.conv, this.identity.user, queued.cmid, host.clock.now());
    });
    client.on('state', (change) => {
      if (this.client !== client) return;
      const cell = change.session?.cell;
      if (change.state === 'open' && cell !== undefined) {
        if (this.sessionCell !== undefined && this.sessionCell !== cell) host.deviceSwitchedCell(this);
        this.sessionCell = cell;
      }
      if (this.stopping) return;
      if (change.state === 'closed' || change.state === 'replaced') host.deviceStopped(this, `${change.state}: ${change.error?.code ?? ''} ${change.error?.message ?? ''}`);
    });
    client.connect().catch(() => undefined);
  }

  /** Closes the client on purpose (the device goes away, or moves to another cell). */
  close(): Promise<void> {
    this.stopping = true;
    return this.client?.close() ?? Promise.resolve();
  }

  /** Routes the device for another merchant: a new client, resuming from this one's cursors. */
  routeFor(merchant: string): void {
    const old = this.client;
    this.stopping = true;
    void old?.close();
    this.connect(merchant);
  }

  /** The network between the device and its cell fails: the connection drops, the SDK reconnects. */
  flap(): void {
    if (this.link?.isOpen === true) this.link.breakByNetwork();
  }

  /**
   * Sends `body` to `conv` through the SDK and reports the outcome. `inCell` and
   * `duringPartition` classify the send for the autonomy check; `group` is the desk group a
   * customer names.
   */
  send(conv: string, body: string, context: { inCell: boolean; duringPartition: boolean; group?: string | undefined; outageOf?: string | undefined }): void {
    const client = this.client;
    if (client === undefined) return;
    const cmid = `${this.serial.toString(36)}-${(this.cmidCount++).toString(36)}`;
    const { history, clock } = this.host;
    const key = history.sendCalled({
      device: this.key,
      conv,
      from: this.identity.user,
      cmid,
      body,
      atMs: clock.now(),
      inCell: context.inCell,
      duringPartition: context.duringPartition,
      senderOpen: client.state === 'open',
      cellId: this.cellId,
      group: context.group,
      outageOf: context.outageOf,
    });
    client.send(conv, body, context.group === undefined ? { cmid } : { cmid, group: context.group }).then(
      (result) => history.acked(key, result.seq, clock.now()),
      (error: unknown) => history.sendFailed(key, (error as { code?: string }).code ?? 'UNKNOWN'),
    );
  }

  /** Marks `conv` read up to what this device has. */
  read(conv: string): void {
    const seq = this.lastSeq.get(conv);
    if (seq === undefined || this.client === undefined) return;
    this.client.read(conv, seq).catch(() => undefined);
  }
}

/** Draws a delay uniformly from [minMs, maxMs]. */
export function uniformMs(random: Random, minMs: number, maxMs: number): number {
  return Math.round(minMs + random.next() * (maxMs - minMs));
}
