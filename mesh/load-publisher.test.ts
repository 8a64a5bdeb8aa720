import { describe, expect, it } from 'vitest';
import { changedNoticeably, loadPublishIntervalMs, publishLoadPeriodically } from './load-publisher.js';
import { LAN_MEMBERSHIP_OPTIONS, LOCAL_MEMBERSHIP_OPTIONS, membershipOptions, WAN_MEMBERSHIP_OPTIONS } from './membership-config.js';
import { MeshHarness } from '../testing/mesh-harness.js';

describe('load publish interval under the receive budget', () => {
  it('keeps the base interval up to budget x interval + 1 cells, then stretches it to (n - 1) / budget', () => {
    for (const options of [LAN_MEMBERSHIP_OPTIONS, WAN_MEMBERSHIP_OPTIONS, LOCAL_MEMBERSHIP_OPTIONS]) {
      for (const cells of [1, 2, 50, 101]) expect(loadPublishIntervalMs(cells, options)).toBe(5_000);
      expect(loadPublishIntervalMs(102, options)).toBeGreaterThan(5_000);
    }
    expect(loadPublishIntervalMs(200, LAN_MEMBERSHIP_OPTIONS)).toBe(9_950);
    expect(loadPublishIntervalMs(1_000, LAN_MEMBERSHIP_OPTIONS)).toBe(49_950);
    for (const cells of [102, 200, 1_000, 4_096]) {
      const receivedPerSecond = ((cells - 1) * 1_000) / loadPublishIntervalMs(cells, LAN_MEMBERSHIP_OPTIONS);
      expect(receivedPerSecond).toBeLessThanOrEqual(LAN_MEMBERSHIP_OPTIONS.loadUpdateReceiveBudgetPerSecond);
    }
    expect(loadPublishIntervalMs(1_000, membershipOptions({ loadUpdateReceiveBudgetPerSecond: 0 }))).toBe(5_000);
  });
});

describe('what counts as a change of load', () => {
  it('is any change from or to zero, and otherwise a step of at least the threshold of the published figure', () => {
    expect(changedNoticeably(0, 0, 0.1)).toBe(false);
    expect(changedNoticeably(0, 1, 0.1)).toBe(true);
    expect(changedNoticeably(3, 0, 0.1)).toBe(true);
    expect(changedNoticeably(1, 2, 0.1)).toBe(true);
    expect(changedNoticeably(1_000, 1_099, 0.1)).toBe(false);
    expect(changedNoticeably(1_000, 901, 0.1)).toBe(false);
    expect(changedNoticeably(1_000, 1_100, 0.1)).toBe(true);
    expect(changedNoticeably(1_000, 900, 0.1)).toBe(true);
    expect(changedNoticeably(1_000, 1_001, 0)).toBe(true);
  });
});

describe('publishLoadPeriodically', () => {
  it('gossips the load to the other cells when it changed noticeably, and only then', async () => {
    const harness = new MeshHarness({ seed: 11 });
    const c0 = await harness.addCell('c0');
    await harness.addCell('c1', { bootstrap: ['c0'] });
    await harness.runUntil(() => harness.converged(2), 10_000);
    const load = { devices: 0, messages: 0 };
    const timer = publishLoadPeriodically(c0.mesh, harness.clock, { devices: () => load.devices, messagesTotal: () => load.messages }, (error) => {
      throw error;
    });
    const seenByC1 = () => harness.cell('c1').mesh.directory.get('c0')!.record;
    /** The next 5 s look: `devices` connected, `messagesPerSecond` over the interval. */
    const nextInterval = async (devices: number, messagesPerSecond: number): Promise<void> => {
      load.devices = devices;
      load.messages += 5 * messagesPerSecond;
      await harness.run(5_000);
    };
    try {
      const firstVersion = c0.mesh.ownRecord().version;
      await harness.run(12_000);
      expect(c0.mesh.ownRecord().version).toBe(firstVersion);

      await nextInterval(1_000, 200);
      expect(seenByC1().load).toEqual({ devices: 1_000, messagesPerSecond: 200 });
      const published = c0.mesh.ownRecord().version;

      // 5 % more devices and 5 % more messages a second: not news.
      await nextInterval(1_050, 210);
      expect(c0.mesh.ownRecord().version).toBe(published);

      // The drift adds up to 10 % of what was published: news.
      await nextInterval(1_100, 210);
      expect(seenByC1().load).toEqual({ devices: 1_100, messagesPerSecond: 210 });
      expect(seenByC1().version).toBe(published + 1);
    } finally {
      timer.cancel();
    }
  });
});
