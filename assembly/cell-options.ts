import { option, type CommandOption, type ConfigOption, type FileOnlySetting } from './config-options.js';
import { listenOptions, meshOptions, ROUTING_OPTIONS, SHUTDOWN_AND_LOG_OPTIONS } from './shared-options.js';

/**
 * Every option of `cellmesh cell`, in the order of the table in docs/operations.md ("Running a
 * cell"), which test/config-table.test.ts holds to this list row for row. A new scalar setting
 * of assembly/config.ts gets its line here (the test fails until it has one).
 */
export const CELL_OPTIONS: readonly ConfigOption[] = [
  option('cell.id', 'string', '`cell-1`', 'this cell\'s id; in a mesh, lowercase letters, digits and dashes'),
  ...listenOptions(7400, 'address of the WebSocket and HTTP server; a pod sets its own (see "Cells as pods"); a wildcard (`0.0.0.0`) in a mesh needs `mesh.advertise`'),
  option('store.kind', 'string', '`level`', '`level` (LevelDB), `redis` ("Storing a cell in Redis") or `memory` (tests, demos: nothing survives a restart)', { name: 'store' }),
  option('store.directory', 'string', '`./data/<cell id>`', 'the LevelDB directory; setting it implies `store.kind` `level`', { name: 'data-dir', implies: { 'store.kind': 'level' } }),
  option('store.sync', 'boolean', '`true`', 'fsync every group-committed batch; off survives kill -9, not power loss', { name: 'sync' }),
  option('store.minFlushIntervalMs', 'number', '`0`', 'least ms between the starts of two fsynced batches (0 to 100); 1-2 saves CPU under moderate load for as much more ack latency'),
  option('store.redis.url', 'string', 'required with `store.kind` `redis`', 'the cell\'s Redis, `redis://[user:password@]host:port[/db]` (`rediss://` for TLS); setting it implies `store.kind` `redis`', { name: 'redis-url', secret: true, implies: { 'store.kind': 'redis' } }),
  option('store.redis.keyPrefix', 'string', '`cellmesh:<cell id>:`', 'the prefix of the cell\'s Redis keys, so cells can share one Redis', { name: 'redis-key-prefix' }),
  option('store.redis.acceptWeakDurability', 'boolean', '`false`', 'start on a Redis that cannot keep the durable ack (with a warning): acknowledged messages may then be lost', { name: 'redis-accept-weak-durability' }),
  option('store.redis.waitReplicas', 'number', '`0`', 'replicas each write must reach (`WAIT`) before it is acknowledged', { name: 'redis-wait-replicas' }),
  option('store.redis.waitTimeoutMs', 'number', '`1000`', 'how long a write waits for them before it fails (`STORE_UNAVAILABLE`)', { name: 'redis-wait-timeout-ms' }),
  option('processes.id', 'string', 'the host name (a pod\'s name)', 'this process among the processes of a cell on Redis ("A cell of several processes"); unique among them', { name: 'process-id' }),
  option('processes.leaseTtlMs', 'number', '`3000`', 'how long a process\'s lease lives without renewal: a dead process\'s merchants move after at most this'),
  option('processes.renewIntervalMs', 'number', '`1000`', 'how often the lease is renewed and the merchants\' owners looked at; at most a third of the TTL'),
  option('processes.advertise.ws', 'string', 'the listen address', 'the WebSocket URL the other processes of the cell relay devices to'),
  option('processes.advertise.http', 'string', 'the listen address', 'the HTTP URL the other processes of the cell forward calls to'),
  ...SHUTDOWN_AND_LOG_OPTIONS,
  option('health.maxEventLoopStallMs', 'number', '`5000`', '`/v1/healthz` answers 503 once the event loop was blocked longer than this (50 to 600000; see "Health and metrics")'),
  option('admin.token', 'string', 'none: the admin API refuses everything', 'bearer token of the admin API (`/v1/admin/...`), ≥ 32 characters; the admin commands send the same variable\'s token (see "The admin API")', { secret: true }),
  option('admin.acceptTokens', 'list', 'none', 'further tokens the admin API answers to while the token is rotated (at most 4; needs `admin.token`)', { secret: true }),
  option('limits.maxFrameBytes', 'number', '`65536`', 'largest frame a client may send; larger ones get `PAYLOAD_TOO_LARGE`'),
  option('limits.ratePerSecond', 'number', '`50`', 'frames per connection per second, on average (every op but `ack`)'),
  option('limits.rateBurst', 'number', '`100`', '... and at once'),
  option('limits.ackRatePerSecond', 'number', '`100`', '`ack` frames per connection per second, on average, plus one per message pushed'),
  option('limits.ackBurst', 'number', '`1000`', '... and at once (at least `limits.deliveryWindow`)'),
  option('limits.maxDevicesPerUser', 'number', '`5`', 'connections one user may hold in this cell at once'),
  option('limits.deliveryWindow', 'number', '`256`', 'unacknowledged messages in flight per device (1 to 10000)'),
  option('limits.maxBackpressureBytes', 'number', '`1048576`', 'bytes queued for a device that does not read before it is closed (4008)'),
  option('limits.idleTimeoutSeconds', 'number', '`120`', 'a connection silent this long is dropped; pinged before (8 to 960)'),
  option('limits.syncPageSize', 'number', '`100`', 'messages read from the store per page when a device catches up (1 to 1000)'),
  option('limits.cursorWriteIntervalMs', 'number', '`500`', 'delivery cursors are written at most this often (see "A cell that is down")'),
  option('limits.maxConsecutiveErrors', 'number', '`50`', 'errors a connection may cause at once before 4429 (bad frames, refused ack entries, `RATE_LIMITED`)'),
  option('limits.errorRecoveryPerSecond', 'number', '`1`', '... and how fast that allowance grows back'),
  option('desk.stickyWindowMs', 'number', '`86400000`', 'a returning customer goes back to its last agent within this, if free (docs/desk.md, "Settings")'),
  option('desk.initialHandlingMs', 'number', '`300000`', 'handling time assumed for estimated waits until a group closed a consultation'),
  option('desk.graceMs', 'number', '`120000`', 'an agent without devices keeps its consultations this long'),
  option('desk.inactivityCloseMs', 'number', '`1800000`', 'an assigned consultation without a message this long is closed'),
  option('logins.accessTokenTtlSeconds', 'number', '`900`', 'lifetime of an agent\'s token from `POST /v1/login` (60 to 86400)'),
  option('logins.refreshTokenTtlSeconds', 'number', '`2592000`', 'lifetime of each refresh token (30 days), agents\' and guests\'; a refresh starts a new one (3600 to one year)'),
  option('logins.guestTokenTtlSeconds', 'number', '`3600`', 'lifetime of a guest\'s token from `POST /v1/guest` (60 to 86400)'),
  option('logins.loginsPerMinutePerAddress', 'number', '`20`', 'logins from one client address, on average'),
  option('logins.loginBurstPerAddress', 'number', '`40`', '... and at once'),
  option('logins.loginsPerMinutePerAgent', 'number', '`5`', 'logins for one agent name, right password or not (what bounds guessing), on average'),
  option('logins.loginBurstPerAgent', 'number', '`5`', '... and at once'),
  option('logins.guestsPerMinutePerAddress', 'number', '`20`', 'guest tokens for one client address, on average'),
  option('logins.guestBurstPerAddress', 'number', '`40`', '... and at once'),
  option('logins.maxTrackedClients', 'number', '`10000`', 'addresses and agent names each login limit remembers; idle ones are forgotten first'),
  ...ROUTING_OPTIONS,
  ...meshOptions({ defaultText: 'none (the first cell)', description: 'libp2p addresses of any cells of the cluster, `/ip4/…/tcp/…/p2p/…`' }, [
    option('mesh.keyFile', 'string', '`<store directory>/mesh-peer.key`', 'the cell\'s libp2p key: its identity in the cluster; required on the redis store: one file for all the cell\'s processes'),
    option('mesh.advertise.ws', 'string', 'the listen address', 'the WebSocket URL devices are sent to (a pod: its address or DNS name); required with a wildcard `listen.host`, and on the redis store (the balancer in front of the cell\'s processes)'),
    option('mesh.advertise.http', 'string', 'the listen address', 'the HTTP URL of the cell for devices and other cells; required with a wildcard `listen.host`, and on the redis store'),
    option('mesh.maxDevices', 'number', '`100000`', 'devices this cell is sized for (gossiped capacity)'),
  ]),
];

export const CELL_FILE_ONLY: readonly FileOnlySetting[] = [
  { path: 'tenants', defaultText: 'required', description: 'the tenants: ids, secrets, origins, merchants with their agent seeds, attachments, retention (the full config below)' },
];

export const CELL_COMMAND_OPTIONS: readonly CommandOption[] = [
  { flags: '-c, --config <file>', env: 'CELLMESH_CONFIG', defaultText: 'required', description: 'the YAML or JSON config file (tenants live there, besides those created through the admin API)' },
  { flags: '--insecure-allow-weak-secrets', defaultText: 'off', description: 'start even with guessable secrets, the demo\'s say (see "Secrets"): local experiments only' },
];
