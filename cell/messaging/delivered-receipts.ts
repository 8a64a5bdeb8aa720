import type { Role, ServerFrame } from '../protocol/frames.js';
import type { ConversationState } from './conversation-log.js';
import type { DeviceConnection } from './device.js';

/**
 * Delivery receipts (docs/protocol.md, "`delivered`"): when a device's ack moves its side of a
 * conversation (the customer's devices, or the merchant's agents) past a message of the other
 * side, that other side's devices here get `{"t":"delivered","conv","role","seq"}`, cumulative
 * like the read receipt.
 *
 * Nothing is stored: "delivered" is derived from the delivery cursors, which are durable already
 * (docs/protocol.md, `ack`). The side's high-water mark lives in the conversation's in-memory
 * head, so an ack costs one comparison when it moves nothing new, and a device acking its own
 * message (every send does) sends no frame, since nothing of the other side became delivered.
 */
export class DeliveredReceipts {
  constructor(
    /** The conversation's devices here (its customer's, and its merchant's agents' or, at a desk, those of the consultation). */
    private readonly participantsOf: (tenant: string, conv: string) => Iterable<DeviceConnection>,
    /** The customer's devices here: those told when an agent's device acked (no agent to skip over). */
    private readonly customerDevices: (tenant: string, customer: string) => Iterable<DeviceConnection>,
    private readonly broadcast: (devices: Iterable<DeviceConnection>, frame: ServerFrame) => void,
  ) {}

  /** `connection` acked `conv` up to `seq` (its cursor moved there). */
  acked(connection: DeviceConnection, state: ConversationState, seq: number): void {
    const side = connection.identity.role;
    const known = side === 'customer' ? state.deliveredToCustomer : state.deliveredToAgents;
    if (seq <= known) return;
    if (side === 'customer') state.deliveredToCustomer = seq;
    else state.deliveredToAgents = seq;
    if (!otherSideWrote(state, side, known, seq)) return;
    const waiting: DeviceConnection[] = [];
    if (side === 'agent') for (const device of this.customerDevices(state.tenant, state.customer)) waiting.push(device);
    else for (const device of this.participantsOf(state.tenant, state.conv)) if (device.identity.role === 'agent') waiting.push(device);
    // Nobody of the other side here: nothing to serialise.
    if (waiting.length > 0) this.broadcast(waiting, { t: 'delivered', conv: state.conv, role: side, seq });
  }
}

/**
 * Whether a message of the side other than `side` lies in (after, upTo]: from the recent
 * messages, newest first, so usually one or two steps. Messages no longer in memory may be of
 * either side: then yes (the receipt is true either way, at worst not needed).
 */
function otherSideWrote(state: ConversationState, side: Role, after: number, upTo: number): boolean {
  const recent = state.recent;
  for (let index = recent.length - 1; index >= 0; index--) {
    const message = recent[index]!;
    if (message.seq <= after) return false;
    if (message.seq <= upTo && message.role !== side && message.role !== 'system') return true;
  }
  return (recent[0]?.seq ?? upTo + 1) > after + 1;
}
