import { peerIdFromString } from '@libp2p/peer-id';
import type { PublicKeyOf } from './record-signer.js';

/**
 * The PublicKeyOf of a libp2p cluster: an Ed25519 libp2p peer id (12D3KooW...) embeds its public
 * key, so a record's signature is checked against the key its own peer id names, with no
 * registry. Other key types (RSA, secp256k1) and malformed ids yield undefined: their records
 * never verify. For the own key, pass libp2p's raw Ed25519 private key (64 bytes) to
 * Ed25519RecordSigner; the record signature then matches the peer id gossipsub signs with.
 */
export const libp2pPublicKeyOf: PublicKeyOf = (peerId) => {
  try {
    const id = peerIdFromString(peerId);
    return id.type === 'Ed25519' ? id.publicKey.raw : undefined;
  } catch {
    return undefined;
  }
};
