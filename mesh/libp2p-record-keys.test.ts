import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { expect, it } from 'vitest';
import { libp2pPublicKeyOf } from './libp2p-record-keys.js';
import { Ed25519RecordSigner } from './record-signer.js';

it('verifies record signatures made with a libp2p Ed25519 key against its peer id', async () => {
  const key = await generateKeyPair('Ed25519');
  const other = await generateKeyPair('Ed25519');
  const peerId = peerIdFromPrivateKey(key).toString();
  const signer = new Ed25519RecordSigner({ privateKey: key.raw, publicKeyOf: libp2pPublicKeyOf });
  const bytes = new TextEncoder().encode('record');
  expect(signer.verify(peerId, bytes, signer.sign(bytes))).toBe(true);
  expect(signer.verify(peerIdFromPrivateKey(other).toString(), bytes, signer.sign(bytes))).toBe(false);
  expect(libp2pPublicKeyOf('not-a-peer-id')).toBeUndefined();
  const secp256k1 = await generateKeyPair('secp256k1');
  expect(libp2pPublicKeyOf(peerIdFromPrivateKey(secp256k1).toString())).toBeUndefined();
});
