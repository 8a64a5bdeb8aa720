import { describe, expect, it } from 'vitest';
import { ConfigError, parseCellConfig } from './config.js';
import { parseRouterConfig } from './router-config.js';

const SECRET = 'router-config-test-cluster-secret-0123456789';
const BOOTSTRAP = '/ip4/127.0.0.1/tcp/7500/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN';

describe('router config', () => {
  it('defaults to loopback, port 7600, and the routing defaults shared with cells', () => {
    const config = parseRouterConfig({ mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP] } });
    expect(config.router.id).toBe('router-1');
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 7600 });
    expect(config.mesh.listen).toEqual({ host: '127.0.0.1', port: 7500 });
    expect(config.routing).toEqual({ requestsPerSecondPerAddress: 100, burstPerAddress: 200, maxTrackedClients: 100_000, trustedProxies: [], connectPath: '/app/' });
  });

  it('refuses what a router cannot use, with the path and a suggestion', () => {
    const refusal = (raw: unknown): string => {
      try {
        parseRouterConfig(raw);
        return 'accepted';
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as Error).message;
      }
    };
    expect(refusal({ mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP], maxDevices: 10 } })).toBe('invalid router config: mesh.maxDevices is not a setting; the settings here are mesh.listen, mesh.clusterSecret, mesh.acceptClusterSecrets, mesh.admission, mesh.keyFile, mesh.timings, mesh.operatorKeys, mesh.bootstrap, mesh.advertise');
    expect(refusal({ router: { id: 'Edge_1' }, mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP] } })).toMatch(/^invalid router config: router\.id: must be lowercase letters/);
    expect(refusal({ mesh: { clusterSecret: 'short', bootstrap: ['not an address'] } })).toBe(
      'invalid router config:\n  mesh.clusterSecret: must be at least 32 characters\n  mesh.bootstrap[0]: must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>',
    );
    expect(refusal({ mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP] }, routing: { trustedProxies: ['10.0.0.0/33'], connectPath: 'app' } })).toBe(
      'invalid router config:\n  routing.trustedProxies[0]: must be an IP address or a CIDR block such as 10.0.0.0/8\n  routing.connectPath: must be a path such as /app/ (no query, no fragment)',
    );
  });

  it('gives cells the same routing section', () => {
    const cell = parseCellConfig({ tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1' }] }], routing: { trustedProxies: ['10.0.0.0/8', 'fd00::1'], burstPerAddress: 5 } });
    expect(cell.routing).toMatchObject({ trustedProxies: ['10.0.0.0/8', 'fd00::1'], burstPerAddress: 5, requestsPerSecondPerAddress: 100 });
    expect(() => parseCellConfig({ tenants: [{ id: 'mall', secret: SECRET, merchants: [] }], routing: { rate: 5 } })).toThrow('routing.rate is not a setting');
  });

  it('refuses a router on every interface that does not say the URL it is reached at', () => {
    expect(() => parseRouterConfig({ listen: { host: '0.0.0.0' }, mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP] } })).toThrow( // real-net-ok: the refusal of a wildcard
      'invalid router config: mesh.advertise.http: listen.host 0.0.0.0 is every interface, not an address the cells can hand out',
    );
    expect(parseRouterConfig({ listen: { host: '0.0.0.0' }, mesh: { clusterSecret: SECRET, bootstrap: [BOOTSTRAP], advertise: { http: 'http://10.0.0.8:7600' } } }).listen.host).toBe('0.0.0.0'); // real-net-ok: the refusal of a wildcard
  });
});
