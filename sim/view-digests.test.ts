import { describe, expect, it } from 'vitest';
import { MeshHarness } from '../testing/mesh-harness.js';
import { ViewDigests } from './view-digests.js';

describe('ViewDigests', () => {
  it('keeps each view digest equal to a fresh walk through suspicions, deaths, refutations, joins and leaves', async () => {
    const harness = new MeshHarness({ seed: 4, latencyMs: [1, 5] });
    await harness.addCell('c0');
    for (let index = 1; index < 6; index++) await harness.addCell(`c${index}`, { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(6), 5_000);
    const digests = new ViewDigests();
    const check = (): number[] =>
      harness.running().map((cell) => {
        const kept = digests.of(cell.mesh);
        expect(kept).toBe(digests.recompute(cell.mesh));
        return kept;
      });
    expect(new Set(check()).size).toBe(1);

    harness.network.partition([MeshHarness.peerOf('c5')], ['c0', 'c1', 'c2', 'c3', 'c4'].map(MeshHarness.peerOf));
    await harness.run(2_500);
    check();
    await harness.run(10_000);
    // Cut off, c5 sees the others dead, and they see it dead: two views.
    expect(new Set(check()).size).toBe(2);
    harness.network.heal();
    await harness.runUntil(() => harness.converged(6), 20_000);
    expect(new Set(check()).size).toBe(1);

    await harness.crash('c2');
    await harness.addCell('c6', { bootstrap: ['c1'] });
    await harness.run(10_000);
    const leaver = harness.cell('c3');
    let left = false;
    const leaving = leaver.mesh.leave().then(() => {
      left = true;
    });
    await harness.runUntil(() => left, 2_000);
    await leaving;
    await leaver.transport.stop();
    await harness.run(5_000);
    const views = check();
    expect(new Set(views).size).toBe(1);
    // The same view digests the same however it was reached.
    expect(new ViewDigests().of(harness.cell('c0').mesh)).toBe(views[0]);
  });
});
