import { describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { codecOf, type FrameSink } from './codecs.js';

function recordingSink(): FrameSink & { events: unknown[] } {
  const events: unknown[] = [];
  return {
    events,
    sent: (sendNumber) => events.push(['sent', sendNumber]),
    failed: (sendNumber, code, retryAfterMs) => events.push(['failed', sendNumber, code, retryAfterMs]),
    delivery: (conv, seq) => events.push(['delivery', conv, seq]),
  };
}

function fakeSocket(): WebSocket & { sentFrames: string[] } {
  const sentFrames: string[] = [];
  return { sentFrames, send: (frame: string) => sentFrames.push(frame) } as unknown as WebSocket & { sentFrames: string[] };
}

describe('cell codec', () => {
  const codec = codecOf('cell');

  it('encodes sends with the send number as id and cmid, and decodes sent, msg and error', () => {
    expect(JSON.parse(codec.encodeSend('m1:c1', 7, 'hello'))).toEqual({ op: 'send', id: '7', conv: 'm1:c1', cmid: '7', body: 'hello' });
    expect(JSON.parse(codec.encodeAcks(new Map([['m1:c1', 9], ['m1:c2', 4]])))).toEqual({ op: 'ack', acks: { 'm1:c1': 9, 'm1:c2': 4 } });
    const sink = recordingSink();
    const socket = fakeSocket();
    codec.decode(socket, JSON.stringify({ t: 'sent', id: '7', conv: 'm1:c1', cmid: '7', seq: 3, ts: 1 }), sink);
    codec.decode(socket, JSON.stringify({ t: 'msg', conv: 'm1:c1', seq: 3, from: 'c1', role: 'customer', device: 'd0', cmid: '7', body: 'x', ts: 1 }), sink);
    codec.decode(socket, JSON.stringify({ t: 'error', id: '8', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 20 }), sink);
    expect(sink.events).toEqual([
      ['sent', 7],
      ['delivery', 'm1:c1', 3],
      ['failed', 8, 'RATE_LIMITED', 20],
    ]);
  });

  it('is ready on welcome and fails on an error before it', () => {
    const socket = fakeSocket();
    expect(codec.handshake(socket, JSON.stringify({ t: 'welcome', v: 1 }), 'token').kind).toBe('ready');
    expect(codec.handshake(socket, JSON.stringify({ t: 'error', code: 'TOKEN_INVALID', message: 'no' }), 'token')).toEqual({
      kind: 'error',
      message: 'TOKEN_INVALID: no',
    });
  });
});

describe('Socket.IO codec', () => {
  const codec = codecOf('socketio');

  it('joins the namespace with the token, answers pings and reads acks and events', () => {
    const socket = fakeSocket();
    expect(codec.handshake(socket, '0{"sid":"abc","pingInterval":25000}', 'jwt').kind).toBe('pending');
    expect(socket.sentFrames).toEqual(['40{"token":"jwt"}']);
    expect(codec.handshake(socket, '2', 'jwt').kind).toBe('pending');
    expect(socket.sentFrames[1]).toBe('3');
    expect(codec.handshake(socket, '40{"sid":"def"}', 'jwt').kind).toBe('ready');
    expect(codec.handshake(socket, '44{"message":"TOKEN_INVALID"}', 'jwt').kind).toBe('error');

    expect(codec.encodeSend('m1:c1', 12, 'hi')).toBe('4212["send",{"conv":"m1:c1","cmid":"12","body":"hi"}]');
    expect(codec.encodeAcks(new Map([['m1:c1', 4], ['m1:c2', 7]]))).toBe('42["ack",{"m1:c1":4,"m1:c2":7}]');
    const sink = recordingSink();
    codec.decode(socket, '4312[{"seq":4,"ts":1}]', sink);
    codec.decode(socket, '4313[{"error":"BAD_FRAME"}]', sink);
    codec.decode(socket, '42["msg",{"conv":"m1:c1","seq":4}]', sink);
    codec.decode(socket, '2', sink);
    expect(sink.events).toEqual([
      ['sent', 12],
      ['failed', 13, 'BAD_FRAME', undefined],
      ['delivery', 'm1:c1', 4],
    ]);
    expect(socket.sentFrames.at(-1)).toBe('3');
  });
});

describe('echo codec', () => {
  it('closes the loop on the echoed cmid', () => {
    const codec = codecOf('uws-echo');
    const sink = recordingSink();
    codec.decode(fakeSocket(), codec.encodeSend('m1:c1', 5, 'x'), sink);
    expect(sink.events).toEqual([['sent', 5]]);
    expect(codec.readyOnOpen).toBe(true);
  });
});
