import type { Limits } from '../cell/protocol/frames.js';
import type { SessionInfo } from '../client/client-types.js';

/** The limits a test cell announces in its welcome, before any override. */
export const TEST_LIMITS: Limits = { maxFrameBytes: 65_536, maxBodyChars: 16_384, ratePerSecond: 20, rateBurst: 40, deliveryWindow: 64 };

/** The session of customer alice's phone on cell-a, as the SDK's parts see it after a welcome. */
export function testSession(limits: Partial<Limits> = {}): SessionInfo {
  return {
    protocolVersion: 1,
    cell: 'cell-a',
    tenant: 'mall',
    user: 'alice',
    role: 'customer',
    device: 'phone',
    session: 'session-1',
    limits: { ...TEST_LIMITS, ...limits },
  };
}
