import { describe, expect, it } from 'vitest';
import { CELL_OPTIONS } from './cell-options.js';
import { ConfigError, parseCellConfig } from './config.js';
import { givenByEnvironment, givenByFlag, option, valueOf, withGivenValues, type ConfigOption } from './config-options.js';

const SECRET = 'config-options-test-secret-0123456789abcdef';
const byPath = (path: string): ConfigOption => CELL_OPTIONS.find((candidate) => candidate.path === path)!;

describe('option names', () => {
  it('follow the path, or the shorter name given', () => {
    expect(option('mesh.timings.probeIntervalMs', 'number', '`500`', '')).toMatchObject({ flag: '--mesh-timings-probe-interval-ms', env: 'CELLMESH_MESH_TIMINGS_PROBE_INTERVAL_MS' });
    expect(option('store.redis.url', 'string', 'none', '', { name: 'redis-url' })).toMatchObject({ flag: '--redis-url', env: 'CELLMESH_REDIS_URL' });
    expect(byPath('listen.port')).toMatchObject({ flag: '--port', env: 'CELLMESH_PORT' });
    expect(byPath('admin.token')).toMatchObject({ flag: '--admin-token', env: 'CELLMESH_ADMIN_TOKEN', secret: true });
  });
});

describe('valueOf', () => {
  it('turns text into the kind, and leaves what does not fit as text for the schema to refuse', () => {
    expect(valueOf('number', '7400')).toBe(7400);
    expect(valueOf('number', '0.2')).toBe(0.2);
    expect(valueOf('number', '1e3')).toBe(1000);
    expect(valueOf('number', 'abc')).toBe('abc');
    expect(valueOf('number', '')).toBe('');
    expect(valueOf('boolean', 'false')).toBe(false);
    expect(valueOf('boolean', 'no')).toBe('no');
    expect(valueOf('list', ' a, b ,,c ')).toEqual(['a', 'b', 'c']);
  });
});

describe('withGivenValues', () => {
  const file = (): Record<string, unknown> => ({ tenants: [{ id: 'mall', secret: SECRET }], listen: { port: 7401 }, store: { kind: 'memory' } });

  it('sets values over the file, creating sections, and leaves the file alone', () => {
    const raw = file();
    const { merged } = withGivenValues(raw, [givenByEnvironment(byPath('listen.port'), '7402'), givenByEnvironment(byPath('limits.rateBurst'), '7')]);
    expect(merged).toMatchObject({ listen: { port: 7402 }, limits: { rateBurst: 7 } });
    expect(raw['listen']).toEqual({ port: 7401 });
    expect(parseCellConfig(merged).limits.rateBurst).toBe(7);
  });

  it('makes a mesh section of a mesh option alone, and a data directory implies a level store unless one is named', () => {
    const { merged } = withGivenValues({ tenants: [] }, [givenByEnvironment(byPath('mesh.clusterSecret'), SECRET), givenByFlag(byPath('store.directory'), '/tmp/x')]);
    expect(merged).toMatchObject({ mesh: { clusterSecret: SECRET }, store: { kind: 'level', directory: '/tmp/x' } });
    const named = withGivenValues(file(), [givenByFlag(byPath('store.directory'), '/tmp/x')]).merged;
    expect(named['store']).toEqual({ kind: 'memory', directory: '/tmp/x' });
  });

  it('names the flag or variable of a refused value, hiding secrets', () => {
    const { merged, sourceOf } = withGivenValues(file(), [
      givenByEnvironment(byPath('listen.port'), 'abc'),
      givenByFlag(byPath('mesh.bootstrap'), '/ip4/127.0.0.1/tcp/1,nonsense'),
      givenByEnvironment(byPath('mesh.clusterSecret'), 'short-secret'),
      givenByFlag(byPath('store.sync'), false),
    ]);
    let message = '';
    try {
      parseCellConfig(merged, sourceOf);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = (error as Error).message;
    }
    expect(message.split('\n').slice(1).map((line) => line.trim()).sort()).toEqual([
      '--bootstrap /ip4/127.0.0.1/tcp/1,nonsense: mesh.bootstrap[1]: must be a multiaddr such as /ip4/127.0.0.1/tcp/7500/p2p/<peer id>',
      '--no-sync: store.sync is not a setting; the settings here are store.kind',
      'CELLMESH_CLUSTER_SECRET (value hidden): mesh.clusterSecret: must be at least 32 characters',
      'CELLMESH_PORT=abc: listen.port: must be an integer from 0 to 65535',
    ]);
    expect(message).not.toContain('short-secret');
  });

  it('says which variable made a section whose required setting is missing', () => {
    const { merged, sourceOf } = withGivenValues({ tenants: [{ id: 'mall', secret: SECRET }] }, [givenByEnvironment(byPath('mesh.timings.probeIntervalMs'), '250')]);
    expect(() => parseCellConfig(merged, sourceOf)).toThrow('invalid cell config: CELLMESH_MESH_TIMINGS_PROBE_INTERVAL_MS=250 made the mesh section: mesh.clusterSecret: must be set');
  });
});
