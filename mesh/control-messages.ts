/**
 * Decoding the failure detector's small control messages (heartbeats, liveness claims, pings):
 * the size bound, a fast path for heartbeats and a one-message cache per kind.
 */
import { CELL_ID_PATTERN } from './cell-record.js';
import { decodeJson, HeartbeatSchema, LivenessClaimMessageSchema, MAX_HEARTBEAT_INTERVAL_MS, type Heartbeat, type LivenessClaimMessage } from './membership-wire.js';
import { sameBytes } from './same-bytes.js';
import type { MeshMessage } from './transport.js';

/** Small control messages (heartbeats, claims, pings) are refused above this size. */
export const MAX_CONTROL_MESSAGE_BYTES = 4 * 1024;

/**
 * Decodes gossiped heartbeats and claims, remembering the last of each by content: a transport
 * may hand the validator and the handler different copies of the same message (libp2p does), and
 * decoding it twice was the largest single cost of a cell in large simulated clusters.
 */
export class ControlMessageDecoder {
  private lastHeartbeat: { readonly bytes: Uint8Array; readonly heartbeat: Heartbeat | undefined } | undefined;
  private lastClaim: { readonly bytes: Uint8Array; readonly claim: LivenessClaimMessage | undefined } | undefined;

  heartbeat(message: MeshMessage): Heartbeat | undefined {
    const bytes = message.data;
    const last = this.lastHeartbeat;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.heartbeat;
    const heartbeat = decodeHeartbeatBytes(bytes);
    this.lastHeartbeat = { bytes, heartbeat };
    return heartbeat;
  }

  claim(message: MeshMessage): LivenessClaimMessage | undefined {
    const bytes = message.data;
    const last = this.lastClaim;
    if (last !== undefined && sameBytes(last.bytes, bytes)) return last.claim;
    const decoded = decodeJson(bytes, LivenessClaimMessageSchema, MAX_CONTROL_MESSAGE_BYTES);
    const claim = decoded.ok ? decoded.value : undefined;
    this.lastClaim = { bytes, claim };
    return claim;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes a heartbeat as `decodeJson(bytes, HeartbeatSchema, MAX_CONTROL_MESSAGE_BYTES)` does,
 * with the schema's checks written out for the common well-formed case: every cell decodes
 * every heartbeat it receives, and zod's generic walk was a tenth of a large cluster's CPU.
 * Anything the fast path does not accept goes through the schema, so both accept the same.
 */
function decodeHeartbeatBytes(bytes: Uint8Array): Heartbeat | undefined {
  if (bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { cellId, incarnation, version, intervalMs } = value as Record<string, unknown>;
    if (
      typeof cellId === 'string' &&
      CELL_ID_PATTERN.test(cellId) &&
      isCounter(incarnation) &&
      isCounter(version) &&
      (intervalMs === undefined || (Number.isSafeInteger(intervalMs) && (intervalMs as number) >= 1 && (intervalMs as number) <= MAX_HEARTBEAT_INTERVAL_MS))
    ) {
      return intervalMs === undefined ? { cellId, incarnation, version } : { cellId, incarnation, version, intervalMs: intervalMs as number };
    }
  }
  const parsed = HeartbeatSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

function isCounter(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}
