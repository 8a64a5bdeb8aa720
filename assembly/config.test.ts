import { describe, expect, it } from 'vitest';
import { ConfigError, parseCellConfig, redisKeyPrefixOf } from './config.js';
import { nearestKey } from './config-issues.js';

const SECRET = 'config-test-secret-0123456789abcdef-0123';
const minimal = (): Record<string, unknown> => ({ tenants: [{ id: 'mall', secret: SECRET }] });
const withMesh = (): Record<string, unknown> => ({ ...minimal(), cell: { id: 'cell-a' }, store: { kind: 'level', directory: '/tmp/x' }, mesh: { clusterSecret: SECRET } });

/** The message parseCellConfig refuses `raw` with. */
function refusal(raw: unknown): string {
  try {
    parseCellConfig(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('the config was accepted');
}

describe('parseCellConfig: unknown keys', () => {
  it('names a misspelt key of a section and suggests the setting meant', () => {
    expect(refusal({ ...minimal(), listen: { prot: 7401 } })).toBe('invalid cell config: listen.prot is not a setting; did you mean listen.port?');
  });

  it('names a misspelt top-level section and suggests the one meant', () => {
    expect(refusal({ ...minimal(), stroe: { kind: 'memory' } })).toBe('invalid cell config: stroe is not a setting; did you mean store?');
  });

  it('finds unknown keys inside arrays, the store kind and the mesh, each on its own line', () => {
    const message = refusal({
      ...withMesh(),
      tenants: [{ id: 'mall', secret: SECRET, merchants: [{ id: 'm1', nmae: 'Shoes' }] }],
      store: { kind: 'level', directory: '/tmp/x', snyc: false },
      mesh: { clusterSecret: SECRET, timings: { suspectAfterMS: 900 }, advertise: { websocket: 'ws://x' } },
      limits: { ratePerSec: 5 },
    });
    expect(message.split('\n').slice(1).map((line) => line.trim()).sort()).toEqual([
      'tenants[0].merchants[0].nmae is not a setting; did you mean tenants[0].merchants[0].name?',
      'store.snyc is not a setting; did you mean store.sync?',
      'limits.ratePerSec is not a setting; did you mean limits.ratePerSecond?',
      'mesh.advertise.websocket is not a setting; the settings here are mesh.advertise.ws, mesh.advertise.http',
      'mesh.timings.suspectAfterMS is not a setting; did you mean mesh.timings.suspectAfterMs?',
    ].sort());
  });

  it('suggests only what the store kind has: a memory store has no directory', () => {
    expect(refusal({ ...minimal(), store: { kind: 'memory', directory: './data' } })).toBe('invalid cell config: store.directory is not a setting; the settings here are store.kind');
  });

  it('accepts every documented setting', () => {
    const config = parseCellConfig({
      ...withMesh(),
      listen: { host: '127.0.0.1', port: 7400 },
      store: { kind: 'level', directory: '/tmp/x', sync: true, minFlushIntervalMs: 0 },
      tenants: [{ id: 'mall', secret: SECRET, origins: ['https://shop.example'], merchants: [{ id: 'acme', name: 'ACME' }] }],
      limits: { maxFrameBytes: 65536, ratePerSecond: 50, rateBurst: 100 },
      shutdownGraceSeconds: 10,
      logins: {
        accessTokenTtlSeconds: 900,
        refreshTokenTtlSeconds: 2_592_000,
        guestTokenTtlSeconds: 3600,
        loginsPerMinutePerAddress: 20,
        loginBurstPerAddress: 40,
        loginsPerMinutePerAgent: 5,
        loginBurstPerAgent: 5,
        guestsPerMinutePerAddress: 20,
        guestBurstPerAddress: 40,
        maxTrackedClients: 10_000,
      },
      mesh: { listen: { host: '127.0.0.1', port: 7500 }, clusterSecret: SECRET, bootstrap: [], advertise: { ws: 'ws://h:1/v1/ws', http: 'http://h:1' }, maxDevices: 10, timings: { suspectAfterMs: 1500, loadChangeThreshold: 0.2 } },
      admin: { token: SECRET },
      log: { level: 'warn' },
    });
    expect(config.mesh?.timings).toEqual({ suspectAfterMs: 1500, loadChangeThreshold: 0.2 });
  });
});

describe('parseCellConfig: addresses and combinations', () => {
  it('refuses an empty listen host, for devices and for the mesh', () => {
    expect(refusal({ ...minimal(), listen: { host: '' } })).toMatch(/^invalid cell config: listen\.host: must be an address/);
    expect(refusal({ ...withMesh(), mesh: { clusterSecret: SECRET, listen: { host: ' ' } } })).toMatch(/^invalid cell config: mesh\.listen\.host: must be an address/);
  });

  it('refuses a bootstrap address that is no multiaddr, naming it by index', () => {
    expect(refusal({ ...withMesh(), mesh: { clusterSecret: SECRET, bootstrap: ['/ip4/127.0.0.1/tcp/7500', '/ip4/abc/tcp/7500'] } })).toBe(
      'invalid cell config: mesh.bootstrap[1]: must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>',
    );
  });

  it('refuses a memory store in a mesh, naming store.kind', () => {
    expect(refusal({ ...withMesh(), store: { kind: 'memory' } })).toMatch(/^invalid cell config: store\.kind: a cell in a mesh needs a durable store, level or redis/);
  });

  it('refuses mesh timings that contradict each other as a config error', () => {
    expect(refusal({ ...withMesh(), mesh: { clusterSecret: SECRET, timings: { suspicionMinMs: 9000, suspicionMaxMs: 100 } } })).toMatch(/^invalid cell config: mesh\.timings: suspicionMinMs must not exceed suspicionMaxMs/);
  });
});

describe('parseCellConfig: admin tokens', () => {
  it('accepts further tokens during a rotation, only beside admin.token', () => {
    expect(parseCellConfig({ ...minimal(), admin: { token: SECRET, acceptTokens: [`${SECRET}-new`] } }).admin).toEqual({ token: SECRET, acceptTokens: [`${SECRET}-new`] });
    expect(refusal({ ...minimal(), admin: { acceptTokens: [`${SECRET}-new`] } })).toMatch(/^invalid cell config: admin\.acceptTokens: tokens accepted during a rotation need admin\.token/);
    expect(refusal({ ...minimal(), admin: { token: SECRET, acceptTokens: ['short'] } })).toBe('invalid cell config: admin.acceptTokens[0]: must be at least 32 characters');
  });
});

describe('nearestKey', () => {
  it('allows about one edit per three characters, swaps counting as one', () => {
    expect(nearestKey('prot', ['host', 'port'])).toBe('port');
    expect(nearestKey('Port', ['host', 'port'])).toBe('port');
    expect(nearestKey('tenant', ['tenants', 'store'])).toBe('tenants');
    expect(nearestKey('xyz', ['host', 'port'])).toBeUndefined();
  });
});

describe('parseCellConfig: the redis store', () => {
  it('fills in the defaults and derives the key prefix from the cell id', () => {
    const config = parseCellConfig({ ...minimal(), cell: { id: 'cell-a' }, store: { kind: 'redis', redis: { url: 'redis://127.0.0.1:6379/2' } } });
    expect(config.store).toEqual({ kind: 'redis', redis: { url: 'redis://127.0.0.1:6379/2', acceptWeakDurability: false, waitReplicas: 0, waitTimeoutMs: 1_000 } });
    expect(redisKeyPrefixOf(config, { keyPrefix: undefined })).toBe('cellmesh:cell-a:');
    expect(redisKeyPrefixOf(config, { keyPrefix: 'pod/' })).toBe('pod/');
  });

  it('requires a Redis URL', () => {
    expect(refusal({ ...minimal(), store: { kind: 'redis', redis: {} } })).toMatch(/^invalid cell config: store\.redis\.url: /);
    expect(refusal({ ...minimal(), store: { kind: 'redis', redis: { url: 'http://127.0.0.1:6379' } } })).toBe(
      'invalid cell config: store.redis.url: must be a Redis URL such as redis://127.0.0.1:6379/0',
    );
  });

  it('needs mesh.keyFile in a mesh, the store having no directory for the key', () => {
    const redis = { kind: 'redis', redis: { url: 'redis://127.0.0.1:6379' } };
    const advertise = { ws: 'ws://cell-c:7400/v1/ws', http: 'http://cell-c:7400' };
    expect(refusal({ ...withMesh(), store: redis, mesh: { clusterSecret: SECRET, advertise } })).toMatch(/^invalid cell config: mesh\.keyFile: a cell in a mesh on the redis store needs mesh\.keyFile/);
    expect(parseCellConfig({ ...withMesh(), store: redis, mesh: { clusterSecret: SECRET, keyFile: '/var/lib/cellmesh/mesh-peer.key', advertise } }).store.kind).toBe('redis');
  });

  it("needs mesh.advertise in a mesh on Redis: any process may speak for the cell, so its record names their balancer", () => {
    const redis = { kind: 'redis', redis: { url: 'redis://127.0.0.1:6379' } };
    expect(refusal({ ...withMesh(), store: redis, mesh: { clusterSecret: SECRET, keyFile: '/k', advertise: { ws: 'ws://cell-c:7400/v1/ws' } } })).toMatch(
      /^invalid cell config: mesh\.advertise: a cell in a mesh on the redis store needs mesh\.advertise\.ws and \.http: the address of the balancer/,
    );
  });
});

describe('parseCellConfig: wildcard addresses', () => {
  it('refuses a cell in a mesh that listens on every interface and advertises nothing: peers would dial 0.0.0.0', () => {
    expect(refusal({ ...withMesh(), listen: { host: '0.0.0.0' } })).toBe( // real-net-ok: the refusal of a wildcard
      [
        'invalid cell config:',
        '  mesh.advertise.ws: listen.host 0.0.0.0 is every interface, not an address other cells and devices can reach: set the URL they use (the pod\'s address or DNS name)',
        '  mesh.advertise.http: listen.host 0.0.0.0 is every interface, not an address other cells and devices can reach: set the URL they use (the pod\'s address or DNS name)',
      ].join('\n'),
    );
    expect(refusal({ ...withMesh(), listen: { host: '::' }, mesh: { clusterSecret: SECRET, advertise: { ws: 'ws://10.0.0.7:7400/v1/ws' } } })).toMatch(/^invalid cell config: mesh\.advertise\.http: listen\.host :: is every interface/);
  });

  it('accepts it with both URLs advertised, and a standalone cell on every interface', () => {
    const advertise = { ws: 'ws://10.0.0.7:7400/v1/ws', http: 'http://10.0.0.7:7400' };
    expect(parseCellConfig({ ...withMesh(), listen: { host: '0.0.0.0' }, mesh: { clusterSecret: SECRET, advertise } }).mesh?.advertise).toEqual(advertise); // real-net-ok: the refusal of a wildcard
    expect(parseCellConfig({ ...minimal(), listen: { host: '0.0.0.0' } }).listen.host).toBe('0.0.0.0'); // real-net-ok: the refusal of a wildcard
  });

  it('says what a port must be, whatever is wrong with it', () => {
    for (const port of ['7400', 70_000, 1.5, -1]) expect(refusal({ ...minimal(), listen: { port } })).toBe('invalid cell config: listen.port: must be an integer from 0 to 65535');
  });
});
