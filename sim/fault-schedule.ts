// When the faults of a run happen: the scenario's timeline and, in random-fault mode, faults
// drawn from the seed (exponential gaps), disk faults from a stream of their own; in time order.
// What each fault does is the fault planner's (sim/fault-planner.ts).
import { exponential, pickIndex, stream } from './rng.js';
import type { FaultAction, Scenario, TimelineEvent } from './scenario.js';

/** The scenario's timeline and, in random-fault mode, faults drawn from the seed; in time order. */
export function faultTimeline(scenario: Scenario, seed: number, trafficMs: number): TimelineEvent[] {
  const events = [...scenario.timeline];
  const random = scenario.randomFaults;
  if (random !== undefined && random.enabled) {
    const draw = stream(seed, 'random-faults');
    let atMs = 0;
    for (;;) {
      atMs += Math.max(1_000, Math.round(exponential(draw, random.meanInterval)));
      if (atMs >= trafficMs) break;
      const kind = random.kinds[pickIndex(draw, random.kinds.length)]!;
      const durationMs = Math.round(random.maxDuration * (0.1 + 0.9 * draw.next()));
      const share = `${Math.max(1, Math.round(100 * random.maxShare * (0.2 + 0.8 * draw.next())))}%`;
      let action: FaultAction;
      switch (kind) {
        case 'partition':
          action = { kind, groups: [[share], ['rest']], duration: durationMs };
          break;
        case 'oneWay':
          action = { kind, from: [share], to: ['rest'], duration: durationMs };
          break;
        case 'loss':
          action = { kind, rate: Math.round(1000 * random.maxLossRate * draw.next()) / 1000, duration: durationMs };
          break;
        case 'duplicate':
          action = { kind, rate: Math.round(1000 * 0.3 * draw.next()) / 1000, duration: durationMs };
          break;
        case 'reorder':
          action = { kind, rate: Math.round(1000 * 0.5 * draw.next()) / 1000, maxDelay: 10 + Math.round(490 * draw.next()), duration: durationMs };
          break;
        case 'move':
          action = { kind, merchants: 1 + Math.floor(3 * draw.next()), from: ['rest'], to: ['rest'] };
          break;
        case 'latency':
          action = { kind, mesh: { kind: 'uniform', min: 1, max: 20 + Math.round(480 * draw.next()) }, duration: durationMs };
          break;
        case 'crash':
          action = { kind, cells: ['random'], restartAfter: durationMs };
          break;
        case 'deviceFlap':
          action = { kind, fraction: Math.round(200 * draw.next()) / 1000 };
          break;
      }
      events.push({ atMs, action });
    }
    if (random.disk.enabled) events.push(...randomDiskFaults(seed, trafficMs, random.maxDuration, random.disk));
  }
  // Stable: events at the same time keep the order they were listed (scenario first).
  return events.map((event, order) => ({ event, order })).sort((a, b) => a.event.atMs - b.event.atMs || a.order - b.order).map(({ event }) => event);
}

/** Disk faults drawn from a stream of their own, one cell at a time. */
function randomDiskFaults(seed: number, trafficMs: number, maxDurationMs: number, settings: { meanInterval: number; maxErrorRate: number; maxSpike: number }): TimelineEvent[] {
  const draw = stream(seed, 'random-disk-faults');
  const events: TimelineEvent[] = [];
  let atMs = 0;
  for (;;) {
    atMs += Math.max(1_000, Math.round(exponential(draw, settings.meanInterval)));
    if (atMs >= trafficMs) return events;
    const rate = (): number => Math.round(1000 * settings.maxErrorRate * draw.next()) / 1000;
    const action: FaultAction = {
      kind: 'disk',
      cells: ['random'],
      readErrorRate: rate(),
      writeErrorRate: rate(),
      spikeRate: Math.round(1000 * 0.3 * draw.next()) / 1000,
      spike: Math.round(settings.maxSpike * draw.next()),
      duration: Math.round(maxDurationMs * (0.1 + 0.9 * draw.next())),
    };
    events.push({ atMs, action });
  }
}
