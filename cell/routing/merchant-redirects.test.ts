import { describe, expect, it } from 'vitest';
import type { Identity } from '../access/tokens.js';
import { DeviceConnection, type DevicePort } from '../messaging/device.js';
import type { MerchantHome, ServerFrame } from '../protocol/frames.js';
import { MerchantRedirects, type HomeDirectory } from './merchant-redirects.js';

const A: MerchantHome = { cellId: 'a', ws: 'ws://a/v1/ws', http: 'http://a', epoch: 0 };
const B = { ws: 'ws://b/v1/ws', http: 'http://b' };

/** A directory as a cell's copy holds it: homes by merchant, endpoints by cell. */
function directory(homes: Map<string, MerchantHome>, down: ReadonlySet<string> = new Set()): HomeDirectory {
  return {
    homeOf: (tenant, merchant) => homes.get(`${tenant}/${merchant}`),
    endpointsOf: (cellId) => (cellId === 'b' ? B : cellId === 'a' ? { ws: A.ws, http: A.http } : undefined),
    homeIsDown: (tenant, merchant) => down.has(`${tenant}/${merchant}`),
  };
}

class RecordingPort implements DevicePort {
  closed: { code: number; reason: string } | undefined;
  send(): void {}
  bufferedBytes(): number {
    return 0;
  }
  close(code: number, reason: string): void {
    this.closed = { code, reason };
  }
}

function device(identity: Partial<Identity>, routedFor: string | undefined): { connection: DeviceConnection; port: RecordingPort } {
  const port = new RecordingPort();
  const full: Identity = { tenant: 'mall', user: 'u', role: 'customer', device: 'd', expiresAtMs: 1e15, ...identity };
  const connection = new DeviceConnection(full, 's', port, 0, { ratePerSecond: 1, burst: 1, ackRatePerSecond: 1, ackBurst: 1, maxErrors: 1, errorRecoveryPerSecond: 1 });
  connection.routedFor = routedFor;
  return { connection, port };
}

describe('MerchantRedirects', () => {
  it('tells which devices want the conversations homed at a cell: unrouted ones all, routed ones their merchant\'s', () => {
    const redirects = new MerchantRedirects('b');
    redirects.attach(directory(new Map([['mall/m1', A]])));
    expect(redirects.wantsConversationsOf('mall', undefined, 'c')).toBe(true);
    expect(redirects.wantsConversationsOf('mall', 'm1', 'a')).toBe(true);
    // Routed for m1, homed at a: the home of another merchant (cell c) gets no copy sent here.
    expect(redirects.wantsConversationsOf('mall', 'm1', 'c')).toBe(false);
    // A merchant whose home the directory does not name: counted as wanted.
    expect(redirects.wantsConversationsOf('mall', 'm9', 'c')).toBe(true);
  });

  it('answers MERCHANT_ELSEWHERE with the home only for a serving home elsewhere', () => {
    const homes = new Map([['mall/m1', A]]);
    const here = new MerchantRedirects('a');
    expect(here.refusal('mall', 'm1', 'not here').code).toBe('MERCHANT_NOT_HOSTED');
    const elsewhere = new MerchantRedirects('c');
    expect(elsewhere.refusal('mall', 'm1', 'not here').code).toBe('MERCHANT_NOT_HOSTED');
    elsewhere.attach(directory(homes));
    expect(elsewhere.refusal('mall', 'm1', 'not here')).toMatchObject({ code: 'MERCHANT_ELSEWHERE', details: { home: A } });
    expect(elsewhere.refusal('mall', 'm9', 'not here').code).toBe('MERCHANT_NOT_HOSTED');
  });

  it('admits customers of a merchant whose home is down (to leave messages), refuses its agents with HOME_UNAVAILABLE, and sends the customers home once it serves', () => {
    const homes = new Map<string, MerchantHome>();
    const redirects = new MerchantRedirects('c');
    redirects.attach(directory(homes, new Set(['mall/m1'])));
    const hostsNothing = () => false;
    expect(redirects.admitRouted({ tenant: 'mall', user: 'alice', role: 'customer', device: 'd', expiresAtMs: 1e15 }, 'm1', hostsNothing)).toBe('m1');
    expect(() => redirects.admitRouted({ tenant: 'mall', user: 'bob', role: 'agent', merchant: 'm1', device: 'd', expiresAtMs: 1e15 }, undefined, hostsNothing)).toThrow(
      expect.objectContaining({ code: 'HOME_UNAVAILABLE', details: { retryAfterMs: expect.any(Number) } }),
    );
    const left = device({ user: 'alice' }, 'm1');
    const other = device({ user: 'carol' }, 'm2');
    const sent: Array<[DeviceConnection, ServerFrame]> = [];
    const send = (connection: DeviceConnection, frame: ServerFrame) => sent.push([connection, frame]);
    // Still down: nobody moves.
    redirects.redirectToServingHomes([left.connection, other.connection], new Set(['mall/m1', 'mall/m2']), send);
    expect(sent).toEqual([]);
    homes.set('mall/m1', A);
    redirects.redirectToServingHomes([left.connection, other.connection], new Set(['mall/m1']), send);
    expect(sent).toEqual([[left.connection, { t: 'error', code: 'MERCHANT_ELSEWHERE', message: expect.any(String), home: A }]]);
    expect([left.port.closed?.code, other.port.closed]).toEqual([4307, undefined]);
  });

  it('redirects the connections routed for a moved merchant, and names the new home until its directory hears the claim', () => {
    const homes = new Map([['mall/m1', A]]);
    const redirects = new MerchantRedirects('a');
    redirects.attach(directory(homes));
    const agent = device({ role: 'agent', merchant: 'm1', user: 'bob' }, 'm1');
    const routedCustomer = device({}, 'm1');
    const otherCustomer = device({}, 'm2');
    const sent: Array<[DeviceConnection, ServerFrame]> = [];
    redirects.redirectMovedAway([agent.connection, routedCustomer.connection, otherCustomer.connection], 'mall', 'm1', { cellId: 'b', epoch: 1 }, (connection, frame) => sent.push([connection, frame]));
    const home = { cellId: 'b', ...B, epoch: 1 };
    expect(sent).toEqual([
      [agent.connection, { t: 'error', code: 'MERCHANT_ELSEWHERE', message: expect.any(String), home }],
      [routedCustomer.connection, { t: 'error', code: 'MERCHANT_ELSEWHERE', message: expect.any(String), home }],
    ]);
    expect([agent.port.closed?.code, routedCustomer.port.closed?.code, otherCustomer.port.closed]).toEqual([4307, 4307, undefined]);
    // The directory here still names this cell at epoch 0: the move's target is the answer.
    expect(redirects.homeElsewhere('mall', 'm1')).toEqual(home);
    // Once the directory hears a newer claim, it is the answer (even one that moved on again).
    homes.set('mall/m1', { cellId: 'c', ws: 'ws://c/v1/ws', http: 'http://c', epoch: 2 });
    expect(redirects.homeElsewhere('mall', 'm1')?.cellId).toBe('c');
    homes.set('mall/m1', A);
    expect(redirects.homeElsewhere('mall', 'm1')).toBeUndefined();
  });

  it('closes with 1001 when the new home has no known endpoints', () => {
    const redirects = new MerchantRedirects('a');
    redirects.attach(directory(new Map()));
    const agent = device({ role: 'agent', merchant: 'm1' }, 'm1');
    redirects.redirectMovedAway([agent.connection], 'mall', 'm1', { cellId: 'z', epoch: 1 }, () => undefined);
    expect(agent.port.closed?.code).toBe(1001);
  });
});
