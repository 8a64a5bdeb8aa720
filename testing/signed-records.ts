import { signRecord, type CellRecord, type VerifiedRecord } from '../mesh/cell-record.js';
import { ed25519PublicKeyOfSeed, ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry } from '../mesh/record-signer.js';
import { SeededRandom } from '../platform/random.js';

/** Cell records signed as their cells would sign them, for tests of what reads the directory. */
export interface SignedRecords {
  /** The signer of `peer` (one key per peer id, made on first use). */
  signerOf(peer: string): Ed25519RecordSigner;
  /** An alive cell's record serving tenant `mall` with no merchants, signed by `peer-<cellId>` unless `extra.peerId` names another. */
  record(cellId: string, order: { incarnation: number; version: number }, extra?: Partial<CellRecord>): VerifiedRecord;
}

export function signedRecords(seed: number): SignedRecords {
  const random = new SeededRandom(seed);
  const registry = new PublicKeyRegistry();
  const signers = new Map<string, Ed25519RecordSigner>();
  const signerOf = (peer: string): Ed25519RecordSigner => {
    let signer = signers.get(peer);
    if (signer === undefined) {
      const privateKey = ed25519SeedFrom(random);
      registry.set(peer, ed25519PublicKeyOfSeed(privateKey));
      signer = new Ed25519RecordSigner({ privateKey, publicKeyOf: registry.publicKeyOf });
      signers.set(peer, signer);
    }
    return signer;
  };
  return {
    signerOf,
    record: (cellId, order, extra = {}) => {
      const peerId = extra.peerId ?? `peer-${cellId}`;
      return signRecord(
        {
          cellId,
          peerId,
          incarnation: order.incarnation,
          version: order.version,
          status: 'alive',
          endpoints: { ws: `ws://${cellId}.test/v1/ws`, http: `http://${cellId}.test`, p2p: [`/memory/${peerId}/p2p/${peerId}`] },
          tenants: ['mall'],
          merchants: [],
          load: { devices: 0, messagesPerSecond: 0 },
          capacity: { maxDevices: 100 },
          ...extra,
        },
        signerOf(peerId),
      );
    },
  };
}
