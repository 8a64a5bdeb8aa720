import { option, type CommandOption, type ConfigOption } from './config-options.js';
import { listenOptions, meshOptions, ROUTING_OPTIONS, SHUTDOWN_AND_LOG_OPTIONS } from './shared-options.js';

/**
 * Every option of `cellmesh router`, in the order of its table in docs/operations.md ("Running a
 * router"), which test/config-table.test.ts holds to this list row for row. A router has no
 * file-only setting: it can run from flags and variables alone.
 */
export const ROUTER_OPTIONS: readonly ConfigOption[] = [
  option('router.id', 'string', '`router-1`', 'unique among cells and routers; lowercase letters, digits and dashes'),
  ...listenOptions(7600, 'address route requests and redirects are served on; a wildcard (`0.0.0.0`) needs `mesh.advertise.http`'),
  ...SHUTDOWN_AND_LOG_OPTIONS,
  ...ROUTING_OPTIONS,
  ...meshOptions({ defaultText: 'required', description: 'libp2p addresses of running cells, at least one' }, [
    option('mesh.keyFile', 'string', 'none: a new key at every start', 'the router\'s libp2p key (a router keeps no data)'),
    option('mesh.advertise.http', 'string', 'the listen address', 'the URL the router\'s record names (a pod: its address or DNS name); required with a wildcard `listen.host`'),
  ]),
];

export const ROUTER_COMMAND_OPTIONS: readonly CommandOption[] = [
  { flags: '-c, --config <file>', env: 'CELLMESH_CONFIG', defaultText: 'none', description: 'a YAML or JSON config file; without one, the flags and variables are the whole config' },
  { flags: '--insecure-allow-weak-secrets', defaultText: 'off', description: 'start even with a guessable cluster secret, the demo\'s say: local experiments only' },
];
