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
