import type { Clock } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import type { DeviceConnection } from '../messaging/device.js';
import type { PresenceRegistry } from '../messaging/presence.js';
import { customerPrincipal } from '../messaging/principal.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ClientFrame, type ServerFrame } from '../protocol/frames.js';
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

/** Relays "typing" to the other party's devices here that may see the conversation; at most one per interval per conversation. */
function typing(host: DeskFrameHost, connection: DeviceConnection, conv: string): void {
  const { identity } = connection;
  host.authorize(identity, conv);
  const nowMs = host.clock.now();
  const last = connection.lastTypingAtMs.get(conv);
  if (last !== undefined && nowMs - last < TYPING_INTERVAL_MS) return;
  // Bounded: a device types in few conversations at once; the oldest entry goes first.
  if (connection.lastTypingAtMs.size >= 64) connection.lastTypingAtMs.delete(connection.lastTypingAtMs.keys().next().value!);
  connection.lastTypingAtMs.set(conv, nowMs);
  const frame: ServerFrame = { t: 'typing', conv, user: identity.user, role: identity.role };
  const { merchant, customer } = parseConversationId(conv)!;
  const others =
    identity.role === 'agent'
      ? host.presence.devicesOf(customerPrincipal(identity.tenant, customer))
      : (host.desk.participantsOf(identity.tenant, merchant, customer) ?? host.presence.agentsOf(identity.tenant, merchant));
  for (const device of others) if (device.identity.role !== identity.role) host.send(device, frame);
}

/** The desk of a conversation lives in its merchant's home cell; a customer elsewhere acts there through it (not yet relayed). */
function requireHostedHere(host: DeskFrameHost, identity: Identity, conv: string): void {
  const { home } = host.authorize(identity, conv);
  if (home !== undefined) {
    throw new CellError(ErrorCode.MerchantNotHosted, `the desk of merchant ${parseConversationId(conv)!.merchant} is in cell ${home}; connect there for this`);
  }
}
