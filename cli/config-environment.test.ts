import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { CELL_COMMAND_OPTIONS, CELL_OPTIONS } from '../assembly/cell-options.js';
import { ConfigError } from '../assembly/config.js';
import { ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS } from '../assembly/router-options.js';
import { givenValues, refuseUnknownVariables } from './config-environment.js';
import { addConfigFlags } from './config-flags.js';

/** The flags commander parses for `cellmesh cell ...args`, as the command's action gets them. */
function cellFlags(...args: string[]): Record<string, unknown> {
  const command = addConfigFlags(new Command('cell').exitOverride(), CELL_COMMAND_OPTIONS, CELL_OPTIONS);
  command.parse(args, { from: 'user' });
  return command.opts();
}

/** What the flags and `env` give, as `path=value (source)`. */
function given(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): string[] {
  return givenValues(CELL_OPTIONS, flags, env).map((value) => `${value.option.path}=${value.text} (${value.source})`);
}

function refusal(action: () => void): string {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  return 'accepted';
}

describe('givenValues', () => {
  it('takes a flag over its variable, ignores empty variables, and hides secrets', () => {
    expect(given(cellFlags('--port', '7402', '--mesh-timings-probe-interval-ms', '250'), { CELLMESH_PORT: '7401', CELLMESH_HOST: '', CELLMESH_CLUSTER_SECRET: 's'.repeat(40), CELLMESH_ROUTING_TRUSTED_PROXIES: '10.0.0.1,10.0.0.2' })).toEqual([
      'listen.port=7402 (--port 7402)',
      'routing.trustedProxies=10.0.0.1,10.0.0.2 (CELLMESH_ROUTING_TRUSTED_PROXIES=10.0.0.1,10.0.0.2)',
      `mesh.clusterSecret=${'s'.repeat(40)} (CELLMESH_CLUSTER_SECRET (value hidden))`,
      'mesh.timings.probeIntervalMs=250 (--mesh-timings-probe-interval-ms 250)',
    ]);
  });

  it('leaves a boolean to the file unless a flag or the variable sets it', () => {
    expect(given(cellFlags(), {})).toEqual([]);
    expect(given(cellFlags('--no-sync'), { CELLMESH_SYNC: 'true' })).toEqual(['store.sync=false (--no-sync)']);
    expect(given(cellFlags('--sync'), {})).toEqual(['store.sync=true (--sync)']);
    expect(given(cellFlags(), { CELLMESH_SYNC: 'false' })).toEqual(['store.sync=false (CELLMESH_SYNC=false)']);
  });

  it('refuses a Kubernetes service link where a setting was meant', () => {
    expect(refusal(() => given({}, { CELLMESH_PORT: 'tcp://10.96.0.7:7400' }))).toBe(
      'CELLMESH_PORT=tcp://10.96.0.7:7400 is a Kubernetes service link, not a setting (a Service whose name makes this variable): set enableServiceLinks: false in the pod spec',
    );
  });
});

describe('refuseUnknownVariables', () => {
  const cell = (env: NodeJS.ProcessEnv): string => refusal(() => refuseUnknownVariables('cell', env, CELL_COMMAND_OPTIONS, CELL_OPTIONS));

  it('names a misspelt variable and the one meant', () => {
    expect(cell({ CELLMESH_PROT: '7401' })).toBe('CELLMESH_PROT is not a variable of cellmesh cell (did you mean CELLMESH_PORT?): unset it or correct its name; docs/operations.md lists every variable');
    expect(cell({ CELLMESH_MESH_TIMINGS_PROBE_INTERVAL: '250', CELLMESH_NONSENSE: 'x', PATH: '/bin' }).split('\n')).toEqual([
      'unknown environment variables (unset them or correct their names; docs/operations.md lists every variable):',
      '  CELLMESH_MESH_TIMINGS_PROBE_INTERVAL is not a variable of cellmesh cell (did you mean CELLMESH_MESH_TIMINGS_PROBE_INTERVAL_MS?)',
      '  CELLMESH_NONSENSE is not a variable of cellmesh cell',
    ]);
  });

  it('lets through the variables of the other commands, empty ones and Kubernetes service links', () => {
    expect(cell({ CELLMESH_CONFIG: 'c.yaml', CELLMESH_ADMIN_TOKEN: 'x', CELLMESH_HOME: '/tmp', CELLMESH_TEST_LOG: '1', CELLMESH_TYPO: '' })).toBe('accepted');
    expect(cell({ CELLMESH_PEERS_SERVICE_HOST: '10.96.0.7', CELLMESH_PEERS_SERVICE_PORT: '7500', CELLMESH_PEERS_SERVICE_PORT_MESH: '7500', CELLMESH_PEERS_PORT: 'tcp://10.96.0.7:7500', CELLMESH_PEERS_PORT_7500_TCP_ADDR: '10.96.0.7' })).toBe('accepted');
  });

  it('refuses a cell\'s variable given to a router', () => {
    expect(refusal(() => refuseUnknownVariables('router', { CELLMESH_CELL_ID: 'a', CELLMESH_ROUTER_ID: 'edge-1' }, ROUTER_COMMAND_OPTIONS, ROUTER_OPTIONS))).toMatch(/^CELLMESH_CELL_ID is not a variable of cellmesh router/);
  });
});
