import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { Random } from '../platform/random.js';
import type { PeerId } from './transport.js';

/**
 * The signing port of cell records. Each cell signs its own record; every receiver verifies a
 * record against the public key of the peer the record names, so a record can be relayed by
 * anyone (anti-entropy) but written only by its own cell.
 *
 * Contract: `sign` is deterministic for a given key and bytes (Ed25519 is) and never blocks on
 * I/O; `verify` returns false (never throws) for an unknown peer, a malformed signature or a
 * signature by another key.
 */
export interface RecordSigner {
  /** Signs `bytes` with this cell's own private key. */
  sign(bytes: Uint8Array): Uint8Array;
  /** True when `signature` over `bytes` was made by the private key of `peerId`. */
  verify(peerId: PeerId, bytes: Uint8Array, signature: Uint8Array): boolean;
}

/** A raw 32-byte Ed25519 public key, or a node:crypto KeyObject holding one. */
export type Ed25519PublicKey = Uint8Array | KeyObject;

/**
 * Where a peer's public key comes from. The libp2p adapter reads it out of the peer id (an
 * Ed25519 libp2p peer id embeds its public key); the memory network of tests and the simulator
 * keeps a registry (PublicKeyRegistry). Return undefined for an unknown peer.
 */
export type PublicKeyOf = (peerId: PeerId) => Ed25519PublicKey | undefined;

export interface Ed25519RecordSignerInit {
  /**
   * The own private key: a raw 32-byte seed, libp2p's raw 64-byte form (seed followed by the
   * public key), or a node:crypto private KeyObject of type ed25519.
   */
  readonly privateKey: Uint8Array | KeyObject;
  readonly publicKeyOf: PublicKeyOf;
  /** Parsed public keys kept at most (oldest dropped first); default 4096. */
  readonly maxCachedKeys?: number;
}

// DER prefixes that turn raw Ed25519 keys into PKCS#8 / SPKI structures node:crypto imports.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const ED25519_KEY_BYTES = 32;
const ED25519_SIGNATURE_BYTES = 64;

/** Ed25519 record signatures on node:crypto (no dependency beyond Node itself). */
export class Ed25519RecordSigner implements RecordSigner {
  private readonly privateKey: KeyObject;
  private readonly publicKeyOf: PublicKeyOf;
  private readonly maxCachedKeys: number;
  /** Parsed public keys by peer id; a Map keeps insertion order, so the first key is the oldest. */
  private readonly keys = new Map<PeerId, KeyObject>();

  constructor(init: Ed25519RecordSignerInit) {
    this.privateKey = toPrivateKey(init.privateKey);
    this.publicKeyOf = init.publicKeyOf;
    this.maxCachedKeys = init.maxCachedKeys ?? 4_096;
    if (!Number.isInteger(this.maxCachedKeys) || this.maxCachedKeys < 1) throw new RangeError('maxCachedKeys must be a positive integer');
  }

  /** The raw 32-byte public key of this signer's private key. */
  publicKey(): Uint8Array {
    return rawPublicKey(createPublicKey(this.privateKey));
  }

  sign(bytes: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, bytes, this.privateKey));
  }

  verify(peerId: PeerId, bytes: Uint8Array, signature: Uint8Array): boolean {
    if (signature.length !== ED25519_SIGNATURE_BYTES) return false;
    const key = this.keyOf(peerId);
    if (key === undefined) return false;
    try {
      return verify(null, bytes, key, signature);
    } catch {
      return false;
    }
  }

  private keyOf(peerId: PeerId): KeyObject | undefined {
    const cached = this.keys.get(peerId);
    if (cached !== undefined) return cached;
    let key: KeyObject;
    try {
      const given = this.publicKeyOf(peerId);
      if (given === undefined) return undefined;
      key = toPublicKey(given);
    } catch {
      return undefined;
    }
    if (this.keys.size >= this.maxCachedKeys) {
      const oldest = this.keys.keys().next();
      if (oldest.done !== true) this.keys.delete(oldest.value);
    }
    this.keys.set(peerId, key);
    return key;
  }
}

function toPrivateKey(key: Uint8Array | KeyObject): KeyObject {
  if (!(key instanceof Uint8Array)) {
    if (key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') throw new TypeError('expected an ed25519 private KeyObject');
    return key;
  }
  // libp2p's raw Ed25519 private key is the 32-byte seed followed by the 32-byte public key.
  if (key.length !== ED25519_KEY_BYTES && key.length !== 2 * ED25519_KEY_BYTES) {
    throw new TypeError(`an Ed25519 private key is 32 (or 64) bytes, got ${key.length}`);
  }
  const seed = key.subarray(0, ED25519_KEY_BYTES);
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

function toPublicKey(key: Ed25519PublicKey): KeyObject {
  if (!(key instanceof Uint8Array)) {
    if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519') throw new TypeError('expected an ed25519 public KeyObject');
    return key;
  }
  if (key.length !== ED25519_KEY_BYTES) throw new TypeError(`an Ed25519 public key is 32 bytes, got ${key.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, key]), format: 'der', type: 'spki' });
}

function rawPublicKey(key: KeyObject): Uint8Array {
  const der = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - ED25519_KEY_BYTES));
}

/** The raw public key belonging to a 32-byte Ed25519 seed. */
export function ed25519PublicKeyOfSeed(seed: Uint8Array): Uint8Array {
  return rawPublicKey(createPublicKey(toPrivateKey(seed)));
}

/**
 * A 32-byte Ed25519 seed drawn from `random`: for tests and the simulator, where keys must be
 * reproducible from the run's seed. Production keys come from the libp2p key (or crypto).
 */
export function ed25519SeedFrom(random: Random): Uint8Array {
  const seed = new Uint8Array(ED25519_KEY_BYTES);
  for (let index = 0; index < seed.length; index++) seed[index] = Math.floor(random.next() * 256);
  return seed;
}

/**
 * Public keys by peer id, for networks whose peer ids do not embed a key (the memory network of
 * tests and the simulator). Holds one entry per registered cell.
 */
export class PublicKeyRegistry {
  private readonly keys = new Map<PeerId, Uint8Array>();

  set(peerId: PeerId, publicKey: Uint8Array): void {
    if (publicKey.length !== ED25519_KEY_BYTES) throw new TypeError('an Ed25519 public key is 32 bytes');
    this.keys.set(peerId, publicKey.slice());
  }

  delete(peerId: PeerId): void {
    this.keys.delete(peerId);
  }

  /** A PublicKeyOf function bound to this registry. */
  readonly publicKeyOf: PublicKeyOf = (peerId) => this.keys.get(peerId);
}
