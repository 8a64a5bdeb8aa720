import type { Clock } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import type { RelayedDeskAction } from '../messaging/cross-cell-wire.js';
import type { DeviceConnection } from '../messaging/device.js';
import type { PresenceRegistry } from '../messaging/presence.js';
import { customerPrincipal } from '../messaging/principal.js';
import type { DeskRequester } from '../messaging/relayed-desk-requests.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ClientFrame, type Role, type ServerFrame } from '../protocol/frames.js';
import { answerBlockFrame } from './block-frames.js';
import type { CustomerBlocks } from './customer-blocks.js';
import type { DeskService } from './desk-service.js';

/** Typing frames a device may send per conversation: one per this interval; more are dropped. */
export const TYPING_INTERVAL_MS = 1_000;

export type DeskClientFrame = Extract<ClientFrame, { op: 'status' | 'close' | 'transfer' | 'rate' | 'typing' | 'desk' | 'block' | 'unblock' }>;

/** What answering desk frames needs from the cell. */
export interface DeskFrameHost {
  desk: DeskService;
  /** The customers each merchant blocked (`block`, `unblock`: block-frames.ts). */
  blocks: CustomerBlocks;
  clock: Clock;
  presence: PresenceRegistry;
  /** Throws unless `identity` may act in `conv` here (a party, hosted here, and at a desk the assigned agent). */
  authorize(identity: Identity, conv: string): { home: string | undefined };
  send(connection: DeviceConnection, frame: ServerFrame): void;
  /** Passes "typing" on to the cells holding the other party's devices (`home`: the conversation's home, for a customer elsewhere). */
  typingElsewhere(tenant: string, conv: string, user: string, role: Role, home: string | undefined): void;
  /**
   * Relays a customer's `close` or `rate` to the desk in the merchant's home cell `home`
   * (CrossCellRelay.relayDeskAction): resolves once durable; `requester` is answered later.
   */
  deskElsewhere(identity: Identity, home: string, conv: string, action: RelayedDeskAction, requester: DeskRequester): Promise<void>;
}

/** Answers the frames of the desk (docs/protocol.md, "The desk"). */
export async function dispatchDeskFrame(host: DeskFrameHost, connection: DeviceConnection, frame: DeskClientFrame): Promise<void> {
  const { desk } = host;
  const { identity } = connection;
  switch (frame.op) {
    case 'status':
      if (identity.role !== 'agent') throw new CellError(ErrorCode.ConversationForbidden, 'only agents set a status');
      await desk.setStatus(identity, frame.status);
      break;
    case 'transfer':
      if (identity.role !== 'agent') throw new CellError(ErrorCode.ConversationForbidden, 'only agents transfer consultations');
      requireHostedHere(host, identity, frame.conv);
      await desk.transfer(identity, frame.conv, { agent: frame.agent, group: frame.group }, frame.note, frame.consultation);
      break;
    case 'close':
    case 'rate': {
      if (frame.op === 'rate' && identity.role !== 'customer') throw new CellError(ErrorCode.ConversationForbidden, 'only the customer rates a consultation');
      const { home } = host.authorize(identity, frame.conv);
      const action = deskActionOf(frame);
      // The desk is in the merchant's home cell: a customer's device elsewhere is answered from there.
      if (home !== undefined) return host.deskElsewhere(identity, home, frame.conv, action, { connection, requestId: frame.id });
      await applyDeskAction(desk, identity, frame.conv, action);
      break;
    }
    case 'typing':
      typing(host, connection, frame.conv);
      return;
    case 'desk':
      host.send(connection, { t: 'desk', id: frame.id, ...desk.view(identity) });
      return;
    case 'block':
    case 'unblock':
      return answerBlockFrame(host, connection, frame);
  }
  if (frame.id !== undefined) host.send(connection, { t: 'ok', id: frame.id });
}

/**
 * Relays "typing" to the other party's devices that may see the conversation, here and (through
 * the cross-cell path) on the cells that hold them; at most one per interval per conversation.
 */
function typing(host: DeskFrameHost, connection: DeviceConnection, conv: string): void {
  const { identity } = connection;
  const { home } = host.authorize(identity, conv);
  const nowMs = host.clock.now();
  const last = connection.lastTypingAtMs.get(conv);
  if (last !== undefined && nowMs - last < TYPING_INTERVAL_MS) return;
  // Bounded: a device types in few conversations at once; the oldest entry goes first.
  if (connection.lastTypingAtMs.size >= 64) connection.lastTypingAtMs.delete(connection.lastTypingAtMs.keys().next().value!);
  connection.lastTypingAtMs.set(conv, nowMs);
  tellTyping(host, identity.tenant, conv, identity.user, identity.role);
  host.typingElsewhere(identity.tenant, conv, identity.user, identity.role, home);
}

/** `user` (with `role`) is typing in `conv`: the other party's devices here that may see it hear it. */
export function tellTyping(host: Pick<DeskFrameHost, 'desk' | 'presence' | 'send'>, tenant: string, conv: string, user: string, role: Role): void {
  const frame: ServerFrame = { t: 'typing', conv, user, role };
  const { merchant, customer } = parseConversationId(conv)!;
  const others =
    role === 'agent'
      ? host.presence.devicesOf(customerPrincipal(tenant, customer))
      : (host.desk.participantsOf(tenant, merchant, customer) ?? host.presence.agentsOf(tenant, merchant));
  for (const device of others) if (device.identity.role !== role) host.send(device, frame);
}

function deskActionOf(frame: Extract<DeskClientFrame, { op: 'close' | 'rate' }>): RelayedDeskAction {
  if (frame.op === 'close') return frame.consultation === undefined ? { op: 'close' } : { op: 'close', consultation: frame.consultation };
  return frame.comment === undefined ? { op: 'rate', score: frame.score } : { op: 'rate', score: frame.score, comment: frame.comment };
}

/** A `close` or `rate` at the desk here, of a device here or (`identity` standing for the customer) relayed from another cell. */
function applyDeskAction(desk: DeskService, identity: Identity, conv: string, action: RelayedDeskAction): Promise<void> {
  return action.op === 'close' ? desk.close(identity, conv, action.consultation) : desk.rate(identity, conv, action.score, action.comment);
}

/**
 * A customer's `close` or `rate` that another cell relayed (its device is there, checked there):
 * applied at the desk here as if the device were here; rejects with the desk's refusal.
 */
export function applyRelayedDeskAction(desk: DeskService, tenant: string, conv: string, customer: string, action: RelayedDeskAction): Promise<void> {
  desk.requireOpen(tenant, parseConversationId(conv)!.merchant);
  // The device and its token stay at the access cell: the desk reads only who acts.
  const identity: Identity = { tenant, user: customer, role: 'customer', device: 'relayed', expiresAtMs: Number.MAX_SAFE_INTEGER };
  return applyDeskAction(desk, identity, conv, action);
}

/** The desk of a conversation lives in its merchant's home cell: an agent's transfer acts there only. */
function requireHostedHere(host: DeskFrameHost, identity: Identity, conv: string): void {
  const { home } = host.authorize(identity, conv);
  if (home !== undefined) {
    throw new CellError(ErrorCode.MerchantNotHosted, `the desk of merchant ${parseConversationId(conv)!.merchant} is in cell ${home}; connect there for this`);
  }
}
