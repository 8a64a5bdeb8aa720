import { describe, expect, it } from 'vitest';
import { testSession } from '../testing/client-session.js';
import type { ClientFrame } from '../cell/protocol/frames.js';
import { ErrorCode } from '../cell/protocol/errors.js';
import { ManualClock } from '../platform/manual-clock.js';
import { SeededRandom } from '../platform/random.js';
import type { TokenBucket } from '../platform/token-bucket.js';
import type { SessionInfo } from './client-types.js';
import { clientDefaults } from './defaults.js';
import { ClientError, ClientErrorCode } from './errors.js';
import { RequestTracker } from './request-tracker.js';

const SESSION = testSession();

function setup(options: { open?: boolean; maxPendingRequests?: number } = {}) {
  const clock = new ManualClock();
  const frames: ClientFrame[] = [];
  const link: { session: SessionInfo | undefined; pacer: TokenBucket | undefined; transmit(frame: ClientFrame): void } = {
    session: options.open === false ? undefined : SESSION,
    pacer: undefined,
    transmit: (frame) => frames.push(frame),
  };
  let lastId = 0;
  const tracker = new RequestTracker({
    clock,
    random: new SeededRandom(3),
    backoff: { ...clientDefaults.backoff },
    settings: { requestTimeoutMs: 5_000, maxPendingRequests: options.maxPendingRequests ?? 10 },
    link,
    nextId: (prefix) => `${prefix}${++lastId}`,
  });
  const ping = (signal?: AbortSignal) => tracker.request('pong', (id) => ({ op: 'ping', id }), signal);
  return { clock, frames, link, tracker, ping };
}

async function rejection(promise: Promise<unknown>): Promise<ClientError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ClientError) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

describe('RequestTracker', () => {
  it('transmits at once in a session and resolves with the reply of its id', async () => {
    const { clock, frames, tracker, ping } = setup();
    const first = ping();
    const second = ping();
    expect(frames).toEqual([
      { op: 'ping', id: 'r1' },
      { op: 'ping', id: 'r2' },
    ]);
    const sentAtMs = clock.now();
    clock.advance(30);
    tracker.onReply({ t: 'pong', id: 'r2', ts: 7 });
    await expect(second).resolves.toEqual({ reply: { t: 'pong', id: 'r2', ts: 7 }, sentAtMs });
    tracker.onReply({ t: 'pong', id: 'r1', ts: 8 });
    await expect(first).resolves.toMatchObject({ reply: { id: 'r1', ts: 8 } });
  });

  it('waits for a session to transmit, and transmits again after a reconnect', async () => {
    const { frames, link, tracker, ping } = setup({ open: false });
    const pending = ping();
    expect(frames).toEqual([]);
    link.session = SESSION;
    tracker.transmitWaiting();
    expect(frames).toHaveLength(1);
    tracker.transmitWaiting();
    expect(frames).toHaveLength(1);
    tracker.onSessionEnd();
    tracker.transmitWaiting();
    expect(frames).toEqual([
      { op: 'ping', id: 'r1' },
      { op: 'ping', id: 'r1' },
    ]);
    tracker.onReply({ t: 'pong', id: 'r1', ts: 1 });
    await expect(pending).resolves.toMatchObject({ reply: { ts: 1 } });
  });

  it('times out with REQUEST_TIMEOUT and ignores a late reply', async () => {
    const { clock, tracker, ping } = setup();
    const pending = ping();
    clock.advance(4_999);
    tracker.onReply({ t: 'pong', id: 'other', ts: 1 });
    clock.advance(1);
    expect((await rejection(pending)).code).toBe(ClientErrorCode.RequestTimeout);
    expect(() => tracker.onReply({ t: 'pong', id: 'r1', ts: 1 })).not.toThrow();
  });

  it('rejects a reply of the wrong type as PROTOCOL_ERROR', async () => {
    const { tracker, ping } = setup();
    const pending = ping();
    tracker.onReply({ t: 'ok', id: 'r1' });
    expect((await rejection(pending)).code).toBe(ClientErrorCode.ProtocolError);
  });

  it('repeats a request after a transient refusal, after the wait the cell asked for', async () => {
    const { clock, frames, tracker, ping } = setup();
    const pending = ping();
    expect(tracker.failById('r1', new ClientError(ErrorCode.RateLimited, 'slow down', { retryAfterMs: 300 }))).toBe(true);
    clock.advance(299);
    expect(frames).toHaveLength(1);
    clock.advance(1);
    expect(frames).toHaveLength(2);
    tracker.onReply({ t: 'pong', id: 'r1', ts: 2 });
    await expect(pending).resolves.toMatchObject({ reply: { ts: 2 } });
  });

  it('rejects with the code of a refusal that retrying cannot fix', async () => {
    const { tracker, ping } = setup();
    const pending = ping();
    tracker.failById('r1', new ClientError(ErrorCode.ConversationForbidden, 'not yours'));
    expect((await rejection(pending)).code).toBe(ErrorCode.ConversationForbidden);
    expect(tracker.failById('r1', new ClientError(ErrorCode.ConversationForbidden, 'again'))).toBe(false);
  });

  it('does not repeat a refused request after the session ended', () => {
    const { clock, frames, tracker, ping } = setup();
    void ping().catch(() => undefined);
    tracker.failById('r1', new ClientError(ErrorCode.StoreUnavailable, 'down', { retryAfterMs: 100 }));
    tracker.onSessionEnd();
    clock.advance(1_000);
    expect(frames).toHaveLength(1);
  });

  it('bounds the pending requests, honours abort, and rejects all when stopped', async () => {
    const { tracker, ping } = setup({ maxPendingRequests: 2 });
    const controller = new AbortController();
    const aborted = ping(controller.signal);
    const stopped = ping();
    expect((await rejection(ping())).code).toBe(ClientErrorCode.RequestQueueFull);
    controller.abort();
    expect((await rejection(aborted)).code).toBe(ClientErrorCode.Aborted);
    tracker.rejectAll(new ClientError(ClientErrorCode.ClientClosed, 'closed'));
    expect((await rejection(stopped)).code).toBe(ClientErrorCode.ClientClosed);
  });

  it('rejects an invalid frame with BAD_FRAME without sending it', async () => {
    const { frames, tracker } = setup();
    const pending = tracker.request('ok', (id) => ({ op: 'read', id, conv: 'shop1:alice', seq: -1 }), undefined);
    expect((await rejection(pending)).code).toBe(ErrorCode.BadFrame);
    expect(frames).toEqual([]);
  });
});
