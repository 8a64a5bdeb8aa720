import type { Identity } from '../access/tokens.js';
import type { DeviceConnection } from '../messaging/device.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { parseConversationId, type ClientFrame, type ServerFrame } from '../protocol/frames.js';
import type { CustomerBlocks } from './customer-blocks.js';
import type { DeskService } from './desk-service.js';

export type BlockClientFrame = Extract<ClientFrame, { op: 'block' | 'unblock' }>;

/** What answering `block` and `unblock` needs from the cell. */
export interface BlockFrameHost {
  blocks: CustomerBlocks;
  desk: DeskService;
  /** Throws unless `identity` may act in `conv` here: a party, and at a desk the assigned agent or a supervisor. */
  authorize(identity: Identity, conv: string): { home: string | undefined };
  send(connection: DeviceConnection, frame: ServerFrame): void;
}

/**
 * `block` and `unblock` (docs/protocol.md, "The desk"): an agent of the conversation's merchant
 * (at a desk: the assigned agent or a supervisor) blocks its customer for the merchant, which
 * closes the customer's open consultation; the audit log records the agent as the actor.
 */
export async function answerBlockFrame(host: BlockFrameHost, connection: DeviceConnection, frame: BlockClientFrame): Promise<void> {
  const { identity } = connection;
  if (identity.role !== 'agent') throw new CellError(ErrorCode.ConversationForbidden, 'only agents block customers');
  // Agents work in their merchant's home cell only: `authorize` refuses a merchant hosted elsewhere.
  host.authorize(identity, frame.conv);
  const { merchant, customer } = parseConversationId(frame.conv)!;
  const actor = `agent:${merchant}:${identity.user}` as const;
  if (frame.op === 'block') {
    await host.blocks.block(identity.tenant, merchant, customer, actor, frame.reason);
    host.desk.closeIfOpen(identity.tenant, frame.conv);
  } else {
    await host.blocks.unblock(identity.tenant, merchant, customer, actor);
  }
  if (frame.id !== undefined) host.send(connection, { t: 'ok', id: frame.id });
}
