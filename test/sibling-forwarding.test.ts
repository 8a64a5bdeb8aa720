/**
 * Which process serves the admin API's catalogue changes and erasures in a cell of several
 * processes (cell/access/sibling-forwarding.ts): the one `catalogueApplier` names (in a mesh, the
 * speaker), reached over real HTTP; a share of an erasure asked by another process is served
 * where it arrives.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpRequestData } from '../cell/access/http-router.js';
import { forwardToOwner, type ForwardContext } from '../cell/access/sibling-forwarding.js';
import type { SiblingAccess } from '../cell/access/sibling-relay.js';
import { CellError } from '../cell/protocol/errors.js';

describe('forwarding catalogue changes and erasures to the process that applies them', () => {
  let applier: Server;
  let base: string;
  const received: Array<{ method: string; url: string; relayedBy: string | undefined; body: string }> = [];

  beforeAll(async () => {
    applier = createServer((request: IncomingMessage, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        received.push({ method: request.method ?? '', url: request.url ?? '', relayedBy: request.headers['x-cellmesh-relayed-by'] as string | undefined, body: Buffer.concat(chunks).toString('utf8') });
        response.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ appliedBy: 'speaker' }));
      });
    });
    await new Promise<void>((resolve) => applier.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(applier.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => applier.close(resolve));
  });

  const siblings = (): SiblingAccess => ({
    processId: 'standby-1',
    serverOf: () => ({ here: true }),
    speakerServer: () => ({ here: true }),
    catalogueApplier: () => ({ here: false, ws: `${base.replace('http', 'ws')}/v1/ws`, http: base }),
  });
  const request = (body = '', query = ''): HttpRequestData => ({ parameters: [], query: new URLSearchParams(query), body, bytes: Buffer.from(body), headers: {}, token: 'admin', clientAddress: '127.0.0.1' });
  const context = (method: string, path: string, relayedBy = ''): ForwardContext => ({
    method,
    path,
    query: '',
    headers: { authorization: 'Bearer admin', 'content-type': 'application/json', origin: '', 'user-agent': '', 'x-forwarded-for': '', 'x-cellmesh-relayed-by': relayedBy },
    clientAddress: '127.0.0.1',
  });

  it('sends a change of the catalogue, and an erasure, on to the applier with the relay marker, and answers as it answered', async () => {
    const created = await forwardToOwner(siblings(), '/v1/admin/tenants/:tenant/merchants', request('{"id":"s1"}'), context('POST', '/v1/admin/tenants/shop/merchants'));
    expect(created?.status).toBe(201);
    expect(JSON.parse(created!.raw.toString('utf8'))).toEqual({ appliedBy: 'speaker' });
    const erased = await forwardToOwner(siblings(), '/v1/admin/tenants/:tenant/customers/:customer', request(), context('DELETE', '/v1/admin/tenants/shop/customers/carl'));
    expect(erased?.status).toBe(201);
    expect(received).toEqual([
      { method: 'POST', url: '/v1/admin/tenants/shop/merchants', relayedBy: 'standby-1', body: '{"id":"s1"}' },
      { method: 'DELETE', url: '/v1/admin/tenants/shop/customers/carl', relayedBy: 'standby-1', body: '' },
    ]);
  });

  it("serves a share of an erasure (it names its merchants) where it arrives, and refuses a relayed change, or a whole erasure, that reached a process which no longer applies them", async () => {
    expect(await forwardToOwner(siblings(), '/v1/admin/tenants/:tenant/customers/:customer', request('', 'merchants=m1'), context('DELETE', '/v1/admin/tenants/shop/customers/carl', 'proc-a'))).toBeUndefined();
    for (const [pattern, relayed, method, path] of [
      ['/v1/admin/tenants', request('{"id":"shop"}'), 'POST', '/v1/admin/tenants'],
      ['/v1/admin/tenants/:tenant/customers/:customer', request(), 'DELETE', '/v1/admin/tenants/shop/customers/carl'],
    ] as const) {
      const refused = await forwardToOwner(siblings(), pattern, relayed, context(method, path, 'proc-a')).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(CellError);
      expect(refused).toMatchObject({ code: 'OWNER_UNAVAILABLE' });
    }
    // Reads are the process's own.
    expect(await forwardToOwner(siblings(), '/v1/admin/tenants', request(), context('GET', '/v1/admin/tenants'))).toBeUndefined();
  });
});
