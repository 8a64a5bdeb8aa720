import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../platform/manual-clock.js';
import type { ConsultationView } from '../protocol/frames.js';
import { QUEUE_POSITION_INTERVAL_MS, QueuePositions } from './queue-positions.js';

const waiting = (conv: string, position: number): ConsultationView => ({ conv, consultation: `k-${conv.split(':')[1]}`, state: 'waiting', group: 'default', position, openedAtMs: 0 });

function positions(maxHeld?: number): { clock: ManualClock; queue: QueuePositions; sent: Array<[string, string, number | undefined]> } {
  const clock = new ManualClock();
  const sent: Array<[string, string, number | undefined]> = [];
  const queue = new QueuePositions(clock, (tenant, view) => sent.push([tenant, view.conv, view.position]), QUEUE_POSITION_INTERVAL_MS, maxHeld);
  return { clock, queue, sent };
}

describe('queue positions on their way to other cells', () => {
  it('sends the first at once, then the latest once per interval per conversation', () => {
    const { clock, queue, sent } = positions();
    queue.offer('mall', waiting('shop:erin', 4));
    queue.offer('mall', waiting('shop:erin', 3));
    queue.offer('mall', waiting('shop:erin', 2));
    queue.offer('mall', waiting('shop:dave', 5));
    expect(sent).toEqual([
      ['mall', 'shop:erin', 4],
      ['mall', 'shop:dave', 5],
    ]);
    clock.advance(QUEUE_POSITION_INTERVAL_MS - 1);
    expect(sent).toHaveLength(2);
    clock.advance(1);
    expect(sent.slice(2)).toEqual([['mall', 'shop:erin', 2]]);
    // Nothing new in the next interval: the conversation is let go, and its next update goes at once.
    clock.advance(QUEUE_POSITION_INTERVAL_MS);
    queue.offer('mall', waiting('shop:erin', 1));
    expect(sent.slice(3)).toEqual([['mall', 'shop:erin', 1]]);
  });

  it('drops the position held back when the consultation changes state', () => {
    const { clock, queue, sent } = positions();
    queue.offer('mall', waiting('shop:erin', 2));
    queue.offer('mall', waiting('shop:erin', 1));
    queue.stateChanged('mall', 'shop:erin');
    clock.advance(QUEUE_POSITION_INTERVAL_MS * 3);
    expect(sent).toEqual([['mall', 'shop:erin', 2]]);
  });

  it('holds back at most so many conversations; beyond, updates are dropped', () => {
    const { clock, queue, sent } = positions(2);
    queue.offer('mall', waiting('shop:a', 1));
    queue.offer('mall', waiting('shop:b', 2));
    queue.offer('mall', waiting('shop:c', 3));
    expect(sent.map(([, conv]) => conv)).toEqual(['shop:a', 'shop:b']);
    clock.advance(QUEUE_POSITION_INTERVAL_MS);
    queue.offer('mall', waiting('shop:c', 3));
    expect(sent.map(([, conv]) => conv)).toEqual(['shop:a', 'shop:b', 'shop:c']);
  });
});
