/**
 * Decoding the failure detector's small control messages (liveness claims, pings): the size
 * bound and a one-message cache for gossiped claims.
 */
import { decodeJson, LivenessClaimMessageSchema, type LivenessClaimMessage } from './membership-wire.js';
import { sameBytes } from './same-bytes.js';
import type { MeshMessage } from './transport.js';

/** Small control messages (claims, pings and their piggybacked updates) are refused above this size. */
export const MAX_CONTROL_MESSAGE_BYTES = 4 * 1024;

/**
 * Decodes gossiped claims, remembering the last one by content: a transport may hand the
 * validator and the handler different copies of the same message (libp2p does), and decoding it
 * twice doubled the cost of a partition's claims in large simulated clusters.
 */
export class ControlMessageDecoder {
  private lastClaim: { readonly bytes: Uint8Array; readonly claim: LivenessClaimMessage | undefined } | undefined;

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
