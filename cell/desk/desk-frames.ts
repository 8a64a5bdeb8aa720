import type { Clock } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import type { DeviceConnection } from '../messaging/device.js';
import type { PresenceRegistry } from '../messaging/presence.js';
import { customerPrincipal } from '../messaging/principal.js';
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
    case 'close':
      requireHostedHere(host, identity, frame.conv);
      await desk.close(identity, frame.conv, frame.consultation);
      break;
    case 'transfer':
      if (identity.role !== 'agent') throw new CellError(ErrorCode.ConversationForbidden, 'only agents transfer consultations');
      requireHostedHere(host, identity, frame.conv);
      await desk.transfer(identity, frame.conv, { agent: frame.agent, group: frame.group }, frame.note, frame.consultation);
      break;
    case 'rate':
      if (identity.role !== 'customer') throw new CellError(ErrorCode.ConversationForbidden, 'only the customer rates a consultation');
      requireHostedHere(host, identity, frame.conv);
      await desk.rate(identity, frame.conv, frame.score, frame.comment);
      break;
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

/** The desk of a conversation lives in its merchant's home cell; a customer elsewhere acts there through it (not yet relayed). */
function requireHostedHere(host: DeskFrameHost, identity: Identity, conv: string): void {
  const { home } = host.authorize(identity, conv);
  if (home !== undefined) {
    throw new CellError(ErrorCode.MerchantNotHosted, `the desk of merchant ${parseConversationId(conv)!.merchant} is in cell ${home}; connect there for this`);
  }
}
