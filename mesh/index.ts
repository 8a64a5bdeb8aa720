/**
 * The mesh: how cells form a cluster. This file is its public surface.
 *
 * Membership core (pure logic on ports: Clock, Random, Store, MeshTransport, RecordSigner):
 * CellMesh composes the directory of signed cell records, SWIM/Lifeguard failure detection and
 * Scuttlebutt anti-entropy. Other mesh services (location, outbox, libp2p transport) add their
 * exports here.
 */
export {
  MeshTransportError,
  type MeshMessage,
  type MeshTransport,
  type MeshTransportErrorCode,
  type MessageHandler,
  type MessageValidator,
  type PeerEvents,
  type PeerId,
  type RequestHandler,
  type RequestOptions,
  type ValidationResult,
} from './transport.js';
export { MemoryNetwork, MemoryTransport, memoryAddress, type LinkFaults, type MemoryNetworkOptions } from './memory-network.js';

export {
  CellMesh,
  type CellMeshInit,
  type CellMeshState,
  type CellRecordPatch,
  type PeerListener,
} from './cell-mesh.js';
export { INCARNATION_KEY } from './own-record.js';
export {
  CELL_ID_PATTERN,
  CellIdSchema,
  CellRecordSchema,
  RECORD_LIMITS,
  SIGNING_CONTEXT,
  SignedRecordSchema,
  canonicalJson,
  compareRecordOrder,
  isRouterRecord,
  openSignedRecord,
  signRecord,
  type CellRecord,
  type CellRecordContent,
  type CellStatus,
  type MemberRole,
  type MerchantClaim,
  type SignedRecord,
  type VerifiedRecord,
} from './cell-record.js';
export {
  Ed25519RecordSigner,
  PublicKeyRegistry,
  ed25519PublicKeyOfSeed,
  ed25519SeedFrom,
  type Ed25519PublicKey,
  type Ed25519RecordSignerInit,
  type PublicKeyOf,
  type RecordSigner,
} from './record-signer.js';
export { libp2pPublicKeyOf } from './libp2p-record-keys.js';
export {
  Directory,
  isServing,
  isTombstone,
  type ChangeListener,
  type ConflictListener,
  type DirectoryEntry,
  type DirectoryView,
  type Liveness,
  type LivenessClaim,
  type MerchantConflict,
} from './directory.js';
export { suspicionTimeoutMs } from './detector-timing.js';
export type { ExchangeResult } from './anti-entropy.js';
export {
  LAN_MEMBERSHIP_OPTIONS,
  LOCAL_MEMBERSHIP_OPTIONS,
  MEMBERSHIP_PRESETS,
  WAN_MEMBERSHIP_OPTIONS,
  membershipOptions,
  type MembershipOptions,
  type MembershipPreset,
} from './membership-config.js';
export { MembershipError, type MembershipErrorCode } from './membership-errors.js';
export {
  MembershipProtocol,
  MembershipTopic,
  type DeadClaim,
  type Heartbeat,
  type LivenessClaimMessage,
} from './membership-wire.js';
export {
  meshMetricsOn,
  noopMeshMetrics,
  type MeshMetrics,
  type ProbeOutcome,
  type RecordRejectReason,
  type RecordSource,
} from './mesh-metrics.js';
