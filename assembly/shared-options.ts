import { LAN_MEMBERSHIP_OPTIONS, type MembershipOptions } from '../mesh/membership-config.js';
import { option, type ConfigOption } from './config-options.js';

/** The options a cell and a router share with the same names and defaults: listening, logs, the mesh, routing. */

export function listenOptions(defaultPort: number, hostDescription: string): ConfigOption[] {
  return [
    option('listen.host', 'string', '`127.0.0.1`', hostDescription, { name: 'host' }),
    option('listen.port', 'number', `\`${defaultPort}\``, 'its port; 0 picks a free one', { name: 'port' }),
  ];
}

export const SHUTDOWN_AND_LOG_OPTIONS: readonly ConfigOption[] = [
  option('shutdownGraceSeconds', 'number', '`10`', 'seconds SIGTERM waits for a graceful stop before exiting anyway (exit code 1)'),
  option('log.level', 'string', '`info`', '`trace`, `debug`, `info`, `warn`, `error` or `silent`'),
];

/**
 * The mesh options of both: `bootstrap` (required of a router, empty for a cell that starts a
 * cluster) and `own` (its key file, its advertised URLs...) are each one's own.
 */
export function meshOptions(bootstrap: Pick<ConfigOption, 'defaultText' | 'description'>, own: readonly ConfigOption[]): ConfigOption[] {
  return [
    option('mesh.listen.host', 'string', '`127.0.0.1`', 'address the libp2p node listens on (a pod: its own address)', { name: 'mesh-host' }),
    option('mesh.listen.port', 'number', '`7500`', 'port of the libp2p node', { name: 'mesh-port' }),
    option('mesh.bootstrap', 'list', bootstrap.defaultText, bootstrap.description, { name: 'bootstrap' }),
    ...MESH_SECURITY_OPTIONS,
    ...own,
    ...MESH_TIMING_OPTIONS,
  ];
}

const MESH_SECURITY_OPTIONS: readonly ConfigOption[] = [
  option('mesh.clusterSecret', 'string', 'required in a mesh', 'shared by every cell and router of the cluster, ≥ 32 characters; dialled with and accepted', { name: 'cluster-secret', secret: true }),
  option('mesh.acceptClusterSecrets', 'list', 'none', 'further cluster secrets accepted from dialling peers while the secret is rotated (at most 4)', { secret: true }),
  option('mesh.admission.handshakeTimeoutMs', 'number', '`3000`', 'an inbound connection must prove the cluster secret within this (docs/mesh.md, "Admission")'),
  option('mesh.admission.maxUnauthenticatedInbound', 'number', '`16`', 'inbound connections waiting to prove it, at most; a new one evicts the oldest'),
  option('mesh.operatorKeys', 'list', 'none', 'operator public keys (`ed25519:<base64>`) whose signed placements are accepted (docs/mesh.md, "Trust: who may claim a merchant"), at most 16'),
];

const MESH_TIMING_OPTIONS: readonly ConfigOption[] = (Object.keys(LAN_MEMBERSHIP_OPTIONS) as Array<keyof MembershipOptions>).map((name) =>
  option(`mesh.timings.${name}`, 'number', `\`${LAN_MEMBERSHIP_OPTIONS[name]}\``, 'membership timing; the default is the LAN preset\'s (docs/mesh.md, "Timings and tuning")'),
);

export const ROUTING_OPTIONS: readonly ConfigOption[] = [
  option('routing.requestsPerSecondPerAddress', 'number', '`100`', 'route requests and redirects (`/v1/route`, `/v1/connect`) from one client address, on average; over it, `429 ROUTE_RATE_LIMITED` (docs/routing.md)'),
  option('routing.burstPerAddress', 'number', '`200`', '... and at once'),
  option('routing.maxTrackedClients', 'number', '`100000`', 'client addresses the route limiter remembers; idle ones are forgotten first'),
  option('routing.trustedProxies', 'list', 'none', 'load balancers (addresses or CIDR blocks) whose `X-Forwarded-For` names the client; without any the header is ignored'),
  option('routing.connectPath', 'string', '`/app/`', 'the path on the home cell\'s `http` endpoint that `/v1/connect` redirects a browser to'),
];
