import { Option } from 'commander';
import { ConfigError } from '../assembly/config.js';
import { nearestKey } from '../assembly/config-issues.js';
import { ENV_PREFIX, givenByEnvironment, givenByFlag, type CommandOption, type ConfigOption, type GivenValue } from '../assembly/config-options.js';

/**
 * The values a command's flags and environment give its config's options (a flag wins over its
 * variable, which wins over the file), and the refusal of a variable that no option reads.
 */

/** What the flags and the environment set, a flag before its variable; an empty variable is unset (main.ts drops those). */
export function givenValues(options: readonly ConfigOption[], flags: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv): GivenValue[] {
  const given: GivenValue[] = [];
  for (const option of options) {
    const flag = flags[new Option(option.flag).attributeName()];
    if (typeof flag === 'string' || typeof flag === 'boolean') {
      given.push(givenByFlag(option, flag));
      continue;
    }
    const text = env[option.env];
    if (text === undefined || text === '') continue;
    if (SERVICE_LINK_VALUE.test(text)) {
      throw new ConfigError(`${option.env}=${text} is a Kubernetes service link, not a setting (a Service whose name makes this variable): set enableServiceLinks: false in the pod spec`);
    }
    given.push(givenByEnvironment(option, text));
  }
  return given;
}

/**
 * Variables other `cellmesh` commands, the simulator and the tests read: set in the same shell
 * or pod, they are not typos of a setting of this command.
 */
export const OTHER_COMMANDS_VARIABLES: readonly string[] = [
  'CELLMESH_ADMIN_TOKEN', // the admin commands' token (a cell's admin.token besides)
  'CELLMESH_TENANT_SECRET', // `cellmesh token`
  'CELLMESH_HOME', // `cellmesh chat --guest`
  'CELLMESH_DEMO_PORT_BASE', // `cellmesh demo`
  'CELLMESH_TEST_LOG',
  'CELLMESH_PROPERTY_SEED',
  'CELLMESH_PROPERTY_OPS',
  'CELLMESH_SIM_CHILD',
  'CELLMESH_SOAK_WORKER',
  'CELLMESH_BENCH_FD_RAISED',
  'CELLMESH_REDIS_SERVER', // testing/redis-server.ts: the redis-server binary the tests start
];

/**
 * Kubernetes gives a pod variables for the Services of its namespace (`<NAME>_SERVICE_HOST`,
 * `<NAME>_PORT_7400_TCP`, `<NAME>_PORT=tcp://...`): a Service named `cellmesh-...` makes some
 * start with our prefix. They are no typo of ours.
 */
const SERVICE_LINK_NAME = /_SERVICE_HOST$|_SERVICE_PORT(_\w+)?$|_PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?$/;
const SERVICE_LINK_VALUE = /^(tcp|udp|sctp):\/\/[^/]+:\d+$/;

/**
 * Refuses a `CELLMESH_*` variable that no option of the command reads: a misspelt one
 * (PROT for PORT) would otherwise leave the default in force without a word, as an unknown
 * key of the file would.
 */
export function refuseUnknownVariables(command: string, env: NodeJS.ProcessEnv, commandOptions: readonly CommandOption[], options: readonly ConfigOption[]): void {
  const known = [...options.map((option) => option.env), ...commandOptions.flatMap((option) => (option.env === undefined ? [] : [option.env]))];
  const accepted = new Set([...known, ...OTHER_COMMANDS_VARIABLES]);
  const unknown = Object.entries(env)
    .filter(([name, value]) => name.startsWith(ENV_PREFIX) && value !== undefined && value !== '' && !accepted.has(name))
    .filter(([name, value]) => !SERVICE_LINK_NAME.test(name) && !(name.endsWith('_PORT') && SERVICE_LINK_VALUE.test(value!)))
    .map(([name]) => name)
    .sort();
  if (unknown.length === 0) return;
  const lines = unknown.map((name) => {
    const nearest = nearestKey(name, known);
    return `${name} is not a variable of cellmesh ${command}${nearest === undefined ? '' : ` (did you mean ${nearest}?)`}`;
  });
  const listed = 'docs/operations.md lists every variable';
  if (lines.length === 1) throw new ConfigError(`${lines[0]}: unset it or correct its name; ${listed}`);
  throw new ConfigError(`unknown environment variables (unset them or correct their names; ${listed}):\n${lines.map((line) => `  ${line}`).join('\n')}`);
}
