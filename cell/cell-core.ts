import type { Clock } from '../platform/clock.js';
import { randomId, type Random } from '../platform/random.js';
import { signingKeysOf, verifyToken, type Identity, type SigningKey } from './access/tokens.js';
import { DeskConfig, type LimitsConfig, type TenantConfig } from './settings.js';
import type { Logger } from '../platform/logger.js';
import type { ClusterPort } from './messaging/cluster-port.js';
import { ConversationLog, type AppendRequest, type AppendResult } from './messaging/conversation-log.js';
import { CrossCellRelay } from './messaging/cross-cell.js';
import type { CrossCellHost, CrossCellSettings, CrossCellStats } from './messaging/cross-cell-settings.js';
import { DeliveryService } from './messaging/delivery.js';
import { DeviceConnection, type DevicePort } from './messaging/device.js';
import { MerchantFences } from './messaging/merchant-fences.js';
import { PresenceRegistry, type PresenceAnswer } from './messaging/presence.js';
import { customerPrincipal, parsePartyId, partyId, type Principal } from './messaging/principal.js';
import { newestWithinBytes, responseByteBudget } from './messaging/response-bytes.js';
import { readInbox } from './messaging/inbox.js';
import { answerError, type ErrorFrameHost } from './messaging/error-frames.js';
import { DeskService, NO_PEOPLE, type DeskPeople, type DeskSettings } from './desk/desk-service.js';
import { applyRelayedDeskAction, dispatchDeskFrame, tellTyping, type DeskFrameHost } from './desk/desk-frames.js';
import { CustomerBlocks, type BlocksAudit } from './desk/customer-blocks.js';
import type { RelayedSend } from './messaging/relayed-sends.js';
import type { MoveHost } from './move-host.js';
import { MerchantRedirects } from './routing/merchant-redirects.js';
import type { CellMetrics } from './metrics.js';
import { appendWithAttachments, notAcrossCells } from './attachments/index.js';
import { CellError, CloseCode, ErrorCode } from './protocol/errors.js';
import { operatingErrorOf, rateLimited, shuttingDown } from './protocol/operating-errors.js';
import {
  parseConversationId,
  type ChatMessage,
  type ClientFrame,
  type SendFrame,
  type ConversationSummary,
  type HistoryFrame,
  type PresenceFrame,
  type ServerFrame,
} from './protocol/frames.js';
import { parseClientFrame, requestIdOf } from './protocol/parse-client-frame.js';
import { welcomeFrame } from './protocol/welcome.js';
import { DeliveredReceipts } from './messaging/delivered-receipts.js';
import type { Store } from '../platform/store/store.js';

export interface CellCoreOptions {
  cellId: string;
  tenants: readonly TenantConfig[];
  limits: LimitsConfig;
  clock: Clock;
  random: Random;
  store: Store;
  metrics: CellMetrics;
  logger: Logger;
  /**
   * The cluster, for conversations whose merchant another cell hosts (cross-cell conversations,
   * docs/architecture.md); or attach it later with `attachCluster`. Without it the cell is
   * standalone and refuses them with MERCHANT_NOT_HOSTED.
   */
  cluster?: ClusterPort;
  /** Settings of cross-cell conversations (defaults: CROSS_CELL_DEFAULTS). */
  crossCell?: Partial<CrossCellSettings>;
  /**
   * The merchants' people and the desk's settings (docs/desk.md). A merchant without agents has
   * an open desk; without `desk`, every merchant does.
   */
  desk?: { people: DeskPeople; settings: DeskSettings; audit?: BlocksAudit };
}

/** A conversation's parties, and its home cell when another cell hosts it (undefined: this cell). */
interface Parties {
  merchant: string;
  customer: string;
  home: string | undefined;
}

interface TenantPolicy {
  keys: readonly SigningKey[];
  origins: ReadonlySet<string>;
  /** Hosted here now; a merchant moves in or out at runtime (merchant-move.ts). */
  merchants: Set<string>;
}

/** A send whose durable ack goes to the connection that asked, as soon as it is durable. */
type PendingAck = { connection: DeviceConnection; requestId: string | undefined; receivedAtMs: number };

const DEFAULT_HISTORY_LIMIT = 50;

/**
 * One business cell's core: authentication, authorisation, and the messaging operations behind
 * both the WebSocket and the HTTP API. It reaches the world only through its ports (clock,
 * random, store, device ports), so the same code runs under uWS and in the simulator.
 */
export class CellCore {
  readonly presence = new PresenceRegistry();
  private readonly tenants = new Map<string, TenantPolicy>();
  private readonly log: ConversationLog;
  private readonly delivery: DeliveryService;
  /** The service desks of the merchants hosted here. */
  readonly desk: DeskService;
  private readonly deskFrames: DeskFrameHost;
  readonly blocks: CustomerBlocks;
  /** Drops the cached heads of `tenant`'s conversations of `merchant` once their keys were deleted (customer-data.ts, retention-sweeper.ts). */
  readonly forgetConversations = (tenant: string, merchant: string): void => this.log.forgetMerchant(tenant, merchant);
  readonly settleReadCursors = (tenant: string, conv: string): Promise<void> => this.log.settleReads(tenant, conv);
  private readonly errorFrames: ErrorFrameHost;
  private relay: CrossCellRelay | undefined;
  private draining = false;
  /** Merchants being moved out, by tenant/merchant: writes to their conversations wait for these. */
  private readonly fences = new MerchantFences();
  /** Redirects to merchants' homes elsewhere; attach the cluster's directory with `redirects.attach`. */
  readonly redirects: MerchantRedirects;

  constructor(private readonly options: CellCoreOptions) {
    this.redirects = new MerchantRedirects(options.cellId);
    for (const tenant of options.tenants) this.tenants.set(tenant.id, { keys: signingKeysOf(tenant), origins: new Set(tenant.origins), merchants: new Set(tenant.merchants.map((merchant) => merchant.id)) });
    this.log = new ConversationLog({
      store: options.store,
      clock: options.clock,
      onDurable: (tenant, message, _first, sender, storedJson) => this.fanOut(tenant, message, sender as PendingAck | undefined, storedJson),
      onStoreWrite: (durationMs) => options.metrics.storeWriteLatency.observe(durationMs / 1000),
    });
    const { deliveryWindow, syncPageSize, maxBackpressureBytes, cursorWriteIntervalMs } = options.limits;
    const deliveryLimits = { deliveryWindow, syncPageSize, maxBackpressureBytes, cursorWriteIntervalMs };
    this.delivery = new DeliveryService(this.log, options.store, options.clock, options.metrics, options.logger, deliveryLimits, (connection, state, seq) => delivered.acked(connection, state, seq));
    const delivered = new DeliveredReceipts((tenant, conv) => this.participantsHere(tenant, conv), (tenant, customer) => this.presence.devicesOf(customerPrincipal(tenant, customer)), (devices, frame) => this.delivery.broadcast(devices, frame));
    this.desk = new DeskService({
      store: options.store,
      clock: options.clock,
      random: options.random,
      logger: options.logger,
      people: options.desk?.people ?? NO_PEOPLE,
      settings: options.desk?.settings ?? DeskConfig.parse({}),
      metrics: options.metrics.deskMetrics(() => this.desk.snapshot()),
      host: {
        append: (request) => this.appendForDesk(request),
        agentDevices: (tenant, merchant, agent) => this.presence.devicesOf({ tenant, role: 'agent', user: agent, merchant }),
        customerDevices: (tenant, customer) => this.presence.devicesOf(customerPrincipal(tenant, customer)),
        follow: (connection, conv) => this.delivery.follow(connection, conv),
        unfollow: (connection, conv) => this.delivery.unfollow(connection, conv),
        send: (connection, frame) => this.delivery.sendFrame(connection, frame),
        broadcast: (connections, frame) => this.delivery.broadcast(connections, frame),
        tellElsewhere: (tenant, view) => this.relay?.consultationChanged(tenant, view),
        tellPositionElsewhere: (tenant, view) => this.relay?.queuePosition(tenant, view),
        closeDevice: (connection, reason) => connection.port.close(CloseCode.Forbidden, reason),
      },
    });
    const authorize = (identity: Identity, conv: string): Parties => this.authorizeAtDesk(identity, conv);
    this.blocks = new CustomerBlocks({ store: options.store, clock: options.clock, audit: options.desk?.audit, preload: options.tenants.flatMap((tenant) => tenant.merchants.map((merchant) => ({ tenant: tenant.id, merchant: merchant.id }))) });
    this.deskFrames = {
      desk: this.desk,
      blocks: this.blocks,
      clock: options.clock,
      presence: this.presence,
      authorize,
      send: (device, frame) => this.delivery.sendFrame(device, frame),
      typingElsewhere: (tenant, conv, user, role, home) => this.relay?.typing(tenant, conv, user, role, home),
      deskElsewhere: (identity, home, conv, action, requester) => this.relay!.relayDeskAction(identity, home, conv, action, requester),
    };
    this.errorFrames = { clock: options.clock, logger: options.logger, metrics: options.metrics, send: (device, frame) => this.delivery.sendFrame(device, frame), disconnect: (device) => this.disconnect(device) };
    if (options.cluster !== undefined) this.attachCluster(options.cluster);
  }

  /** Opens the desks of the merchants hosted here (after the store opened and the people loaded). */
  async loadDesks(): Promise<void> {
    for (const [tenant, policy] of this.tenants) for (const merchant of policy.merchants) await this.desk.openMerchant(tenant, merchant);
  }

  /**
   * Joins the cell to its cluster: from now on it serves cross-cell conversations, and it
   * registers its handlers of forwarded entries and history requests on `cluster` at once
   * (entries arriving before are refused and retried by their source). Once only.
   */
  attachCluster(cluster: ClusterPort): void {
    if (this.relay !== undefined) throw new Error('the cell is attached to a cluster already');
    const { options } = this;
    this.relay = new CrossCellRelay({
      cluster,
      log: this.log,
      store: options.store,
      clock: options.clock,
      logger: options.logger,
      host: this.crossCellHost(),
      ...(options.crossCell === undefined ? {} : { settings: options.crossCell }),
    });
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Verifies a bearer token against its tenant's secrets. */
  authenticate(token: string | undefined): Identity {
    if (token === undefined || token === '') {
      throw new CellError(ErrorCode.Unauthenticated, 'a token is required (query parameter `token` or `Authorization: Bearer`)');
    }
    const identity = verifyToken(token, (tenant) => this.tenants.get(tenant)?.keys, this.options.clock.now());
    this.desk.requireKnownAgent(identity);
    return identity;
  }

  /**
   * Decides whether a verified identity may open a WebSocket from `origin`, routed for
   * `routedFor` (a customer's `merchant` URL parameter); answers the merchant it is routed for.
   */
  admit(identity: Identity, origin: string | undefined, routedFor?: string): string | undefined {
    if (this.draining) throw new CellError(ErrorCode.ShuttingDown, 'the cell is shutting down; reconnect shortly');
    const tenant = this.tenantOf(identity);
    if (origin !== undefined && origin !== '' && !tenant.origins.has(origin)) {
      throw new CellError(ErrorCode.OriginForbidden, `origin ${origin} is not allowed for tenant ${identity.tenant}`);
    }
    const routed = this.redirects.admitRouted(identity, routedFor, (merchant) => tenant.merchants.has(merchant));
    const { user, device } = identity;
    if (!this.presence.hasDevice(identity, device) && this.presence.deviceCount(identity) >= this.options.limits.maxDevicesPerUser) {
      throw new CellError(
        ErrorCode.DeviceLimit,
        `user ${user} already has ${this.options.limits.maxDevicesPerUser} devices connected; close one first`,
      );
    }
    return routed;
  }

  /** A WebSocket opened for an admitted identity, routed for the merchant `admit` answered. */
  connect(identity: Identity, port: DevicePort, routedFor?: string): DeviceConnection {
    const { clock, limits, metrics, random } = this.options;
    const nowMs = clock.now();
    const ackBurst = Math.max(limits.ackBurst, limits.deliveryWindow);
    const connection = new DeviceConnection(identity, randomId(random), port, nowMs, {
      ratePerSecond: limits.ratePerSecond,
      burst: limits.rateBurst,
      ackRatePerSecond: limits.ackRatePerSecond,
      ackBurst,
      maxErrors: limits.maxConsecutiveErrors,
      errorRecoveryPerSecond: limits.errorRecoveryPerSecond,
    });
    connection.routedFor = identity.merchant ?? routedFor;
    port.onDrained = () => this.delivery.drained(connection);
    const replaced = this.presence.add(connection);
    if (replaced !== undefined) replaced.port.close(CloseCode.Replaced, 'this device connected again elsewhere');
    metrics.connections.set(this.presence.connections);
    metrics.connectionsOpened.inc();
    connection.expiryTimer = clock.setTimer(Math.max(0, identity.expiresAtMs - nowMs), () =>
      connection.port.close(CloseCode.TokenExpired, 'token expired; reconnect with a fresh token'),
    );
    this.delivery.sendFrame(connection, welcomeFrame(this.options.cellId, identity, connection.session, limits, ackBurst));
    this.announceDevices(identity);
    // A customer's mirrored conversations may have to catch up from their home cells first.
    const prepared = this.relay?.prepareDevice(identity) ?? Promise.resolve();
    if (identity.role === 'agent') this.desk.agentConnected(identity);
    prepared.then(() => this.delivery.attach(connection, this.desk.followedBy(identity))).catch((error: unknown) => {
      // A store failure is an operating error: the device hears STORE_UNAVAILABLE, then "reconnect".
      const storeFailed = operatingErrorOf(error)?.code === ErrorCode.StoreUnavailable;
      if (storeFailed) this.answerError(connection, undefined, error);
      else this.options.logger.error({ err: error, device: identity.device }, 'attaching a device failed');
      port.close(CloseCode.GoingAway, 'could not load your conversations; reconnect');
    });
    return connection;
  }

  /** The connection closed (any reason); forgets it. */
  disconnect(connection: DeviceConnection): void {
    if (connection.closed) return;
    connection.closed = true;
    connection.expiryTimer?.cancel();
    if (this.presence.remove(connection)) {
      const { identity } = connection;
      this.options.metrics.connections.set(this.presence.connections);
      this.announceDevices(identity);
      // Only customers are followed across cells (their conversations' homes may be elsewhere).
      if (identity.role === 'customer' && this.presence.deviceCount(identity) === 0) this.relay?.userLeft(identity.tenant, identity.user);
      if (identity.role === 'agent' && this.presence.deviceCount(identity) === 0) this.desk.agentLeft(identity);
    }
  }

  /**
   * The customers of `customerIds` with a device here (the mesh's location queries ask; agents
   * work at their home only) that wants the conversations homed at `askerCellId` (merchant-redirects.ts).
   */
  localUsers(tenant: string, customerIds: readonly string[], askerCellId?: string): string[] {
    const wants = (device: DeviceConnection): boolean => askerCellId === undefined || this.redirects.wantsConversationsOf(tenant, device.routedFor, askerCellId);
    return customerIds.filter((customer) => [...this.presence.devicesOf(customerPrincipal(tenant, customer))].some(wants));
  }

  /** Counters of cross-cell conversations; undefined for a standalone cell. */
  crossCellStats(): Readonly<CrossCellStats> | undefined {
    return this.relay?.stats();
  }

  /** The in-cell closure of the messages hosted here (docs/routing.md); undefined for a standalone cell. */
  closure(): ReturnType<CrossCellRelay['closure']> | undefined { return this.relay?.closure(); }

  /** Answers a frame the access layer refused before parsing (too large, binary); it counts like any frame. */
  refuse(connection: DeviceConnection, error: CellError): void {
    if (connection.closed) return;
    connection.rateLimit.spend(this.options.clock.now());
    this.answerError(connection, undefined, error);
  }

  /**
   * One text frame from a device. Never throws: every failure becomes an error frame. Every
   * frame counts against a rate limit: `ack` frames against their own, larger budget, all others
   * (and frames that cannot be parsed) against `ratePerSecond`. Errors use up the connection's
   * error allowance, which closes it (4429) when it runs out, so a flood ends after a bounded
   * number of frames whatever it mixes.
   */
  receive(connection: DeviceConnection, text: string): void {
    if (connection.closed) return;
    const nowMs = this.options.clock.now();
    // With both budgets spent no frame could pass: refuse it without the cost of parsing it.
    const waitMs = Math.min(connection.rateLimit.waitMs(nowMs), connection.ackRateLimit.waitMs(nowMs));
    if (waitMs > 0) {
      this.answerError(connection, undefined, rateLimited(waitMs));
      return;
    }
    let frame: ClientFrame;
    try {
      frame = parseClientFrame(text);
    } catch (error) {
      connection.rateLimit.spend(nowMs);
      this.answerError(connection, requestIdOf(text), error);
      return;
    }
    const requestId = 'id' in frame ? frame.id : undefined;
    const budget = frame.op === 'ack' ? connection.ackRateLimit : connection.rateLimit;
    if (!budget.take(nowMs)) {
      this.answerError(connection, requestId, rateLimited(budget.waitMs(nowMs)));
      return;
    }
    this.options.metrics.countFrameIn(frame.op);
    void this.dispatch(connection, frame, requestId);
  }

  /** Appends a message as `identity`; resolves once durable. Used by HTTP. */
  async send(identity: Identity, conv: string, cmid: string, body: string, extras: Pick<SendFrame, 'group' | 'attachments'> = {}): Promise<{ message: ChatMessage; duplicate: boolean }> {
    const settled = this.authorizeWrite(identity, conv);
    const { home } = settled instanceof Promise ? await settled : settled;
    if (home !== undefined) {
      if (extras.attachments !== undefined) throw notAcrossCells(conv, home);
      if (this.draining) throw shuttingDown();
      // Over HTTP there is no `queued`: wait for the seq a while, else FORWARD_PENDING.
      const relay = this.relay!;
      const stored = await relay.relaySend(identity, home, conv, cmid, body, { connection: undefined, requestId: undefined });
      if (stored !== undefined) return { message: stored, duplicate: true };
      return { message: await relay.waitForSeq(identity.tenant, conv, partyId(identity), cmid), duplicate: false };
    }
    const result = await this.appendHere(identity, conv, cmid, body, undefined, extras);
    if (result.duplicate) this.options.metrics.duplicateSends.inc();
    return result;
  }

  /** `authorizeWrite` for the attachment routes: `home` is the conversation's cell when not this one. */
  async authorizeParty(identity: Identity, conv: string): Promise<{ home: string | undefined }> {
    const settled = this.authorizeWrite(identity, conv);
    const { home } = settled instanceof Promise ? await settled : settled;
    return { home };
  }

  /** Appends to a conversation this cell hosts, once authorized, with the metadata of its attachments; resolves once durable. */
  private appendHere(identity: Identity, conv: string, cmid: string, body: string, sender?: PendingAck, extras: Pick<SendFrame, 'group' | 'attachments'> = {}): Promise<AppendResult> {
    if (this.draining) return Promise.reject(shuttingDown());
    const request = { tenant: identity.tenant, conv, from: identity.user, role: identity.role, device: identity.device, cmid, body, context: sender };
    return appendWithAttachments(this.options.store, request, extras.attachments, (request) => this.appendAtDesk(identity, request, extras.group));
  }

  private appendAtDesk(identity: Identity, request: AppendRequest, group: string | undefined): Promise<AppendResult> {
    const { conv } = request;
    if (identity.role !== 'customer') return this.log.append(request);
    const blocked = this.blocks.whenAllowed(identity.tenant, conv);
    if (blocked !== undefined) return blocked.then(() => this.appendAtDesk(identity, request, group));
    // A customer's message may open a consultation at the merchant's desk, recorded with it.
    const opening = this.desk.opening(identity.tenant, conv, group);
    if (opening.alsoWrite === undefined) return this.log.append(request);
    const appended = this.log.append({ ...request, alsoWrite: opening.alsoWrite });
    appended.then(opening.settle, opening.settle);
    return appended;
  }

  async history(identity: Identity, frame: Pick<HistoryFrame, 'conv' | 'before' | 'limit'>): Promise<{ messages: ChatMessage[]; hasMore: boolean }> {
    const { home } = this.authorizeAtDesk(identity, frame.conv);
    if (home !== undefined) await this.relay!.freshen(identity, { conv: frame.conv, home });
    const state = await this.log.conversation(identity.tenant, frame.conv);
    const before = Math.min(frame.before ?? state.durableSeq + 1, state.durableSeq + 1);
    const newest = await this.log.messagesBefore(identity.tenant, frame.conv, before, frame.limit ?? DEFAULT_HISTORY_LIMIT);
    // A page of large messages is cut short from its oldest end; a short page ends at seq 1 or where retention deleted.
    const messages = newestWithinBytes(newest, responseByteBudget(this.options.limits.maxBackpressureBytes));
    return { messages, hasMore: messages.length < newest.length || (newest.length === (frame.limit ?? DEFAULT_HISTORY_LIMIT) && newest[0]!.seq > 1) };
  }

  /** Moves the user's read cursor; the receipt reaches both parties' devices. */
  async markRead(identity: Identity, conv: string, seq: number): Promise<void> {
    const settled = this.authorizeWrite(identity, conv);
    const { home } = settled instanceof Promise ? await settled : settled;
    const party = partyId(identity);
    if (home !== undefined) {
      if (await this.relay!.relayRead(identity, home, conv, seq)) this.deliverReceipt(identity.tenant, conv, party, seq);
      return;
    }
    await this.markReadHere(identity.tenant, conv, party, seq);
  }

  /**
   * The user's conversations with cursors and unread counts, as seen from `device`, in order of
   * their ids from after `after`: a page bounded in bytes (inbox.ts). An agent at a desk lists
   * the conversations of its own consultations only (supervisors: all of the merchant's).
   */
  async inbox(identity: Identity, connection?: DeviceConnection, after?: string): Promise<{ conversations: ConversationSummary[]; hasMore: boolean }> {
    if (connection === undefined) await this.relay?.freshen(identity);
    const only = this.desk.followedBy(identity);
    return readInbox(
      { store: this.options.store, log: this.log, maxBackpressureBytes: this.options.limits.maxBackpressureBytes },
      identity,
      { connection, after, ...(only === undefined ? {} : { only: new Set(only) }) },
    );
  }

  /** Who of `frame.users` and of the agents of `frame.merchants` is online, as `identity` may see it. */
  presenceOf(identity: Identity, frame: Pick<PresenceFrame, 'users' | 'merchants'>): PresenceAnswer {
    return this.presence.answer(identity, frame);
  }

  /**
   * Graceful shutdown: refuse new sends, wait for writes under way so their acks go out, then
   * close every device with "going away" so clients reconnect (to this cell when it is back).
   */
  async drain(): Promise<void> {
    this.draining = true;
    await this.log.whenIdle();
    for (const connection of this.presence.all()) {
      connection.port.close(CloseCode.GoingAway, 'cell shutting down; reconnect');
    }
    await this.delivery.cursorsFlushed();
  }

  /** Handles a parsed frame; never rejects: a failure is answered to the device as an error frame (hence `return await`). */
  private async dispatch(connection: DeviceConnection, frame: ClientFrame, requestId: string | undefined): Promise<void> {
    const { identity } = connection;
    try {
      switch (frame.op) {
        case 'send': {
          const settled = this.authorizeWrite(identity, frame.conv);
          const { home } = settled instanceof Promise ? await settled : settled;
          if (home !== undefined) return await this.relaySend(connection, frame, home);
          const sender: PendingAck = { connection, requestId: frame.id, receivedAtMs: this.options.clock.now() };
          const result = await this.appendHere(identity, frame.conv, frame.cmid, frame.body, sender, { group: frame.group, attachments: frame.attachments });
          // A fresh message was acked from fanOut the moment it became durable; a resend of a
          // stored cmid never becomes durable again, so its ack goes out here.
          if (result.duplicate) {
            this.options.metrics.duplicateSends.inc();
            this.answerSent(connection, frame.id, result.message);
          }
          return;
        }
        case 'ack':
          return await this.delivery.ackFrame(connection, frame, (conv) => this.authorize(identity, conv), (error, conv) => this.answerError(connection, undefined, error, conv));
        case 'read':
          await this.markRead(identity, frame.conv, frame.seq);
          if (frame.id !== undefined) this.delivery.sendFrame(connection, { t: 'ok', id: frame.id });
          return;
        case 'history': {
          const page = await this.history(identity, frame);
          this.delivery.sendFrame(connection, { t: 'history', id: frame.id, conv: frame.conv, ...page });
          return;
        }
        case 'inbox': {
          const page = await this.inbox(identity, connection, frame.after);
          this.delivery.sendFrame(connection, { t: 'inbox', id: frame.id, ...page });
          return;
        }
        case 'presence':
          this.delivery.sendFrame(connection, { t: 'presence', id: frame.id, ...this.presenceOf(identity, frame) });
          return;
        case 'status':
        case 'close':
        case 'transfer':
        case 'rate':
        case 'typing':
        case 'desk':
        case 'block':
        case 'unblock':
          return await dispatchDeskFrame(this.deskFrames, connection, frame);
        case 'ping': {
          const pong: ServerFrame = { t: 'pong', ts: this.options.clock.now() };
          if (frame.id !== undefined) pong.id = frame.id;
          this.delivery.sendFrame(connection, pong);
          return;
        }
      }
    } catch (error) {
      this.answerError(connection, requestId, error);
    }
  }

  /**
   * A message of a conversation hosted here became durable: to every device of both parties
   * here (its sender acked), and on to the cells that hold the customer's devices.
   */
  private fanOut(tenant: string, message: ChatMessage, sender: PendingAck | undefined, storedJson: string | undefined): void {
    this.options.metrics.countMessageIn();
    if (storedJson !== undefined) this.delivery.offering(message, storedJson);
    this.deliverHere(tenant, message, sender);
    this.relay?.messageDurable(tenant, message);
    this.desk.messageDurable(tenant, message);
  }

  /** Pushes a durable (or mirrored) message to the conversation's devices here; `sender`'s connection gets `sent`. */
  private deliverHere(tenant: string, message: ChatMessage, sender: PendingAck | RelayedSend | undefined): void {
    if (sender !== undefined) this.options.metrics.ackLatency.observe((this.options.clock.now() - sender.receivedAtMs) / 1000);
    const { merchant, customer } = parseConversationId(message.conv)!;
    for (const device of this.desk.participantsOf(tenant, merchant, customer, message) ?? this.presence.participantsOf(tenant, merchant, customer)) {
      if (device === sender?.connection) {
        this.answerSent(device, sender.requestId, message);
        this.delivery.deliveredBySentFrame(device, message);
      } else {
        this.delivery.offer(device, message);
      }
    }
  }

  /** Moves `party`'s read cursor of a conversation hosted here; the receipt reaches both parties everywhere. */
  private async markReadHere(tenant: string, conv: string, party: string, seq: number): Promise<void> {
    const moved = await this.log.markRead(tenant, conv, party, seq);
    if (!moved) return;
    this.deliverReceipt(tenant, conv, party, seq);
    this.relay?.receiptMoved(tenant, conv, party, seq);
  }

  /** `party` (a party id of the conversation) read up to `seq`: to the conversation's devices here. */
  private deliverReceipt(tenant: string, conv: string, party: string, seq: number): void {
    const reader = parsePartyId(party)!;
    this.options.metrics.receipts.inc();
    this.delivery.broadcast(this.participantsHere(tenant, conv), { t: 'receipt', conv, user: reader.user, role: reader.role, seq });
  }

  private participantsHere(tenant: string, conv: string): Iterable<DeviceConnection> {
    const { merchant, customer } = parseConversationId(conv)!;
    return this.desk.participantsOf(tenant, merchant, customer) ?? this.presence.participantsOf(tenant, merchant, customer);
  }

  /**
   * A device's send to a conversation another cell hosts: answered `sent` at once when its seq
   * is known here (a resend), otherwise `queued` once it is durable in the outbox; `sent`
   * follows when the message comes back from the home cell.
   */
  private async relaySend(connection: DeviceConnection, frame: Extract<ClientFrame, { op: 'send' }>, home: string): Promise<void> {
    if (frame.attachments !== undefined) throw notAcrossCells(frame.conv, home);
    if (this.draining) throw new CellError(ErrorCode.ShuttingDown, 'the cell is shutting down; resend after reconnecting');
    const stored = await this.relay!.relaySend(connection.identity, home, frame.conv, frame.cmid, frame.body, { connection, requestId: frame.id });
    if (stored !== undefined) {
      this.options.metrics.duplicateSends.inc();
      this.answerSent(connection, frame.id, stored);
      return;
    }
    const queued: ServerFrame = { t: 'queued', conv: frame.conv, cmid: frame.cmid };
    if (frame.id !== undefined) queued.id = frame.id;
    this.delivery.sendFrame(connection, queued);
  }

  /** Merchants (`tenant/merchant` keys) got a serving home: customers left here meanwhile go there (MerchantRedirects.redirectToServingHomes). */
  homesServing(merchants: ReadonlySet<string>): void {
    this.redirects.redirectToServingHomes(this.presence.all(), merchants, (connection, frame) => this.delivery.sendFrame(connection, frame));
  }

  /** The tenants this cell serves, with their origins and the merchants it hosts now; no secrets. */
  servedTenants(): Array<{ id: string; origins: string[]; merchants: string[] }> {
    return [...this.tenants].map(([id, policy]) => ({ id, origins: [...policy.origins], merchants: [...policy.merchants].sort() }));
  }

  /** Serves a tenant created at runtime, or takes a tenant's new secrets and origins; its merchants stay (tenant-catalogue.ts). */
  serveTenant(tenant: TenantConfig): void {
    this.tenants.set(tenant.id, { keys: signingKeysOf(tenant), origins: new Set(tenant.origins), merchants: this.tenants.get(tenant.id)?.merchants ?? new Set() });
  }

  /** Stops serving a removed tenant: its tokens are refused from now on, its devices closed. */
  stopServingTenant(tenant: string): void {
    this.tenants.delete(tenant);
    for (const connection of [...this.presence.all()]) if (connection.identity.tenant === tenant) connection.port.close(CloseCode.Forbidden, `tenant ${tenant} was removed`);
  }

  /** What a merchant's move may do to this core (merchant-move.ts). */
  moveHost(): MoveHost {
    return {
      hosts: (tenant, merchant) => this.tenants.get(tenant)?.merchants.has(merchant) === true,
      fence: (tenant, merchant) => this.fences.fence(tenant, merchant),
      whenMerchantIdle: (tenant, merchant) => this.log.whenMerchantIdle(tenant, merchant),
      cursorsFlushed: () => this.delivery.cursorsFlushed(),
      hostMerchant: (tenant, merchant) => {
        const policy = this.tenants.get(tenant);
        if (policy === undefined) throw new CellError(ErrorCode.MoveFailed, `tenant ${tenant} is not served by this cell: add it to its config (or create it through the admin API) before moving its merchants here`);
        // The store now holds the merchant's conversations as copied; heads cached from an
        // earlier mirror of them are stale.
        this.log.forgetMerchant(tenant, merchant);
        policy.merchants.add(merchant);
        void this.delivery.resumeMerchant(tenant, merchant, (customer) => this.presence.participantsOf(tenant, merchant, customer));
        // Its desk came with it: agents, queues, open consultations, nothing reassigned.
        void this.desk.openMerchant(tenant, merchant);
      },
      releaseMerchant: (tenant, merchant, newHome) => {
        this.tenants.get(tenant)?.merchants.delete(merchant);
        this.desk.unloadMerchant(tenant, merchant);
        if (newHome !== undefined) this.redirects.redirectMovedAway(this.presence.all(), tenant, merchant, newHome, (connection, frame) => this.delivery.sendFrame(connection, frame));
        // Its customers connected here are cross-cell customers from now on.
        void this.relay?.merchantMovedAway(tenant, merchant);
      },
    };
  }

  /**
   * `authorize` for writes: while the conversation's merchant is being moved out of this cell,
   * waits for the move to end, then decides again (it may have become a cross-cell conversation).
   * Every write waits, also one that arrives when the new home is already known, so that a
   * device's writes leave in the order they came. Synchronous when no move is under way, so a
   * frame is queued in the turn it arrived (a drain that follows still lets it finish).
   */
  private authorizeWrite(identity: Identity, conv: string): Parties | Promise<Parties> {
    const parties = this.authorizeAtDesk(identity, conv);
    const fence = this.fences.current(identity.tenant, parties.merchant);
    return fence === undefined ? parties : fence.then(() => this.authorizeWrite(identity, conv));
  }

  /** What the cross-cell relay may do to this core. */
  private crossCellHost(): CrossCellHost {
    return {
      isDraining: () => this.draining,
      whenSettled: (tenant, merchant) => this.fences.whenSettled(tenant, merchant),
      hosts: (tenant, merchant) => this.tenants.get(tenant)?.merchants.has(merchant) === true,
      customerHasDevices: (tenant, customer) => this.presence.deviceCount(customerPrincipal(tenant, customer)) > 0,
      deliver: (tenant, message, sender) => this.deliverHere(tenant, message, sender),
      deliverReceipt: (tenant, conv, party, seq) => this.deliverReceipt(tenant, conv, party, seq),
      tellTyping: (tenant, conv, user, role) => tellTyping(this.deskFrames, tenant, conv, user, role),
      tellCustomer: (tenant, customer, frame) => this.delivery.broadcast(this.presence.devicesOf(customerPrincipal(tenant, customer)), frame),
      markRead: (tenant, conv, party, seq) => this.markReadHere(tenant, conv, party, seq),
      whenAllowed: (tenant, conv) => this.blocks.whenAllowed(tenant, conv),
      answer: (connection, frame) => this.delivery.sendFrame(connection, frame),
      applyDeskAction: (tenant, conv, customer, action) => applyRelayedDeskAction(this.desk, tenant, conv, customer, action),
    };
  }

  private answerSent(connection: DeviceConnection, requestId: string | undefined, message: ChatMessage): void {
    const frame: ServerFrame = { t: 'sent', conv: message.conv, cmid: message.cmid, seq: message.seq, ts: message.ts };
    if (requestId !== undefined) frame.id = requestId;
    // The device may ack its own message like a pushed one.
    connection.ackRateLimit.credit(1);
    this.delivery.sendFrame(connection, frame);
  }

  /** `conv` names the conversation of a refused entry of a multi-conversation ack (error-frames.ts). */
  private answerError(connection: DeviceConnection, requestId: string | undefined, error: unknown, conv?: string): void {
    answerError(this.errorFrames, connection, requestId, error, conv);
  }

  /** Tells the principal's devices (and no one else's) which of its devices are connected. */
  private announceDevices(principal: Principal): void {
    const frame: ServerFrame = { t: 'devices', user: principal.user, devices: this.presence.deviceInfo(principal) };
    this.delivery.broadcast(this.presence.devicesOf(principal), frame);
  }

  private tenantOf(identity: Identity): TenantPolicy {
    const tenant = this.tenants.get(identity.tenant);
    // verifyToken accepts only tenants of this cell; one removed since is refused (its devices are being closed).
    if (tenant === undefined) throw new CellError(ErrorCode.TenantUnknown, `tenant ${identity.tenant} is no longer served by this cell`);
    return tenant;
  }

  /**
   * A system message of the desk. While the merchant is being moved out it waits like any write;
   * once it moved, the desk that runs at the new home decides again, so nothing is written here.
   */
  private appendForDesk(request: AppendRequest): Promise<AppendResult> {
    const { merchant } = parseConversationId(request.conv)!;
    const fence = this.fences.current(request.tenant, merchant);
    if (fence === undefined) return this.log.append(request);
    return fence.then(() =>
      this.tenants.get(request.tenant)?.merchants.has(merchant) === true
        ? this.log.append(request)
        : Promise.reject(new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} moved away`)),
    );
  }

  /** `authorize`, and at a desk, for agents: only the assigned agent (or a supervisor) reads and writes. */
  private authorizeAtDesk(identity: Identity, conv: string): Parties {
    const parties = this.authorize(identity, conv);
    if (parties.home === undefined) this.desk.authorize(identity, conv);
    return parties;
  }

  /**
   * Checks that `identity` takes part in `conv` and that this cell hosts its merchant, or, for a
   * customer in a cluster, that another cell does (a cross-cell conversation). Agents work in
   * their merchant's home cell only.
   */
  private authorize(identity: Identity, conv: string): Parties {
    const parsed = parseConversationId(conv);
    if (parsed === undefined) throw new CellError(ErrorCode.BadFrame, `'${conv}' is not a conversation id (<merchant>:<customer>)`);
    const allowed = identity.role === 'agent' ? identity.merchant === parsed.merchant : identity.user === parsed.customer;
    if (!allowed) throw new CellError(ErrorCode.ConversationForbidden, `you are not a party to conversation ${conv}`);
    if (this.tenantOf(identity).merchants.has(parsed.merchant)) return { merchant: parsed.merchant, customer: parsed.customer, home: undefined };
    const home = identity.role === 'customer' ? this.relay?.homeCellOf(identity.tenant, parsed.merchant) : undefined;
    if (home === undefined) throw this.redirects.refusal(identity.tenant, parsed.merchant, `merchant ${parsed.merchant} is not hosted by this cell`);
    return { merchant: parsed.merchant, customer: parsed.customer, home };
  }
}

