import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../platform/random.js';
import { canonicalJson, CellRecordSchema, isRouterRecord, openSignedRecord, signRecord, SIGNING_CONTEXT, type CellRecord } from './cell-record.js';
import { MembershipError } from './membership-errors.js';
import { ed25519PublicKeyOfSeed, ed25519SeedFrom, Ed25519RecordSigner, PublicKeyRegistry } from './record-signer.js';

function record(overrides: Partial<CellRecord> = {}): CellRecord {
  return {
    cellId: 'cell-a',
    peerId: 'peer-a',
    incarnation: 3,
    version: 7,
    status: 'alive',
    endpoints: { ws: 'wss://a.example:443/ws', http: 'https://a.example', p2p: ['/ip4/10.0.0.1/tcp/4001/p2p/peer-a'] },
    tenants: ['mall'],
    merchants: [{ tenant: 'mall', merchant: 'shop-1', epoch: 2 }],
    load: { devices: 12, messagesPerSecond: 3.5 },
    capacity: { maxDevices: 1000 },
    ...overrides,
  };
}

function keys(seed = 1) {
  const random = new SeededRandom(seed);
  const registry = new PublicKeyRegistry();
  const seedA = ed25519SeedFrom(random);
  const seedB = ed25519SeedFrom(random);
  registry.set('peer-a', ed25519PublicKeyOfSeed(seedA));
  registry.set('peer-b', ed25519PublicKeyOfSeed(seedB));
  return {
    a: new Ed25519RecordSigner({ privateKey: seedA, publicKeyOf: registry.publicKeyOf }),
    b: new Ed25519RecordSigner({ privateKey: seedB, publicKeyOf: registry.publicKeyOf }),
    registry,
  };
}

describe('CellRecord schema', () => {
  it('accepts a complete record and rejects malformed fields', () => {
    expect(CellRecordSchema.safeParse(record()).success).toBe(true);
    const bad: Array<Partial<CellRecord> | Record<string, unknown>> = [
      { cellId: 'Cell-A' },
      { cellId: '-a' },
      { cellId: 'a'.repeat(65) },
      { incarnation: -1 },
      { version: 1.5 },
      { status: 'dead' as never },
      { endpoints: { ws: 'http://a', http: 'https://a', p2p: [] } },
      { endpoints: { ws: 'ws://a', http: 'not a url', p2p: [] } },
      { merchants: [{ tenant: 'mall', merchant: 'x', epoch: -1 }] },
      { merchants: [{ tenant: 'mall', merchant: 'x', epoch: 0 }, { tenant: 'mall', merchant: 'x', epoch: 1 }] },
      { load: { devices: -1, messagesPerSecond: 0 } },
    ];
    for (const overrides of bad) expect(CellRecordSchema.safeParse({ ...record(), ...overrides }).success, JSON.stringify(overrides)).toBe(false);
  });

  it('encodes canonically: the same record gives the same text whatever the key order', () => {
    const a = record();
    const { capacity, load, ...rest } = a;
    const b = JSON.parse(JSON.stringify({ capacity, load, ...rest })) as CellRecord;
    expect(Object.keys(b)[0]).toBe('capacity');
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] })).toBe('{"a":[{"c":2,"d":1}],"b":1}');
  });
});

describe('signed records', () => {
  it('round-trips through sign and open', () => {
    const { a } = keys();
    const verified = signRecord(record(), a);
    const opened = openSignedRecord(JSON.parse(JSON.stringify(verified.signed)), a);
    expect(opened).toEqual({ ok: true, verified });
  });

  it('rejects a tampered record, a record signed by another key and malformed envelopes', () => {
    const { a, b } = keys();
    const { signed } = signRecord(record(), a);
    const tampered = { ...signed, record: signed.record.replace('"version":7', '"version":8') };
    expect(openSignedRecord(tampered, b)).toEqual({ ok: false, reason: 'bad-signature' });
    // peer-b signs a record naming peer-a: verified against peer-a's key, it fails.
    const forged = signRecord(record(), b);
    expect(openSignedRecord(forged.signed, a)).toEqual({ ok: false, reason: 'bad-signature' });
    // An unknown peer has no key: never valid.
    const unknown = signRecord(record({ peerId: 'peer-zz' }), a);
    expect(openSignedRecord(unknown.signed, a)).toEqual({ ok: false, reason: 'bad-signature' });
    expect(openSignedRecord({ record: '{', signature: signed.signature }, a)).toEqual({ ok: false, reason: 'malformed' });
    expect(openSignedRecord({ record: signed.record }, a)).toEqual({ ok: false, reason: 'malformed' });
    expect(openSignedRecord('nope', a)).toEqual({ ok: false, reason: 'malformed' });
    const invalidRecord = signRecord(record(), a).signed.record.replace('"cell-a"', '"CELL A"');
    expect(openSignedRecord({ record: invalidRecord, signature: signed.signature }, a)).toEqual({ ok: false, reason: 'malformed' });
  });

  it('signs with a domain-separation context, so a bare signature of the JSON does not verify', () => {
    const { a } = keys();
    const { signed } = signRecord(record(), a);
    const bare = Buffer.from(a.sign(new TextEncoder().encode(signed.record))).toString('base64');
    expect(openSignedRecord({ record: signed.record, signature: bare }, a)).toEqual({ ok: false, reason: 'bad-signature' });
    expect(SIGNING_CONTEXT).toMatch(/cellmesh/);
  });

  it('refuses to sign an invalid own record with INVALID_RECORD', () => {
    const { a } = keys();
    expect(() => signRecord(record({ cellId: 'UPPER' }), a)).toThrow(MembershipError);
    try {
      signRecord(record({ tenants: [''] }), a);
    } catch (error) {
      expect((error as MembershipError).code).toBe('INVALID_RECORD');
    }
  });
});

describe('Ed25519RecordSigner', () => {
  it('accepts libp2p-style 64-byte private keys and KeyObjects', () => {
    const random = new SeededRandom(9);
    const seed = ed25519SeedFrom(random);
    const publicKey = ed25519PublicKeyOfSeed(seed);
    const registry = new PublicKeyRegistry();
    registry.set('p', publicKey);
    const fromSeed = new Ed25519RecordSigner({ privateKey: seed, publicKeyOf: registry.publicKeyOf });
    const fromRaw64 = new Ed25519RecordSigner({ privateKey: new Uint8Array([...seed, ...publicKey]), publicKeyOf: registry.publicKeyOf });
    const bytes = new TextEncoder().encode('hello');
    expect(fromSeed.verify('p', bytes, fromRaw64.sign(bytes))).toBe(true);
    expect(Buffer.from(fromSeed.publicKey())).toEqual(Buffer.from(publicKey));

    const pair = generateKeyPairSync('ed25519');
    const fromKeyObject = new Ed25519RecordSigner({ privateKey: pair.privateKey, publicKeyOf: (peer) => (peer === 'k' ? pair.publicKey : undefined) });
    expect(fromKeyObject.verify('k', bytes, fromKeyObject.sign(bytes))).toBe(true);
    expect(fromKeyObject.verify('p', bytes, fromKeyObject.sign(bytes))).toBe(false);
    expect(fromKeyObject.verify('k', bytes, new Uint8Array(10))).toBe(false);
  });

  it('keeps at most maxCachedKeys parsed keys and still verifies evicted peers', () => {
    const random = new SeededRandom(5);
    const registry = new PublicKeyRegistry();
    const seeds = Array.from({ length: 4 }, (_, index) => {
      const seed = ed25519SeedFrom(random);
      registry.set(`p${index}`, ed25519PublicKeyOfSeed(seed));
      return seed;
    });
    let lookups = 0;
    const verifier = new Ed25519RecordSigner({
      privateKey: seeds[0] as Uint8Array,
      publicKeyOf: (peer) => {
        lookups++;
        return registry.publicKeyOf(peer);
      },
      maxCachedKeys: 2,
    });
    const bytes = new TextEncoder().encode('x');
    for (let round = 0; round < 2; round++) {
      seeds.forEach((seed, index) => {
        const signer = new Ed25519RecordSigner({ privateKey: seed, publicKeyOf: registry.publicKeyOf });
        expect(verifier.verify(`p${index}`, bytes, signer.sign(bytes))).toBe(true);
      });
    }
    // With room for 2 keys and 4 peers visited in turn, every visit is a cache miss.
    expect(lookups).toBe(8);
  });
});

describe('router records', () => {
  it('accept a router that hosts nothing, refuse one that claims tenants or merchants, and survive a reader that predates roles', () => {
    const router = record({ role: 'router', tenants: [], merchants: [] });
    expect(CellRecordSchema.safeParse(router).success).toBe(true);
    expect(isRouterRecord(router)).toBe(true);
    expect(isRouterRecord(record())).toBe(false);
    expect(CellRecordSchema.safeParse({ ...router, merchants: [{ tenant: 'mall', merchant: 'shop-1', epoch: 0 }] }).success).toBe(false);
    expect(CellRecordSchema.safeParse({ ...router, tenants: ['mall'] }).success).toBe(false);
    expect(CellRecordSchema.safeParse({ ...router, role: 'observer' }).success).toBe(false);
    // The role is signed with the record and comes back from the wire as sent.
    const { a } = keys();
    const signed = signRecord(router, a);
    expect(signed.signed.record).toContain('"role":"router"');
    const opened = openSignedRecord(signed.signed, a);
    expect(opened.ok && opened.verified.record.role).toBe('router');
    // A reader without roles strips the field from its parsed copy and sees a member hosting nothing.
    const { role: _role, ...older } = CellRecordSchema.parse(router);
    expect(older.merchants).toEqual([]);
  });
});
