import { describe, expect, it } from 'vitest';
import { testSession } from '../testing/client-session.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import type { ClientEvents, SessionInfo } from './client-types.js';
import { clientDefaults } from './defaults.js';
import { TypedEmitter } from './emitter.js';
import { ClientError, ClientErrorCode } from './errors.js';
import { Sequencer } from './sequencer.js';

const CONV = 'shop1:alice';

const SESSION = testSession();

function chat(seq: number, conv = CONV): ChatMessage {
  return { conv, seq, from: 'shop1-agent', role: 'agent', device: 'desk', cmid: `c${seq}`, body: `m${seq}`, ts: 1_000 + seq };
}

type HistoryAnswer = { reply: { messages: ChatMessage[]; hasMore: boolean } };

interface Fetch {
  conv: string;
  before: number;
  limit: number;
  answer(seqs: number[], hasMore?: boolean): Promise<void>;
  fail(error: ClientError): Promise<void>;
}

function setup(options: { initialCursors?: Record<string, number>; maxBufferedMessages?: number } = {}) {
  const clock = new ManualClock();
  const events = new TypedEmitter<ClientEvents>();
  const link: { session: SessionInfo | undefined } = { session: SESSION };
  const fetches: Fetch[] = [];
  const moved: string[] = [];
  const sequencer = new Sequencer(
    {
      clock,
      random: new SeededRandom(1),
      backoff: { ...clientDefaults.backoff },
      settings: {
        maxBufferedMessages: options.maxBufferedMessages ?? 100,
        gapWaitMs: 1_000,
        maxGapFillFailures: 2,
      },
      link,
      events,
      fetchHistory: (conv, before, limit) => {
        let settle!: { resolve: (page: HistoryAnswer) => void; reject: (error: ClientError) => void };
        const answered = new Promise<HistoryAnswer>((resolve, reject) => {
          settle = { resolve, reject };
        });
        // The sequencer's handlers were attached first, so they have run once `answered` settled
        // for a later reaction: awaiting it here waits for them, not for a number of turns.
        const handled = (): Promise<void> => answered.then(() => undefined, () => undefined);
        fetches.push({
          conv,
          before,
          limit,
          answer: (seqs, hasMore = false) => {
            settle.resolve({ reply: { messages: seqs.map((seq) => chat(seq, conv)), hasMore } });
            return handled();
          },
          fail: (error) => {
            settle.reject(error);
            return handled();
          },
        });
        return answered;
      },
      cursorMoved: (conv) => moved.push(conv),
    },
    options.initialCursors ?? {},
  );
  const delivered: number[] = [];
  const errors: ClientError[] = [];
  const synced: string[] = [];
  events.on('message', (message) => delivered.push(message.seq));
  events.on('error', (error) => errors.push(error));
  events.on('synced', (event) => synced.push(event.session));
  const lastFetch = (): Fetch => {
    const fetch = fetches.at(-1);
    if (fetch === undefined) throw new Error('no history fetch yet');
    return fetch;
  };
  return { clock, link, sequencer, fetches, lastFetch, moved, delivered, errors, synced };
}

describe('Sequencer', () => {
  it('takes the first push as the baseline and delivers each seq once, in order', () => {
    const { sequencer, delivered, fetches } = setup();
    for (const seq of [5, 6, 6, 5, 7]) sequencer.accept(chat(seq), true);
    expect(delivered).toEqual([5, 6, 7]);
    expect(sequencer.cursors()).toEqual({ [CONV]: 7 });
    expect(fetches).toHaveLength(0);
  });

  it('asks each known conversation for what lies past its cursor after a switch of cells, page after full page', async () => {
    const { sequencer, delivered, fetches, lastFetch, moved } = setup({ initialCursors: { [CONV]: 4, 'shop2:alice': 2 } });
    sequencer.lookPastCursors();
    expect(fetches.map((fetch) => [fetch.conv, fetch.before, fetch.limit])).toEqual([
      [CONV, 205, 200],
      ['shop2:alice', 203, 200],
    ]);
    // Nothing new in shop2; in CONV a full page, then the rest.
    await fetches[1]!.answer([]);
    await fetches[0]!.answer(Array.from({ length: 200 }, (_, index) => 5 + index), true);
    expect(delivered).toHaveLength(200);
    expect(lastFetch()).toMatchObject({ conv: CONV, before: 405, limit: 200 });
    await lastFetch().answer([205, 206]);
    expect(delivered.slice(-3)).toEqual([204, 205, 206]);
    expect(sequencer.cursors()).toEqual({ [CONV]: 206, 'shop2:alice': 2 });
    expect(moved).toContain(CONV);
    // The cell's pushes of what the look delivered are repeats.
    sequencer.accept(chat(206), true);
    sequencer.accept(chat(207), true);
    expect(delivered.slice(-2)).toEqual([206, 207]);
  });

  it('looks past a conversation known only from an own send once that send became its baseline, after a switch of cells', async () => {
    // desk.yaml seed 7: the customer's first message of a conversation was stored by the cell it
    // was on (its `sent` gave no baseline), then it switched cells; the new cell held no copy, so
    // the agent's answer, stored after the switch, never came.
    const { clock, sequencer, delivered, fetches, lastFetch, moved } = setup();
    sequencer.accept(chat(1), false);
    sequencer.lookPastCursors();
    expect(fetches).toHaveLength(0);
    sequencer.onSynced();
    clock.advance(1_000);
    expect(delivered).toEqual([1]);
    expect(lastFetch()).toMatchObject({ conv: CONV, before: 202, limit: 200 });
    await lastFetch().answer([2]);
    expect(delivered).toEqual([1, 2]);
    expect(moved).toContain(CONV);
    // Owed once: the next message comes as a push.
    sequencer.accept(chat(3), true);
    expect(delivered).toEqual([1, 2, 3]);
    expect(fetches).toHaveLength(1);
  });

  it('drops what the initial cursor covers and refuses a cursor that is not a seq', () => {
    const { sequencer, delivered } = setup({ initialCursors: { [CONV]: 3 } });
    for (const seq of [2, 3, 4]) sequencer.accept(chat(seq), true);
    expect(delivered).toEqual([4]);
    expect(() => setup({ initialCursors: { [CONV]: -1 } })).toThrow(RangeError);
    expect(() => setup({ initialCursors: { [CONV]: 1.5 } })).toThrow(RangeError);
  });

  it('holds a push past a gap, fetches exactly the missing seqs, then delivers in order', async () => {
    const { sequencer, delivered, fetches, lastFetch, moved } = setup({ initialCursors: { [CONV]: 1 } });
    sequencer.accept(chat(5), true);
    sequencer.accept(chat(6), true);
    expect(delivered).toEqual([]);
    // One fetch for the gap 2..4, however many messages wait behind it.
    expect(fetches).toHaveLength(1);
    expect(lastFetch()).toMatchObject({ conv: CONV, before: 5, limit: 3 });
    await lastFetch().answer([2, 3, 4]);
    expect(delivered).toEqual([2, 3, 4, 5, 6]);
    expect(moved).toEqual([CONV]);
    expect(fetches).toHaveLength(1);
  });

  it('holds synced until the gaps found during the catch-up are filled', async () => {
    const { sequencer, synced, lastFetch } = setup({ initialCursors: { [CONV]: 0 } });
    sequencer.accept(chat(3), true);
    sequencer.onSynced();
    expect(synced).toEqual([]);
    await lastFetch().answer([1, 2]);
    expect(synced).toEqual(['session-1']);
  });

  it('skips a gap the cell cannot fill after maxGapFillFailures and reports GAP_UNFILLED', async () => {
    const { clock, sequencer, delivered, errors, fetches, lastFetch } = setup({ initialCursors: { [CONV]: 1 } });
    sequencer.accept(chat(4), true);
    await lastFetch().fail(new ClientError('STORE_UNAVAILABLE', 'store down'));
    expect(delivered).toEqual([]);
    // The retry waits a backoff.
    expect(fetches).toHaveLength(1);
    clock.advance(clientDefaults.backoff.initialDelayMs);
    expect(fetches).toHaveLength(2);
    await lastFetch().fail(new ClientError('STORE_UNAVAILABLE', 'store down'));
    expect(delivered).toEqual([4]);
    const gap = errors.find((error) => error.code === ClientErrorCode.GapUnfilled);
    expect(gap?.details).toEqual({ conv: CONV, fromSeq: 2, toSeq: 3 });
    expect(sequencer.cursors()).toEqual({ [CONV]: 4 });
  });

  it('skips seqs the cell has no message for, delivering what follows', async () => {
    const { sequencer, delivered, errors, lastFetch } = setup({ initialCursors: { [CONV]: 1 } });
    sequencer.accept(chat(5), true);
    // Seq 2 is gone from the store; 3 and 4 are there.
    await lastFetch().answer([3, 4]);
    expect(delivered).toEqual([3, 4, 5]);
    expect(errors.map((error) => [error.code, error.details.fromSeq, error.details.toSeq])).toEqual([[ClientErrorCode.GapUnfilled, 2, 2]]);
  });

  it('gives predecessors of an own message gapWaitMs after synced, then fetches them', async () => {
    const { clock, sequencer, delivered, fetches, lastFetch } = setup({ initialCursors: { [CONV]: 1 } });
    sequencer.accept(chat(4), false);
    sequencer.onSynced();
    expect(fetches).toHaveLength(0);
    clock.advance(999);
    expect(fetches).toHaveLength(0);
    clock.advance(1);
    expect(lastFetch()).toMatchObject({ before: 4, limit: 2 });
    await lastFetch().answer([2, 3]);
    expect(delivered).toEqual([2, 3, 4]);
  });

  it('makes an own message without a baseline the baseline once nothing came before it', () => {
    const { clock, sequencer, delivered, fetches, moved } = setup();
    sequencer.onSynced();
    sequencer.accept(chat(9), false);
    expect(delivered).toEqual([]);
    clock.advance(1_000);
    expect(delivered).toEqual([9]);
    expect(fetches).toHaveLength(0);
    expect(moved).toEqual([CONV]);
  });

  it('holds at most maxBufferedMessages, dropping the rest unacknowledged', async () => {
    const { sequencer, delivered, lastFetch } = setup({ initialCursors: { [CONV]: 0 }, maxBufferedMessages: 2 });
    for (const seq of [3, 4, 5]) sequencer.accept(chat(seq), true);
    await lastFetch().answer([1, 2]);
    // 5 did not fit; it comes again later (the cell pushes it after a reconnect).
    expect(delivered).toEqual([1, 2, 3, 4]);
  });

  it('delivers nothing once stopped, even when a fetch answers late', async () => {
    const { sequencer, delivered, lastFetch } = setup({ initialCursors: { [CONV]: 1 } });
    sequencer.accept(chat(3), true);
    sequencer.stop();
    await lastFetch().answer([2]);
    sequencer.accept(chat(4), true);
    expect(delivered).toEqual([]);
  });
});
