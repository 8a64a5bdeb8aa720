import { describe, expect, it } from 'vitest';
import { type CellRecord, type ClaimProof, type MerchantClaim, type VerifiedRecord } from './cell-record.js';
import { claimProofVerifier, generateOperatorKeyPair, signHandover, signPlacement } from './claim-proof.js';
import { Directory, type MerchantConflict } from './directory.js';
import { InvariantError } from '../platform/invariant.js';
import { signedRecords } from '../testing/signed-records.js';

const { signerOf, record } = signedRecords(42);

function rec(cellId: string, order: [number, number], extra: Partial<CellRecord> = {}): VerifiedRecord {
  return record(cellId, { incarnation: order[0], version: order[1] }, extra);
}

function claims(...list: Array<[string, number]>): MerchantClaim[] {
  return list.map(([merchant, epoch]) => ({ tenant: 'mall', merchant, epoch }));
}

/** The claim of `to` at `epoch`, with the handover `from` signed for it (from its claim at `fromEpoch`). */
function handedOver(merchant: string, from: string, fromEpoch: number, to: string, epoch: number, signedBy = from): MerchantClaim {
  const terms = { tenant: 'mall', merchant, fromCell: from, fromPeer: `peer-${from}`, fromEpoch, toCell: to, toPeer: `peer-${to}`, epoch };
  const proof: ClaimProof = signHandover(signerOf(`peer-${signedBy}`), terms);
  return { tenant: 'mall', merchant, epoch, proof };
}

function directory(overrides: Partial<ConstructorParameters<typeof Directory>[0]> = {}): Directory {
  const dir = new Directory({
    selfCellId: 'self',
    maxCells: 100,
    maxTombstones: 10,
    tombstoneRetentionMs: 60_000,
    verifyClaimProof: claimProofVerifier({ signer: signerOf('peer-self') }),
    ...overrides,
  });
  dir.setOwn(rec('self', [0, 0]), 0);
  return dir;
}

describe('Directory merge', () => {
  it('refuses, as a broken invariant, an own record that is not newer than the one it holds', () => {
    const dir = directory();
    dir.setOwn(rec('self', [1, 3]), 0);
    expect(() => dir.setOwn(rec('self', [1, 3]), 1)).toThrow(InvariantError);
    expect(() => dir.setOwn(rec('self', [1, 2]), 1)).toThrow('not newer than 1.3');
    dir.setOwn(rec('self', [1, 4]), 2);
    expect(dir.get('self')?.record.version).toBe(4);
  });

  it('keeps the newer (incarnation, version) and ignores older or equal records', () => {
    const dir = directory();
    expect(dir.mergeRecord(rec('a', [1, 5]), { nowMs: 0, heard: true })).toBe('added');
    expect(dir.mergeRecord(rec('a', [1, 5]), { nowMs: 1, heard: true })).toBe('stale');
    expect(dir.mergeRecord(rec('a', [1, 4]), { nowMs: 1, heard: true })).toBe('stale');
    expect(dir.mergeRecord(rec('a', [0, 99]), { nowMs: 1, heard: true })).toBe('stale');
    expect(dir.mergeRecord(rec('a', [1, 6]), { nowMs: 2, heard: true })).toBe('updated');
    expect(dir.mergeRecord(rec('a', [2, 0]), { nowMs: 3, heard: true })).toBe('updated');
    expect(dir.get('a')?.record.incarnation).toBe(2);
  });

  it('reports every change with the entries before and after', () => {
    const dir = directory();
    const seen: Array<[string, string | undefined, string | undefined]> = [];
    dir.onChange((cellId, before, after) => seen.push([cellId, before?.liveness, after?.liveness]));
    dir.mergeRecord(rec('a', [0, 0]), { nowMs: 0, heard: true });
    dir.applyClaim('a', { kind: 'suspect', incarnation: 0 }, 1);
    dir.mergeRecord(rec('a', [1, 0]), { nowMs: 2, heard: true });
    expect(seen).toEqual([
      ['a', undefined, 'alive'],
      ['a', 'alive', 'suspect'],
      ['a', 'suspect', 'alive'],
    ]);
  });

  it('binds a cell id to its peer while it lives, and a peer to one cell id', () => {
    const dir = directory();
    dir.mergeRecord(rec('a', [0, 0]), { nowMs: 0, heard: true });
    expect(dir.mergeRecord(rec('a', [5, 0], { peerId: 'peer-intruder' }), { nowMs: 1, heard: true })).toBe('peer-mismatch');
    expect(dir.mergeRecord(rec('b', [0, 0], { peerId: 'peer-a' }), { nowMs: 1, heard: true })).toBe('peer-mismatch');
    // Once the old owner is dead, a new key may take the cell id over (a cell rebuilt from scratch).
    dir.applyClaim('a', { kind: 'dead', incarnation: 0 }, 2);
    expect(dir.mergeRecord(rec('a', [1, 0], { peerId: 'peer-new' }), { nowMs: 3, heard: true })).toBe('updated');
    expect(dir.cellOfPeer('peer-new')).toBe('a');
    expect(dir.cellOfPeer('peer-a')).toBeUndefined();
    expect(dir.peerOf('a')).toBe('peer-new');
  });
});

describe('Directory liveness claims', () => {
  it('applies claims only at or above the held incarnation; a newer incarnation clears them', () => {
    const dir = directory();
    dir.mergeRecord(rec('a', [3, 0]), { nowMs: 0, heard: true });
    expect(dir.applyClaim('a', { kind: 'suspect', incarnation: 2 }, 1)).toBe('stale');
    expect(dir.applyClaim('a', { kind: 'suspect', incarnation: 3 }, 1)).toBe('applied');
    expect(dir.get('a')?.liveness).toBe('suspect');
    expect(dir.applyClaim('a', { kind: 'suspect', incarnation: 3 }, 1)).toBe('redundant');
    // A newer version in the same incarnation does not refute.
    dir.mergeRecord(rec('a', [3, 1]), { nowMs: 2, heard: true });
    expect(dir.get('a')?.liveness).toBe('suspect');
    expect(dir.applyClaim('a', { kind: 'dead', incarnation: 3 }, 3)).toBe('applied');
    expect(dir.applyClaim('a', { kind: 'suspect', incarnation: 3 }, 3)).toBe('redundant');
    expect(dir.get('a')?.liveness).toBe('dead');
    expect(dir.deadClaims()).toEqual([{ cellId: 'a', incarnation: 3 }]);
    dir.mergeRecord(rec('a', [4, 0]), { nowMs: 4, heard: true });
    expect(dir.get('a')?.liveness).toBe('alive');
    expect(dir.get('a')?.claim).toBeUndefined();
  });

  it('keeps a claim about an incarnation not seen yet against the record of that incarnation', () => {
    const dir = directory();
    dir.mergeRecord(rec('a', [1, 0]), { nowMs: 0, heard: true });
    expect(dir.applyClaim('a', { kind: 'dead', incarnation: 2 }, 1)).toBe('applied');
    dir.mergeRecord(rec('a', [2, 3]), { nowMs: 2, heard: false });
    expect(dir.get('a')?.liveness).toBe('dead');
    dir.mergeRecord(rec('a', [3, 0]), { nowMs: 3, heard: false });
    expect(dir.get('a')?.liveness).toBe('alive');
  });

  it('follows the status of the record: leaving, then left (final for that incarnation)', () => {
    const dir = directory();
    dir.mergeRecord(rec('a', [0, 0]), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('a', [0, 1], { status: 'leaving' }), { nowMs: 1, heard: true });
    expect(dir.get('a')?.liveness).toBe('leaving');
    dir.mergeRecord(rec('a', [0, 2], { status: 'left' }), { nowMs: 2, heard: true });
    expect(dir.get('a')?.liveness).toBe('left');
    expect(dir.applyClaim('a', { kind: 'dead', incarnation: 0 }, 3)).toBe('redundant');
    dir.mergeRecord(rec('a', [1, 0]), { nowMs: 4, heard: true });
    expect(dir.get('a')?.liveness).toBe('alive');
  });
});

describe('Directory home cells and conflicts', () => {
  it('picks the highest epoch among serving claimants; ties go to the lowest cell id and are reported once', () => {
    const dir = directory();
    const conflicts: MerchantConflict[] = [];
    dir.onConflict((conflict) => conflicts.push(conflict));
    dir.mergeRecord(rec('c2', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
    dir.mergeRecord(rec('c1', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    expect(conflicts).toEqual([{ tenant: 'mall', merchant: 'shop', epoch: 0, claimants: ['c1', 'c2'], winner: 'c1' }]);
    // An unrelated change of a claimant does not report the same conflict again.
    dir.mergeRecord(rec('c2', [0, 1], { merchants: claims(['shop', 0]), load: { devices: 5, messagesPerSecond: 1 } }), { nowMs: 1, heard: true });
    expect(conflicts).toHaveLength(1);
    expect(dir.conflicts()).toHaveLength(1);
    // A third claimant at the same epoch is a new conflict.
    dir.mergeRecord(rec('c0', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 2, heard: true });
    expect(conflicts).toHaveLength(2);
    expect(conflicts[1]?.winner).toBe('c0');
    // A move: c3 claims epoch 1 with the handover of c0, the home; it wins, and the conflict at epoch 0 no longer matters.
    dir.mergeRecord(rec('c3', [0, 0], { merchants: [handedOver('shop', 'c0', 0, 'c3', 1)] }), { nowMs: 3, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c3');
    expect(dir.conflicts()).toEqual([]);
    expect(dir.homeCellOf('mall', 'nobody')).toBeUndefined();
    expect(dir.homeCellOf('other-tenant', 'shop')).toBeUndefined();
  });

  it('keeps a dead winner as the home (its merchants wait for it), and lets go of a claimant only when it left', () => {
    const dir = directory();
    dir.mergeRecord(rec('c1', [0, 0], { merchants: [handedOver('shop', 'c2', 0, 'c1', 1)] }), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('c2', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    dir.applyClaim('c1', { kind: 'suspect', incarnation: 0 }, 1);
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    // Dead may only mean "across a partition": passing shop to c2 would give it two homes.
    dir.applyClaim('c1', { kind: 'dead', incarnation: 0 }, 2);
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    dir.mergeRecord(rec('c1', [0, 1], { merchants: [handedOver('shop', 'c2', 0, 'c1', 1)], status: 'left' }), { nowMs: 3, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
    dir.mergeRecord(rec('c2', [0, 1], { merchants: claims(['shop', 0]), status: 'left' }), { nowMs: 4, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBeUndefined();
  });
});

describe('Directory: who may displace a home', () => {
  it('ignores a claim above the home without proof, reports it as a conflict, and lets it in only once nobody else holds the merchant', () => {
    const dir = directory();
    const conflicts: MerchantConflict[] = [];
    dir.onConflict((conflict) => conflicts.push(conflict));
    dir.mergeRecord(rec('c1', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('c9', [0, 0], { merchants: claims(['shop', 99]) }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    expect(conflicts).toEqual([{ tenant: 'mall', merchant: 'shop', epoch: 0, claimants: ['c1'], winner: 'c1', unproven: [{ cellId: 'c9', epoch: 99 }] }]);
    // A proof that does not verify is no proof.
    const garbled: MerchantClaim = { ...handedOver('shop', 'c1', 0, 'c9', 100), proof: { kind: 'handover', fromCell: 'c1', fromPeer: 'peer-c1', fromEpoch: 0, signature: Buffer.alloc(64).toString('base64') } };
    dir.mergeRecord(rec('c9', [0, 1], { merchants: [garbled] }), { nowMs: 1, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    // The home leaves: the merchant is nobody's, and the claim is a first claim.
    dir.mergeRecord(rec('c1', [0, 1], { merchants: claims(['shop', 0]), status: 'left' }), { nowMs: 2, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c9');
    expect(dir.conflicts()).toEqual([]);
  });

  it('takes a handover only from the home: signed by its peer for its claim, or listed in its record once it dropped the claim', () => {
    const dir = directory();
    dir.mergeRecord(rec('c1', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('c3', [0, 0]), { nowMs: 0, heard: true });
    // Another member signs a "handover" of a merchant it never held: no.
    dir.mergeRecord(rec('c2', [0, 0], { merchants: [handedOver('shop', 'c3', 0, 'c2', 1)] }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    // It signs one in the home's name with its own key: no.
    dir.mergeRecord(rec('c2', [0, 1], { merchants: [handedOver('shop', 'c1', 0, 'c2', 1, 'c3')] }), { nowMs: 1, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    expect(dir.conflicts()[0]?.unproven).toEqual([{ cellId: 'c2', epoch: 1 }]);
    // The home signs it (a move under way): yes, at once, and the conflict clears.
    dir.mergeRecord(rec('c2', [0, 2], { merchants: [handedOver('shop', 'c1', 0, 'c2', 1)] }), { nowMs: 2, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
    expect(dir.conflicts()).toEqual([]);
    // The old home drops its claim and notes the handover; a stranger claiming the merchant at a lower epoch changes nothing.
    dir.mergeRecord(rec('c1', [0, 1], { handedOver: [{ tenant: 'mall', merchant: 'shop', toCell: 'c2', epoch: 1 }] }), { nowMs: 3, heard: true });
    dir.mergeRecord(rec('c5', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 3, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
    // A cell joining later sees the same records and picks the same home.
    const later = directory();
    for (const cellId of ['c5', 'c2', 'c3', 'c1']) later.mergeRecord({ record: dir.get(cellId)!.record, signed: dir.get(cellId)!.signed }, { nowMs: 4, heard: false });
    expect(later.homeCellOf('mall', 'shop')).toBe('c2');
    // Had the old home not noted it, the handover could not be told from one signed by any member.
    dir.mergeRecord(rec('c1', [0, 2]), { nowMs: 5, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c5');
    expect(dir.conflicts()[0]?.unproven).toEqual([{ cellId: 'c2', epoch: 1 }]);
  });

  it('takes a placement signed by a configured operator key, and none signed by another key', () => {
    const operator = generateOperatorKeyPair();
    const stranger = generateOperatorKeyPair();
    const dir = directory({ verifyClaimProof: claimProofVerifier({ signer: signerOf('peer-self'), operatorKeys: [operator.publicKey] }) });
    dir.mergeRecord(rec('c1', [0, 0], { merchants: claims(['shop', 0]) }), { nowMs: 0, heard: true });
    const placed = (privateKeyPem: string, epoch: number): MerchantClaim => {
      const placement = signPlacement(privateKeyPem, { tenant: 'mall', merchant: 'shop', cell: 'c2', epoch });
      return { tenant: 'mall', merchant: 'shop', epoch, proof: { kind: 'placement', key: placement.key, signature: placement.signature } };
    };
    dir.mergeRecord(rec('c2', [0, 0], { merchants: [placed(stranger.privateKeyPem, 1)] }), { nowMs: 0, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c1');
    dir.mergeRecord(rec('c2', [0, 1], { merchants: [placed(operator.privateKeyPem, 1)] }), { nowMs: 1, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
    // The placement names its cell: another cell cannot reuse it.
    dir.mergeRecord(rec('c4', [0, 0], { merchants: [{ ...placed(operator.privateKeyPem, 2) }] }), { nowMs: 2, heard: true });
    expect(dir.homeCellOf('mall', 'shop')).toBe('c2');
  });
});

describe('Directory bounds', () => {
  it('holds at most maxCells, making room by dropping the oldest tombstone', () => {
    const dir = directory({ maxCells: 3, maxTombstones: 2 });
    dir.mergeRecord(rec('a', [0, 0]), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('b', [0, 0]), { nowMs: 0, heard: true });
    expect(dir.assess(rec('c', [0, 0]).record)).toBe('directory-full');
    expect(dir.mergeRecord(rec('c', [0, 0]), { nowMs: 0, heard: true })).toBe('directory-full');
    dir.applyClaim('a', { kind: 'dead', incarnation: 0 }, 5);
    expect(dir.mergeRecord(rec('c', [0, 0]), { nowMs: 6, heard: true })).toBe('added');
    expect(dir.get('a')).toBeUndefined();
    expect(dir.size).toBe(3);
  });

  it('keeps at most maxTombstones tombstones and expires them after the retention', () => {
    const dir = directory({ maxTombstones: 2, tombstoneRetentionMs: 1_000 });
    for (const [index, cellId] of ['a', 'b', 'c', 'd'].entries()) {
      dir.mergeRecord(rec(cellId, [0, 0]), { nowMs: 0, heard: true });
      dir.applyClaim(cellId, { kind: 'dead', incarnation: 0 }, index * 100);
    }
    expect([...dir.values()].map((entry) => entry.record.cellId).sort()).toEqual(['c', 'd', 'self']);
    expect(dir.sweep(1_050)).toBe(0);
    expect(dir.sweep(1_200)).toBe(1);
    expect(dir.get('c')).toBeUndefined();
    expect(dir.sweep(1_300)).toBe(1);
    expect(dir.size).toBe(1);
  });

  it('counts a tombstone out again when its cell refutes, leaves or is forgotten', () => {
    const dir = directory({ maxTombstones: 2, tombstoneRetentionMs: 1_000 });
    for (const cellId of ['a', 'b', 'c', 'd']) dir.mergeRecord(rec(cellId, [0, 0]), { nowMs: 0, heard: true });
    // a dies and refutes, b dies and is forgotten: neither is a tombstone any more.
    dir.applyClaim('a', { kind: 'dead', incarnation: 0 }, 10);
    dir.mergeRecord(rec('a', [1, 0]), { nowMs: 20, heard: true });
    dir.applyClaim('b', { kind: 'dead', incarnation: 0 }, 30);
    expect(dir.sweep(1_100)).toBe(1);
    // Two tombstones now fit the bound: c, and d (which leaves); a third evicts the oldest.
    dir.applyClaim('c', { kind: 'dead', incarnation: 0 }, 1_200);
    dir.mergeRecord(rec('d', [0, 1], { status: 'left' }), { nowMs: 1_300, heard: true });
    expect([...dir.values()].map((entry) => `${entry.record.cellId}:${entry.liveness}`).sort()).toEqual(['a:alive', 'c:dead', 'd:left', 'self:alive']);
    dir.applyClaim('a', { kind: 'dead', incarnation: 1 }, 1_400);
    expect([...dir.values()].map((entry) => entry.record.cellId).sort()).toEqual(['a', 'd', 'self']);
  });
});

describe('Directory digests', () => {
  it('lists records newer than a digest and cells where the digest is newer', () => {
    const dir = directory();
    dir.mergeRecord(rec('a', [1, 1]), { nowMs: 0, heard: true });
    dir.mergeRecord(rec('b', [0, 4]), { nowMs: 0, heard: true });
    const digest = { self: [0, 0], a: [1, 2], b: [0, 3], z: [0, 0] } as Record<string, [number, number]>;
    expect([...dir.newerThan(digest)].map((signed) => JSON.parse(signed.record).cellId)).toEqual(['b']);
    expect(dir.olderThan(digest).sort()).toEqual(['a', 'z']);
    expect(dir.digest()).toEqual({ self: [0, 0], a: [1, 1], b: [0, 4] });
  });
});
