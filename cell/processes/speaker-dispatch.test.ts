import { describe, expect, it } from 'vitest';
import type { ClusterForwardedEntry } from '../messaging/cluster-port.js';
import { HISTORY_PROTOCOL, encodeJson } from '../messaging/cross-cell-wire.js';
import type { ProcessRecord } from './coordination-port.js';
import type { MerchantPlacement } from './process-coordinator.js';
import type { OwnerChannel } from './speaker-channel.js';
import { SpeakerDispatch } from './speaker-dispatch.js';

const OTHER: ProcessRecord = { id: 'p-2', token: 7, ws: 'ws://p-2.invalid/v1/ws', http: 'http://p-2.invalid' };
const THIRD: ProcessRecord = { id: 'p-3', token: 9, ws: 'ws://p-3.invalid/v1/ws', http: 'http://p-3.invalid' };

/** m1 is owned here, m2 by p-2, m3 has no owner right now; any other merchant is another cell's (a mirror's). */
function placementOf(_tenant: string, merchant: string): MerchantPlacement | undefined {
  if (merchant === 'm2') return { here: false, owner: OTHER };
  if (merchant === 'm3') return undefined;
  return { here: true };
}

const read = (seq: number, merchant: string): ClusterForwardedEntry => ({ seq, key: `read/${seq}`, payload: { v: 1, kind: 'read', tenant: 'mall', conv: `${merchant}:alice`, user: 'alice', seq } });
const receipt = (seq: number, merchant: string): ClusterForwardedEntry => ({ seq, key: `receipt/${seq}`, payload: { v: 1, kind: 'receipt', tenant: 'mall', conv: `${merchant}:bob`, user: 'bob', seq } });
const erase = (seq: number): ClusterForwardedEntry => ({ seq, key: `erase/${seq}`, payload: { v: 1, kind: 'customer-erase', tenant: 'mall', customer: 'alice' } });
const gone = (seq: number): ClusterForwardedEntry => ({ seq, key: `gone/${seq}`, payload: { v: 1, kind: 'gone', tenant: 'mall', user: 'alice' } });

interface Recorded {
  readonly here: number[][];
  readonly owners: Map<string, number[][]>;
  readonly served: string[];
}

/** A dispatch whose owners and local side record what reached them; `failing` owners refuse. */
function dispatchOf(failing: readonly string[] = []): { dispatch: SpeakerDispatch; recorded: Recorded } {
  const recorded: Recorded = { here: [], owners: new Map(), served: [] };
  const owners: OwnerChannel = {
    forward: async (owner, _source, entries) => {
      if (failing.includes(owner.id)) throw new Error(`${owner.id} is unreachable`);
      recorded.owners.set(owner.id, [...(recorded.owners.get(owner.id) ?? []), entries.map((entry) => entry.seq)]);
    },
    serveAt: async (owner) => {
      recorded.served.push(owner.id);
      return new Uint8Array([1]);
    },
    localUsers: async (owner, _tenant, users) => (owner.id === OTHER.id ? users.filter((user) => user === 'bob') : []),
    eraseShare: async () => {
      throw new Error('the dispatch asks no share of an erasure');
    },
  };
  const dispatch = new SpeakerDispatch({
    placement: placementOf,
    siblings: () => [OTHER, THIRD],
    owners,
    local: {
      forward: async (_source, entries) => void recorded.here.push(entries.map((entry) => entry.seq)),
      request: async () => {
        recorded.served.push('here');
        return new Uint8Array([0]);
      },
      localUsers: (_tenant, users) => users.filter((user) => user === 'alice'),
    },
  });
  return { dispatch, recorded };
}

describe('the speaker dispatch of what other cells send a cell of several processes', () => {
  it("splits a batch by owner, each part in the batch's order: the cell's merchants to their owners, other cells' (mirrors) here, a user's gone to every process", async () => {
    const { dispatch, recorded } = dispatchOf();
    await dispatch.forward('cell-a', [read(1, 'm1'), read(2, 'm2'), receipt(3, 'ma'), gone(4), read(5, 'm2'), read(6, 'm1')]);
    expect(recorded.here).toEqual([[1, 3, 4, 6]]);
    expect(recorded.owners.get('p-2')).toEqual([[2, 4, 5]]);
    expect(recorded.owners.get('p-3')).toEqual([[4]]);
  });

  it('applies an erasure here only once every entry before it was applied, wherever it went, and the entries after it only then', async () => {
    const { dispatch, recorded } = dispatchOf();
    await dispatch.forward('cell-a', [read(1, 'm2'), read(2, 'm1'), erase(3), read(4, 'm2'), read(5, 'm1')]);
    expect(recorded.here).toEqual([[2], [3], [5]]);
    expect(recorded.owners.get('p-2')).toEqual([[1], [4]]);
  });

    it('fails the whole batch when one owner refuses it (the source sends it again; the owners apply idempotently), after every part was tried', async () => {
    const { dispatch, recorded } = dispatchOf(['p-2']);
    await expect(dispatch.forward('cell-a', [read(1, 'm1'), read(2, 'm2')])).rejects.toThrow('p-2 is unreachable');
    expect(recorded.here).toEqual([[1]]);
  });

  it('refuses a batch naming a merchant of the cell without an owner right now, so that the source retries it', async () => {
    const { dispatch, recorded } = dispatchOf();
    await expect(dispatch.forward('cell-a', [read(1, 'm1'), read(2, 'm3')])).rejects.toMatchObject({ code: 'OWNER_UNAVAILABLE' });
    expect(recorded.here).toEqual([]);
  });

  it("sends a history request to the owner of its conversation's merchant, anything else here", async () => {
    const { dispatch, recorded } = dispatchOf();
    const history = (merchant: string): Uint8Array => encodeJson({ v: 1, tenant: 'mall', conv: `${merchant}:alice`, afterSeq: 0, limit: 10 });
    expect(await dispatch.request('cell-a', HISTORY_PROTOCOL, history('m2'))).toEqual(new Uint8Array([1]));
    await dispatch.request('cell-a', HISTORY_PROTOCOL, history('m1'));
    await dispatch.request('cell-a', HISTORY_PROTOCOL, new TextEncoder().encode('not json'));
    await dispatch.request('cell-a', '/cellmesh/other/1.0.0', history('m2'));
    expect(recorded.served).toEqual(['p-2', 'here', 'here', 'here']);
  });

  it("answers another cell's location question from every process of the cell", async () => {
    const { dispatch } = dispatchOf();
    expect((await dispatch.localUsers('mall', ['alice', 'bob', 'carol'], 'cell-a')).sort()).toEqual(['alice', 'bob']);
  });
});
