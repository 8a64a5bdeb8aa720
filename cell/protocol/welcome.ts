import type { Identity } from '../access/tokens.js';
import type { LimitsConfig } from '../settings.js';
import { MAX_ACKS_PER_FRAME, MAX_BODY_CHARS, PROTOCOL_VERSION, type ServerFrame } from './frames.js';

/** The first frame of every connection: who the device is here, and the limits it must keep to. */
export function welcomeFrame(cellId: string, identity: Identity, session: string, limits: LimitsConfig, ackBurst: number): ServerFrame {
  const welcome: ServerFrame = {
    t: 'welcome',
    v: PROTOCOL_VERSION,
    cell: cellId,
    tenant: identity.tenant,
    user: identity.user,
    role: identity.role,
    device: identity.device,
    session,
    limits: {
      maxFrameBytes: limits.maxFrameBytes,
      maxBodyChars: MAX_BODY_CHARS,
      ratePerSecond: limits.ratePerSecond,
      rateBurst: limits.rateBurst,
      deliveryWindow: limits.deliveryWindow,
      maxAcksPerFrame: MAX_ACKS_PER_FRAME,
      ackRatePerSecond: limits.ackRatePerSecond,
      ackBurst,
    },
  };
  if (identity.merchant !== undefined) welcome.merchant = identity.merchant;
  return welcome;
}
