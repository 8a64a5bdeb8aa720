// What the parts of the client (send queue, request tracker, sequencer, ack batcher) see of the
// connection: the session while one is open, its pacer, and the way to put a frame on the wire.
import type { ClientFrame } from '../cell/protocol/frames.js';
import type { TokenBucket } from '../platform/token-bucket.js';
import type { SessionInfo } from './client-types.js';

export interface SessionLink {
  /** Set from the cell's `welcome` to the end of the connection: frames may be sent exactly then. */
  readonly session: SessionInfo | undefined;
  /**
   * The cell's per-connection rate limit, mirrored from the welcome so the client paces its own
   * sends and requests instead of being refused (acks have a budget of their own on the cell,
   * which grows with every delivery, so batched acks never come near it). Set with `session`.
   */
  readonly pacer: TokenBucket | undefined;
  /** Sends `frame` on the current connection; dropped when there is none. */
  transmit(frame: ClientFrame): void;
}
