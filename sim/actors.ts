import { CellmeshClient } from '../client/client.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import type { Random } from '../platform/random.js';
import { DeviceLink, SimClientTransport, type DeviceNetwork } from './device-link.js';
import type { History } from './history.js';
import { stream } from './rng.js';
import type { SimClock } from './sim-clock.js';
import { mintTokenSync } from './sim-keys.js';

export interface ActorHost {
  readonly clock: SimClock;
  readonly seed: number;
  readonly history: History;
  readonly deviceNetwork: DeviceNetwork;
  readonly tenant: string;
  readonly secret: string;
  /** Token lifetime: longer than the run, so tokens never expire in it. */
  readonly tokenTtlSeconds: number;
  /** Client errors by code (transport failures, unfillable gaps...), for the report. */
  readonly clientErrors: Map<string, number>;
  /** Devices whose client stopped for good without being asked to. */
  deviceStopped(device: DeviceActor, reason: string): void;
}

export interface DeviceIdentity {
  readonly user: string;
  readonly role: 'customer' | 'agent';
  readonly merchant?: string;
  readonly device: string;
}

/**
 * One simulated device: the client SDK's own CellmeshClient on the simulator's transport, clock
 * and a random stream of its own. It records what the application would see (messages,
 * receipts, acks) in the history. Its owner (a customer or an agent) decides what it sends.
 */
export class DeviceActor {
  readonly key: string;
  client: CellmeshClient | undefined;
  /** The cell the device connects to. */
  cellId: string;
  /** Highest seq delivered per conversation (mirrors the history's view, for reads). */
  readonly lastSeq = new Map<string, number>();
  onMessage: ((device: DeviceActor, message: ChatMessage) => void) | undefined;
  private generation = 0;
  private cmidCount = 0;
  private link: DeviceLink | undefined;
  private stopping = false;

  constructor(
    private readonly host: ActorHost,
    readonly identity: DeviceIdentity,
    readonly serial: number,
    cellId: string,
  ) {
    this.key = `${identity.user}/${identity.device}`;
    this.cellId = cellId;
    const registration = identity.merchant === undefined ? { user: identity.user, role: identity.role } : { user: identity.user, role: identity.role, merchant: identity.merchant };
    host.history.registerDevice(this.key, registration);
  }

  get isOpen(): boolean {
    return this.client?.state === 'open';
  }

  /** Starts a client on `cellId`, resuming from the cursors of the previous client, if any. */
  connect(cellId: string): void {
    const { host } = this;
    const previous = this.client;
    const initialCursors = previous?.cursors();
    this.cellId = cellId;
    this.stopping = false;
    const generation = ++this.generation;
    const { user, role, merchant, device } = this.identity;
    const token = mintTokenSync(host.secret, merchant === undefined ? { tenant: host.tenant, user, role, device } : { tenant: host.tenant, user, role, merchant, device }, host.clock.now(), host.tokenTtlSeconds);
    const transport = new SimClientTransport(host.deviceNetwork);
    const client = new CellmeshClient({
      url: `ws://${cellId}.sim/v1/ws`,
      token,
      transport: {
        connect: (url, protocols, listener) => {
          const link = transport.connect(url, protocols, listener) as DeviceLink;
          this.link = link;
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
    client.on('state', (change) => {
      if (this.client !== client || this.stopping) return;
      if (change.state === 'closed' || change.state === 'replaced') host.deviceStopped(this, `${change.state}: ${change.error?.code ?? ''} ${change.error?.message ?? ''}`);
    });
    client.connect().catch(() => undefined);
  }

  /** Closes the client on purpose (the device goes away, or moves to another cell). */
  close(): Promise<void> {
    this.stopping = true;
    return this.client?.close() ?? Promise.resolve();
  }

  /** Moves the device to another cell: a new client there, resuming from this one's cursors. */
  moveTo(cellId: string): void {
    const old = this.client;
    this.stopping = true;
    void old?.close();
    this.connect(cellId);
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
  send(conv: string, body: string, context: { inCell: boolean; duringPartition: boolean; group?: string | undefined }): void {
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
