import { describe, expect, it } from 'vitest';
import type { CellRecord, MerchantClaim, VerifiedRecord } from '../mesh/cell-record.js';
import { claimProofVerifier, signHandover } from '../mesh/claim-proof.js';
import { Directory } from '../mesh/directory.js';
import { signedRecords } from '../testing/signed-records.js';
import { routeRequest, routeToMerchant, summarizeDirectory } from './route.js';

const signed = signedRecords(7);
const { signerOf } = signed;

function record(cellId: string, version: number, extra: Partial<CellRecord> = {}): VerifiedRecord {
  return signed.record(cellId, { incarnation: 0, version }, extra);
}

const claim = (merchant: string, epoch: number): MerchantClaim => ({ tenant: 'mall', merchant, epoch });

function directoryOf(): Directory {
  const directory = new Directory({ selfCellId: 'edge', maxCells: 100, maxTombstones: 10, tombstoneRetentionMs: 60_000, verifyClaimProof: claimProofVerifier({ signer: signerOf('peer-edge') }) });
  directory.setOwn(record('edge', 0, { role: 'router', tenants: [] }), 0);
  directory.mergeRecord(record('a', 0, { merchants: [claim('shoes', 0), claim('books', 0)] }), { nowMs: 0, heard: true });
  directory.mergeRecord(record('b', 0, { merchants: [claim('tea', 0)] }), { nowMs: 0, heard: true });
  return directory;
}

describe('routeToMerchant', () => {
  it("answers the home's endpoints and the epoch of its claim, and follows a move to the higher epoch", () => {
    const directory = directoryOf();
    expect(routeToMerchant(directory, 'mall', 'shoes')).toEqual({ tenant: 'mall', merchant: 'shoes', cellId: 'a', epoch: 0, ws: 'ws://a.test/v1/ws', http: 'http://a.test', liveness: 'alive' });
    const proof = signHandover(signerOf('peer-a'), { tenant: 'mall', merchant: 'shoes', fromCell: 'a', fromPeer: 'peer-a', fromEpoch: 0, toCell: 'b', toPeer: 'peer-b', epoch: 1 });
    directory.mergeRecord(record('b', 1, { merchants: [claim('tea', 0), { ...claim('shoes', 1), proof }] }), { nowMs: 1, heard: true });
    expect(routeToMerchant(directory, 'mall', 'shoes')).toMatchObject({ cellId: 'b', epoch: 1, http: 'http://b.test' });
  });

  it('answers nothing for an unknown tenant, an unknown merchant, or a home that is dead', () => {
    const directory = directoryOf();
    expect(routeToMerchant(directory, 'other-mall', 'shoes')).toBeUndefined();
    expect(routeToMerchant(directory, 'mall', 'nobody')).toBeUndefined();
    directory.applyClaim('b', { kind: 'dead', incarnation: 0 }, 2);
    expect(routeToMerchant(directory, 'mall', 'tea')).toBeUndefined();
    expect(routeToMerchant(directory, 'mall', 'books')).toMatchObject({ cellId: 'a' });
  });

  it('answers a merchant whose home is dead or left with its fallback cell, in leave-a-message mode, and the home', () => {
    const directory = directoryOf();
    directory.mergeRecord(record('c', 0), { nowMs: 0, heard: true });
    directory.applyClaim('b', { kind: 'dead', incarnation: 0 }, 2);
    const route = routeRequest(directory, { tenant: 'mall', merchant: 'tea' });
    expect(route).toMatchObject({ tenant: 'mall', merchant: 'tea', epoch: 0, liveness: 'alive', mode: 'leave-a-message', home: { cellId: 'b', epoch: 0, liveness: 'dead' } });
    // Among the live cells (the router and the dead home never), the same one on every ask.
    expect(['a', 'c']).toContain(route!.cellId);
    expect(route!.ws).toBe(`ws://${route!.cellId}.test/v1/ws`);
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'tea' })).toEqual(route);
    // The home's own merchants are still routed home; unknown ones still get nothing.
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'books' })).toEqual(routeToMerchant(directory, 'mall', 'books'));
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'nobody' })).toBeUndefined();
    // A home that left holding its merchant (a graceful stop) keeps it: the same fallback, naming it.
    directory.mergeRecord(record('b', 1, { status: 'left', merchants: [claim('tea', 0)] }), { nowMs: 3, heard: true });
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'tea' })).toMatchObject({ cellId: route!.cellId, home: { cellId: 'b', liveness: 'left' } });
    // With no live cell that takes devices, there is no route.
    directory.applyClaim('a', { kind: 'dead', incarnation: 0 }, 4);
    directory.mergeRecord(record('c', 1, { capacity: { maxDevices: 0 } }), { nowMs: 4, heard: true });
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'tea' })).toBeUndefined();
  });

  it('takes customer and group without changing the answer (reserved for placement)', () => {
    const directory = directoryOf();
    expect(routeRequest(directory, { tenant: 'mall', merchant: 'books', customer: 'cu-1', group: 'sales' })).toEqual(routeToMerchant(directory, 'mall', 'books'));
  });
});

describe('summarizeDirectory', () => {
  it('names each member a cell or a router', () => {
    const roles = summarizeDirectory(directoryOf(), 'edge', 0).map((member) => [member.cellId, member.role]);
    expect(roles).toEqual([['a', 'cell'], ['b', 'cell'], ['edge', 'router']]);
  });
});
