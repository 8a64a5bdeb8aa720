import { createHash, createHmac } from 'node:crypto';
import type { Identity } from '../cell/access/tokens.js';
import { Ed25519RecordSigner, PublicKeyRegistry, ed25519PublicKeyOfSeed, ed25519SeedFrom, type RecordSigner } from '../mesh/record-signer.js';
import type { PeerId } from '../mesh/transport.js';
import { stream } from './rng.js';

export type SignatureMode = 'ed25519' | 'hmac';

/**
 * Record signatures in the simulator. `ed25519` is the production signer with keys drawn from
 * the seed. `hmac` keeps the protocol's checks (every record is signed by its own cell and
 * verified by every receiver against the key of the peer it names) but with HMAC-SHA512 under a
 * per-peer key, which costs a few microseconds instead of the ~50 µs of an Ed25519
 * verification: at 1,000 cells every record change is verified a thousand times. The tag has
 * the 64 bytes of an Ed25519 signature, so envelopes keep their production size.
 */
export class SimKeyring {
  private readonly ed25519Keys = new PublicKeyRegistry();
  private readonly ed25519Seeds = new Map<PeerId, Uint8Array>();
  private readonly hmacKeys = new Map<PeerId, Buffer>();

  constructor(
    private readonly seed: number,
    readonly mode: SignatureMode,
  ) {}

  signerFor(peer: PeerId): RecordSigner {
    if (this.mode === 'ed25519') {
      let seed = this.ed25519Seeds.get(peer);
      if (seed === undefined) {
        seed = ed25519SeedFrom(stream(this.seed, `ed25519/${peer}`));
        this.ed25519Seeds.set(peer, seed);
        this.ed25519Keys.set(peer, ed25519PublicKeyOfSeed(seed));
      }
      return new Ed25519RecordSigner({ privateKey: seed, publicKeyOf: this.ed25519Keys.publicKeyOf });
    }
    const own = this.hmacKeyOf(peer);
    return {
      sign: (bytes) => createHmac('sha512', own).update(bytes).digest(),
      verify: (peerId, bytes, signature) => {
        const key = this.hmacKeys.get(peerId);
        if (key === undefined || signature.length !== 64) return false;
        return createHmac('sha512', key).update(bytes).digest().equals(signature);
      },
    };
  }

  private hmacKeyOf(peer: PeerId): Buffer {
    let key = this.hmacKeys.get(peer);
    if (key === undefined) {
      key = createHash('sha256').update(`cellmesh-sim/${this.seed}/${peer}`).digest();
      this.hmacKeys.set(peer, key);
    }
    return key;
  }
}

/**
 * Mints an HS256 device token synchronously, with the claims `mintToken` (cell/access/tokens.ts)
 * writes. jose signs through WebCrypto, which completes on the thread pool at a moment that
 * depends on the machine; the simulator must not wait for anything outside its virtual time.
 */
export function mintTokenSync(secret: string, identity: Omit<Identity, 'expiresAtMs'>, issuedAtMs: number, ttlSeconds: number): string {
  const issuedAtSeconds = Math.floor(issuedAtMs / 1000);
  const claims: Record<string, string | number> = { tenant: identity.tenant, role: identity.role, device: identity.device };
  if (identity.merchant !== undefined) claims['merchant'] = identity.merchant;
  claims['sub'] = identity.user;
  claims['iat'] = issuedAtSeconds;
  claims['exp'] = issuedAtSeconds + ttlSeconds;
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = base64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}
