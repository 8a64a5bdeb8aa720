import { describe, expect, it } from 'vitest';
import { testSession } from '../testing/client-session.js';
import type { ClientFrame, Limits } from '../cell/protocol/frames.js';
import { ManualClock } from '../platform/manual-clock.js';
import { AckBatcher } from './ack-batcher.js';
import type { SessionInfo } from './client-types.js';


function setup(limits: Partial<Limits> = {}) {
  const clock = new ManualClock();
  const frames: ClientFrame[] = [];
  const cursors = new Map<string, number>();
  const link: { session: SessionInfo | undefined; transmit(frame: ClientFrame): void } = {
    session: testSession(limits),
    transmit: (frame) => frames.push(frame),
  };
  const acks = new AckBatcher({ clock, ackDelayMs: 20, link, cursorOf: (conv) => cursors.get(conv) });
  /** The cell pushes `seq` of `conv` and the sequencer delivers it. */
  const push = (conv: string, seq: number): void => {
    acks.notePushed(conv, seq);
    cursors.set(conv, seq);
    acks.noteCursor(conv);
    acks.flushIfWindowHalfUsed();
  };
  return { clock, frames, cursors, link, acks, push };
}

describe('AckBatcher', () => {
  it('acks a burst with one cumulative ack per conversation after ackDelayMs', () => {
    const { clock, frames, push } = setup();
    push('a', 1);
    push('a', 2);
    push('b', 7);
    push('a', 3);
    expect(frames).toEqual([]);
    clock.advance(19);
    expect(frames).toEqual([]);
    clock.advance(1);
    expect(frames).toEqual([
      { op: 'ack', conv: 'a', seq: 3 },
      { op: 'ack', conv: 'b', seq: 7 },
    ]);
    clock.advance(1_000);
    expect(frames).toHaveLength(2);
  });

  it('puts the acks of many conversations in frames of maxAcksPerFrame', () => {
    const { clock, frames, push } = setup({ maxAcksPerFrame: 2 });
    for (const conv of ['a', 'b', 'c']) push(conv, 4);
    clock.advance(20);
    expect(frames).toEqual([
      { op: 'ack', acks: { a: 4, b: 4 } },
      { op: 'ack', acks: { c: 4 } },
    ]);
  });

  it('flushes at once when half the delivery window is unacknowledged', () => {
    const { frames, push } = setup({ deliveryWindow: 4 });
    push('a', 1);
    expect(frames).toEqual([]);
    push('a', 2);
    expect(frames).toEqual([{ op: 'ack', conv: 'a', seq: 2 }]);
  });

  it('does not ack a conversation this device just started until the cell pushes in it', () => {
    const { clock, frames, cursors, acks, push } = setup();
    // This device's own send became seq 1 of a new conversation: the cell does not track it yet.
    acks.noteOwnSent('new', 1);
    cursors.set('new', 1);
    acks.noteCursor('new');
    clock.advance(20);
    expect(frames).toEqual([]);
    push('new', 2);
    clock.advance(20);
    expect(frames).toEqual([{ op: 'ack', conv: 'new', seq: 2 }]);
  });

  it('acks an own send in a conversation the cell already tracked', () => {
    const { clock, frames, cursors, acks } = setup();
    acks.beginSession(['known']);
    acks.noteOwnSent('known', 1);
    cursors.set('known', 1);
    acks.noteCursor('known');
    clock.advance(20);
    expect(frames).toEqual([{ op: 'ack', conv: 'known', seq: 1 }]);
  });

  it('acks nothing below the first delivery of the session', () => {
    const { clock, frames, cursors, acks } = setup();
    acks.beginSession(['a']);
    // The cell delivered 10 but the sequencer still waits for 9 (its cursor is 8).
    acks.notePushed('a', 10);
    cursors.set('a', 8);
    acks.noteCursor('a');
    clock.advance(20);
    expect(frames).toEqual([]);
    cursors.set('a', 10);
    acks.noteCursor('a');
    clock.advance(20);
    expect(frames).toEqual([{ op: 'ack', conv: 'a', seq: 10 }]);
  });

  it('forgets the session at its end: no ack goes out and the next session starts afresh', () => {
    const { clock, frames, link, acks, push } = setup();
    push('a', 1);
    acks.endSession();
    link.session = undefined;
    clock.advance(20);
    expect(frames).toEqual([]);
    link.session = testSession({});
    // What was acked before is acked again in a new session once the cell delivers again.
    push('a', 1);
    clock.advance(20);
    expect(frames).toEqual([{ op: 'ack', conv: 'a', seq: 1 }]);
  });
});
