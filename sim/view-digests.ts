import type { CellMesh } from '../mesh/cell-mesh.js';
import type { DirectoryEntry, Liveness } from '../mesh/directory.js';
import { stringHash } from './rng.js';

/**
 * Each mesh's membership view (every cell it knows, at which incarnation and liveness) as an
 * order-free 32-bit digest, for the agreement series of the simulator's report: cells with
 * equal digests hold the same view. The digest is the sum of one mixed term per entry, so a
 * directory change updates it in O(1) (the old entry's term out, the new one's in) instead of a
 * walk over every cell's view of every cell at each sample: at 1,000 cells that walk touched a
 * million entries scattered over a heap of several GB, about a second of wall time per sample.
 */
export class ViewDigests {
  private readonly digests = new WeakMap<CellMesh, { value: number }>();
  private readonly cellIdHashes = new Map<string, number>();

  /** The mesh's digest; the first call walks its directory once and follows its changes from then on. */
  of(mesh: CellMesh): number {
    let digest = this.digests.get(mesh);
    if (digest === undefined) {
      const tracked = { value: this.recompute(mesh) };
      digest = tracked;
      mesh.onChange((_cellId, before, after) => {
        if (before !== undefined) tracked.value = (tracked.value - this.term(before)) >>> 0;
        if (after !== undefined) tracked.value = (tracked.value + this.term(after)) >>> 0;
      });
      this.digests.set(mesh, tracked);
    }
    return digest.value;
  }

  /** The digest computed from scratch: what `of` starts from and keeps up to date. */
  recompute(mesh: CellMesh): number {
    let value = 0;
    for (const entry of mesh.directory.values()) value = (value + this.term(entry)) >>> 0;
    return value;
  }

  private term(entry: DirectoryEntry): number {
    return mix(this.cellIdHash(entry.record.cellId), entry.record.incarnation, LIVENESS_CODES[entry.liveness]);
  }

  private cellIdHash(cellId: string): number {
    let hash = this.cellIdHashes.get(cellId);
    if (hash === undefined) {
      hash = stringHash(cellId);
      this.cellIdHashes.set(cellId, hash);
    }
    return hash;
  }
}

const LIVENESS_CODES: Readonly<Record<Liveness, number>> = { alive: 1, suspect: 2, dead: 3, leaving: 4, left: 5 };

/** Combines three 32-bit values and avalanches (murmur3's fmix32), so sums of mixes rarely collide. */
function mix(a: number, b: number, c: number): number {
  let hash = (a ^ Math.imul(b, 0x9e3779b1) ^ Math.imul(c, 0x85ebca77)) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35) >>> 0;
  hash = (hash ^ (hash >>> 16)) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 16), 0x7feb352d) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 15), 0x846ca68b) >>> 0;
  return (hash ^ (hash >>> 16)) >>> 0;
}
