import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJson, type ClaimProof, type MerchantClaim } from './cell-record.js';
import type { RecordSigner } from './record-signer.js';
import type { PeerId } from './transport.js';

/**
 * Proofs that let a merchant claim displace another cell's (docs/mesh.md, "Trust: who may claim
 * a merchant"). Each signature covers a context string no other protocol signs, followed by the
 * canonical JSON of the terms, so a signature made for one purpose never passes for another.
 */
export const HANDOVER_CONTEXT = 'cellmesh/handover/v1:';
export const PLACEMENT_CONTEXT = 'cellmesh/placement/v1:';

/** Text form of an operator public key: `ed25519:` and the standard base64 of its 32 raw bytes. */
export const OPERATOR_KEY_PREFIX = 'ed25519:';
const OPERATOR_KEY_PATTERN = /^ed25519:[A-Za-z0-9+/]{43}=$/;

/** What the previous home signs when it hands a merchant over (the move protocol's commit). */
export interface HandoverTerms {
  readonly tenant: string;
  readonly merchant: string;
  readonly fromCell: string;
  readonly fromPeer: string;
  readonly fromEpoch: number;
  readonly toCell: string;
  readonly toPeer: string;
  readonly epoch: number;
}

/** What an operator signs to put a merchant on a cell at an epoch. */
export interface PlacementTerms {
  readonly tenant: string;
  readonly merchant: string;
  readonly cell: string;
  readonly epoch: number;
}

/** A signed placement as the operator hands it to the target cell (`POST /v1/admin/merchants/place`). */
export interface SignedPlacement extends PlacementTerms {
  readonly key: string;
  readonly signature: string;
}

/** What checking a claim's proof found; `handover` still needs the directory's word on the signer. */
export type ProofCheck =
  | { readonly kind: 'none' }
  | { readonly kind: 'invalid' }
  | { readonly kind: 'placement' }
  | { readonly kind: 'handover'; readonly fromCell: string; readonly fromPeer: string; readonly fromEpoch: number };

/** Checks the proof of `claim` made by the cell `claimant` (whose record names `peerId`). Never throws. */
export type ClaimProofVerifier = (claim: MerchantClaim, claimant: { readonly cellId: string; readonly peerId: string }) => ProofCheck;

const encoder = new TextEncoder();

function handoverBytes(terms: HandoverTerms): Uint8Array {
  return encoder.encode(HANDOVER_CONTEXT + canonicalJson(terms));
}

function placementBytes(terms: PlacementTerms): Uint8Array {
  return encoder.encode(PLACEMENT_CONTEXT + canonicalJson({ tenant: terms.tenant, merchant: terms.merchant, cell: terms.cell, epoch: terms.epoch }));
}

/** The previous home's side: signs the handover with its own (libp2p) key. */
export function signHandover(signer: Pick<RecordSigner, 'sign'>, terms: HandoverTerms): ClaimProof {
  const signature = Buffer.from(signer.sign(handoverBytes(terms))).toString('base64');
  return { kind: 'handover', fromCell: terms.fromCell, fromPeer: terms.fromPeer, fromEpoch: terms.fromEpoch, signature };
}

/** Parses an operator public key in its text form; throws a TypeError naming what is wrong. */
export function parseOperatorKey(text: string): KeyObject {
  if (!OPERATOR_KEY_PATTERN.test(text)) throw new TypeError(`an operator key is "${OPERATOR_KEY_PREFIX}" followed by 44 base64 characters (32 bytes)`);
  const raw = Buffer.from(text.slice(OPERATOR_KEY_PREFIX.length), 'base64');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/** Whether `text` is an operator public key in its text form. */
export function isOperatorKey(text: string): boolean {
  try {
    parseOperatorKey(text);
    return true;
  } catch {
    return false;
  }
}

/** The text form of an Ed25519 public key. */
export function operatorKeyText(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || jwk.x === undefined) throw new TypeError('an operator key must be Ed25519');
  return OPERATOR_KEY_PREFIX + Buffer.from(jwk.x, 'base64url').toString('base64');
}

/** A new operator key pair: the private key as PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes) and the public key's text form. */
export function generateOperatorKeyPair(): { privateKeyPem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), publicKey: operatorKeyText(publicKey) };
}

/** Signs a placement with an operator's private key (PKCS#8 PEM). */
export function signPlacement(privateKeyPem: string, terms: PlacementTerms): SignedPlacement {
  const privateKey = createPrivateKey(privateKeyPem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new TypeError('the operator key must be an Ed25519 private key');
  const signature = Buffer.from(sign(null, placementBytes(terms), privateKey)).toString('base64');
  return { tenant: terms.tenant, merchant: terms.merchant, cell: terms.cell, epoch: terms.epoch, key: operatorKeyText(createPublicKey(privateKey)), signature };
}

/**
 * Checks claim proofs against the cell's record verifier (handovers, signed by peer keys) and the
 * configured operator keys (placements). A placement by a key not configured here is invalid:
 * that is how an operator key is revoked.
 */
export function claimProofVerifier(init: { readonly signer: Pick<RecordSigner, 'verify'>; readonly operatorKeys?: readonly string[] }): ClaimProofVerifier {
  const operatorKeys = new Map<string, KeyObject>();
  for (const text of init.operatorKeys ?? []) operatorKeys.set(text, parseOperatorKey(text));
  return (claim, claimant) => {
    const proof = claim.proof;
    if (proof === undefined) return { kind: 'none' };
    const signature = Buffer.from(proof.signature, 'base64');
    if (proof.kind === 'placement') {
      const key = operatorKeys.get(proof.key);
      if (key === undefined) return { kind: 'invalid' };
      const bytes = placementBytes({ tenant: claim.tenant, merchant: claim.merchant, cell: claimant.cellId, epoch: claim.epoch });
      return verifySafely(bytes, key, signature) ? { kind: 'placement' } : { kind: 'invalid' };
    }
    // A cell cannot hand a merchant to itself, and a handover only ever raises the epoch.
    if (proof.fromCell === claimant.cellId || proof.fromPeer === claimant.peerId || proof.fromEpoch >= claim.epoch) return { kind: 'invalid' };
    const bytes = handoverBytes({
      tenant: claim.tenant,
      merchant: claim.merchant,
      fromCell: proof.fromCell,
      fromPeer: proof.fromPeer,
      fromEpoch: proof.fromEpoch,
      toCell: claimant.cellId,
      toPeer: claimant.peerId,
      epoch: claim.epoch,
    });
    if (!init.signer.verify(proof.fromPeer as PeerId, bytes, signature)) return { kind: 'invalid' };
    return { kind: 'handover', fromCell: proof.fromCell, fromPeer: proof.fromPeer, fromEpoch: proof.fromEpoch };
  };
}

/** Checks a signed placement as the target cell receives it from an operator. */
export function placementVerifies(placement: SignedPlacement, operatorKeys: readonly string[]): boolean {
  if (!operatorKeys.includes(placement.key)) return false;
  return verifySafely(placementBytes(placement), parseOperatorKey(placement.key), Buffer.from(placement.signature, 'base64'));
}

function verifySafely(bytes: Uint8Array, key: KeyObject, signature: Uint8Array): boolean {
  try {
    return verify(null, bytes, key, signature);
  } catch {
    return false;
  }
}

/** For directories built without a verifier (unit tests): any proof counts as invalid. */
export const rejectAllProofs: ClaimProofVerifier = (claim) => (claim.proof === undefined ? { kind: 'none' } : { kind: 'invalid' });
