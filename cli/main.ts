import '../platform/promise-with-resolvers.js';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { exitCodeOfCommander } from './cli-errors.js';
import { addSimCommand } from '../sim/add-sim-command.js';
import { DEFAULT_DEMO_PORT_BASE, DEMO_PORT_SPAN } from './demo-ports.js';
import { nodeVersionWarning } from './node-version.js';

// An empty variable (`CELLMESH_PORT=` in a pod spec) means "not set", not an empty value.
for (const [name, value] of Object.entries(process.env)) {
  if (name.startsWith('CELLMESH_') && value === '') delete process.env[name];
}

const nodeWarning = nodeVersionWarning(process.versions.node);
if (nodeWarning !== undefined) process.stderr.write(`${nodeWarning}\n`);

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

// Set before any subcommand is added, so that they inherit both: exitOverride makes parse errors
// reach the handler at the end of this file (which gives them the usage exit code); positional
// options give `demo stop-cell --data-dir` to stop-cell, not to `demo` and its default.
const program = new Command()
  .name('cellmesh')
  .description('A cell-based customer-service chat cluster: run cells, mint tokens, chat.')
  .version(version, '-V, --version', 'print the version of cellmesh')
  .exitOverride()
  .enablePositionalOptions()
  .showHelpAfterError();

program
  .command('cell')
  .description('run one business cell (WebSocket at /v1/ws, HTTP API under /v1/)')
  .addOption(new Option('-c, --config <file>', 'YAML or JSON config file (see docs/operations.md)').env('CELLMESH_CONFIG'))
  .addOption(new Option('--cell-id <id>', 'this cell\'s id').env('CELLMESH_CELL_ID'))
  .addOption(new Option('--host <address>', 'address to listen on (default 127.0.0.1)').env('CELLMESH_HOST'))
  .addOption(new Option('--port <port>', 'port to listen on, 0 for any free one (default 7400)').env('CELLMESH_PORT').argParser(parsePort))
  .addOption(new Option('--store <kind>', 'storage adapter').choices(['level', 'memory', 'redis']).env('CELLMESH_STORE'))
  .addOption(new Option('--redis-url <url>', 'Redis of the redis store, redis://host:port/db').env('CELLMESH_REDIS_URL'))
  .addOption(new Option('--process-id <id>', 'this process\'s id among the processes of a cell on Redis (default the host name)').env('CELLMESH_PROCESS_ID'))
  .addOption(new Option('--data-dir <dir>', 'LevelDB directory (default ./data/<cell id>)').env('CELLMESH_DATA_DIR'))
  .addOption(new Option('--no-sync', 'do not fsync store batches (survives kill -9, not power loss)'))
  .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']).env('CELLMESH_LOG_LEVEL'))
  .addOption(new Option('--mesh-host <address>', 'address the libp2p node listens on (default 127.0.0.1)').env('CELLMESH_MESH_HOST'))
  .addOption(new Option('--mesh-port <port>', 'port of the libp2p node (default 7500)').env('CELLMESH_MESH_PORT').argParser(parsePort))
  .addOption(new Option('--bootstrap <addresses>', 'comma-separated libp2p addresses of cells to join through').env('CELLMESH_BOOTSTRAP'))
  .addOption(new Option('--cluster-secret <secret>', 'the cluster secret (prefer the env var or the config file)').env('CELLMESH_CLUSTER_SECRET'))
  .option('--insecure-allow-weak-secrets', 'start even with the demo\'s published secrets or guessable ones: local experiments only, never production')
  .action(lazy(async () => (await import('./cell-command.js')).runCellCommand));

program
  .command('router')
  .description('run a router: joins a cluster as an observer and answers route requests (/v1/route, /v1/connect) for every cell')
  .addOption(new Option('-c, --config <file>', 'YAML or JSON router config file (see docs/operations.md)').env('CELLMESH_CONFIG'))
  .addOption(new Option('--host <address>', 'address to listen on (default 127.0.0.1)').env('CELLMESH_HOST'))
  .addOption(new Option('--port <port>', 'port to listen on, 0 for any free one (default 7600)').env('CELLMESH_PORT').argParser(parsePort))
  .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']).env('CELLMESH_LOG_LEVEL'))
  .option('--insecure-allow-weak-secrets', 'start even with the demo\'s published cluster secret or a guessable one: local experiments only')
  .action(lazy(async () => (await import('./router-command.js')).runRouterCommand));

program
  .command('token')
  .description('mint a device token (JWT, HS256) for demos and tests')
  .requiredOption('--tenant <id>', 'tenant id')
  .requiredOption('--user <id>', 'user id')
  .addOption(new Option('--role <role>', 'user role').choices(['customer', 'agent']).default('customer'))
  .option('--merchant <id>', 'merchant the agent works for (agents only)')
  .option('--device <id>', 'device id', 'cli')
  .addOption(new Option('--ttl <seconds>', 'lifetime in seconds').default(3600).argParser(parsePositiveInt))
  .addOption(new Option('--secret <secret>', 'the tenant secret').env('CELLMESH_TENANT_SECRET'))
  .addOption(new Option('-c, --config <file>', 'read the tenant secret from this cell config').env('CELLMESH_CONFIG'))
  .option('--kid <kid>', 'name the secret in the token (a tenant with `secrets`); with --config, sign with the secret of this kid (default: the first)')
  .action(lazy(async () => (await import('./token-command.js')).runTokenCommand));

program
  .command('move-merchant')
  .description('move a merchant (its conversations, history and cursors) to another cell of a running cluster')
  .requiredOption('--cluster <url>', 'any cell of the cluster, http://host:port')
  .addOption(new Option('--admin-token <token>', 'the admin token of the cells').env('CELLMESH_ADMIN_TOKEN'))
  .requiredOption('--tenant <id>', 'tenant of the merchant')
  .requiredOption('--merchant <id>', 'the merchant to move')
  .requiredOption('--to <cell>', 'id of the cell that becomes its home')
  .action(lazy(async () => (await import('./move-command.js')).runMoveCommand));

/** The options every admin command (people, audit, customers, blocks) takes: which cell, and its admin token. */
function withAdmin(command: Command, { json = true } = {}): Command {
  command
    .requiredOption('--cell <url>', 'the cell whose admin API to use, http://host:port (for agents and blocks: the merchant\'s home cell)')
    .addOption(new Option('--admin-token <token>', 'the admin token of the cell').env('CELLMESH_ADMIN_TOKEN'));
  return json ? command.option('--json', 'print the answer as JSON') : command;
}

/** A command about one merchant's agents. */
function agentsCommand(name: string, description: string): Command {
  return withAdmin(agents.command(name).description(description))
    .requiredOption('--tenant <id>', 'tenant of the merchant')
    .requiredOption('--merchant <id>', 'the merchant');
}

/** The fields of an agent that `add` and `update` set. */
function withAgentFields(command: Command): Command {
  return command
    .option('--name <name>', 'display name (1-200 characters; default: the id)')
    .addOption(new Option('--capacity <n>', 'consultations the agent handles at once (1-1000; default 5)').argParser(parsePositiveInt))
    .option('--groups <groups>', 'comma-separated groups, e.g. pre-sales,after-sales (default: the one group "default")')
    .option('--supervisor', 'the agent supervises: watches every consultation of the merchant')
    .option('--no-supervisor', 'the agent does not supervise');
}

const tenants = program.command('tenants').description('the tenants a cell serves, through its admin API (docs/operations.md)');

/** The settings of a tenant that `create` and `update` set. */
function withTenantFields(command: Command): Command {
  return command
    .option('--name <name>', 'display name (1-200 characters)')
    .option('--origins <urls>', 'comma-separated browser origins allowed to open WebSockets, e.g. https://shop.example')
    .option('--secret-stdin', 'read the signing secret from standard input (default: the cell generates one and prints it once)')
    .addOption(new Option('--conversation-days <n>', 'delete messages older than this many days').argParser(parsePositiveInt))
    .addOption(new Option('--attachment-days <n>', 'delete attachments this many days after their upload').argParser(parsePositiveInt))
    .addOption(new Option('--attachment-max-bytes <n>', 'largest upload, in bytes').argParser(parsePositiveInt))
    .option('--attachment-types <types>', 'comma-separated media types accepted, e.g. image/png,application/pdf');
}

withAdmin(tenants.command('list').description('list the tenants and the merchants hosted here (never a secret)')).action(
  lazy(async () => (await import('./catalogue-command.js')).runTenantsListCommand),
);
withTenantFields(withAdmin(tenants.command('create').description('create a tenant; prints its generated secret once')).argument('<id>', 'the tenant\'s id (its tokens\' tenant)'))
  .option('--kid <kid>', 'the name of its first secret in tokens\' headers (default k1)')
  .action(lazy(async () => (await import('./catalogue-command.js')).runTenantsCreateCommand));
withTenantFields(withAdmin(tenants.command('update').description('change a tenant created through the admin API, or rotate its secret')).argument('<id>', 'the tenant\'s id'))
  .option('--add-secret <kid>', 'add a second secret under this kid (generated and printed once, or --secret-stdin)')
  .option('--remove-secret <kid>', 'drop the secret of this kid (once tokens signed with it are gone)')
  .action(lazy(async () => (await import('./catalogue-command.js')).runTenantsUpdateCommand));
withAdmin(tenants.command('remove').description('remove a tenant created through the admin API; it must have no merchants here').argument('<id>', 'the tenant\'s id')).action(
  lazy(async () => (await import('./catalogue-command.js')).runTenantsRemoveCommand),
);

const merchants = program.command('merchants').description('the merchants a cell hosts, through its admin API (docs/operations.md)');

/** A command about the merchants of one tenant. */
function merchantsCommand(name: string, description: string): Command {
  return withAdmin(merchants.command(name).description(description)).requiredOption('--tenant <id>', 'the tenant of the merchants');
}

merchantsCommand('list', 'list the tenant\'s merchants hosted by the cell').action(lazy(async () => (await import('./catalogue-command.js')).runMerchantsListCommand));
merchantsCommand('create', 'create a merchant; the cell hosts (in a cluster: claims) it at once')
  .argument('<id>', 'the merchant\'s id')
  .option('--name <name>', 'display name (1-200 characters)')
  .action(lazy(async () => (await import('./catalogue-command.js')).runMerchantsCreateCommand));
merchantsCommand('update', 'rename a merchant created through the admin API')
  .argument('<id>', 'the merchant\'s id')
  .option('--name <name>', 'display name (1-200 characters)')
  .action(lazy(async () => (await import('./catalogue-command.js')).runMerchantsUpdateCommand));
merchantsCommand('remove', 'remove a merchant created through the admin API: its agents are disconnected and its desk deleted')
  .argument('<id>', 'the merchant\'s id')
  .action(lazy(async () => (await import('./catalogue-command.js')).runMerchantsRemoveCommand));

const agents = program.command('agents').description('the agents of a merchant, through its home cell\'s admin API (docs/operations.md)');

agentsCommand('list', 'list the merchant\'s agents').action(lazy(async () => (await import('./people-command.js')).runAgentsListCommand));
withAgentFields(agentsCommand('add', 'add an agent').argument('<id>', 'the agent\'s id (its tokens\' user)')).action(
  lazy(async () => (await import('./people-command.js')).runAgentsAddCommand),
);
withAgentFields(agentsCommand('update', 'change an agent\'s name, capacity, groups or supervisor flag').argument('<id>', 'the agent\'s id')).action(
  lazy(async () => (await import('./people-command.js')).runAgentsUpdateCommand),
);
agentsCommand('remove', 'remove an agent').argument('<id>', 'the agent\'s id').action(lazy(async () => (await import('./people-command.js')).runAgentsRemoveCommand));
agentsCommand('password', 'set an agent\'s login password, read from standard input (never from the command line)')
  .argument('<id>', 'the agent\'s id')
  .option('--password-stdin', 'read the password from standard input even on a terminal (one line; the trailing newline is dropped)')
  .action(lazy(async () => (await import('./people-command.js')).runAgentsPasswordCommand));

withAdmin(program.command('audit').description('list the audit log of a cell\'s admin actions, newest first'))
  .option('--tenant <id>', 'only entries of this tenant')
  .option('--action <action>', 'only entries of this action, e.g. agent.create, merchant.move')
  .addOption(new Option('--limit <n>', 'entries to list (at most 1000)').default(100).argParser(parsePositiveInt))
  .option('--after <id>', 'continue after this entry (what the previous page printed after "more:")')
  .action(lazy(async () => (await import('./people-command.js')).runAuditCommand));

withAdmin(program.command('closure').description('the in-cell closure of a cluster: the share of messages and conversations that never crossed a cell boundary, per cell and summed (docs/routing.md)'))
  .action(lazy(async () => (await import('./closure-command.js')).runClosureCommand));

const customers = program.command('customers').description('export or erase everything of one customer, through a cell\'s admin API (docs/operations.md)');

/** A command about one customer of a tenant. */
function customersCommand(name: string, description: string, { json = true } = {}): Command {
  return withAdmin(customers.command(name).description(description), { json })
    .requiredOption('--tenant <id>', 'tenant of the customer')
    .argument('<customer>', 'the customer\'s id (its tokens\' user)');
}

customersCommand('export', 'write everything the cell holds of the customer as one JSON document (all pages of the export)', { json: false })
  .option('--out <file>', 'write the document to this file (created readable by its owner only) instead of standard output')
  .action(lazy(async () => (await import('./customers-command.js')).runCustomersExportCommand));
customersCommand('erase', 'erase the customer in this cell and, through the outbox, in every other cell (cannot be undone)')
  .option('--yes', 'erase without asking; needed when there is no terminal to confirm on')
  .action(lazy(async () => (await import('./customers-command.js')).runCustomersEraseCommand));

const blocks = program.command('blocks').description('a merchant\'s blocks of customers, through its home cell\'s admin API (docs/operations.md)');

/** A command about one merchant's blocks. */
function blocksCommand(name: string, description: string): Command {
  return withAdmin(blocks.command(name).description(description))
    .requiredOption('--tenant <id>', 'tenant of the merchant')
    .requiredOption('--merchant <id>', 'the merchant');
}

blocksCommand('list', 'list the customers the merchant has blocked, in order of their ids')
  .addOption(new Option('--limit <n>', 'blocks to list (at most 1000)').argParser(parsePositiveInt))
  .option('--after <customer>', 'continue after this customer (what the previous page printed after "more:")')
  .action(lazy(async () => (await import('./blocks-command.js')).runBlocksListCommand));
blocksCommand('add', 'block a customer: closes its open consultation, refuses its messages to the merchant')
  .argument('<customer>', 'the customer\'s id')
  .option('--reason <text>', 'why (up to 1000 characters; kept with the block, in the audit log)')
  .action(lazy(async () => (await import('./blocks-command.js')).runBlocksAddCommand));
blocksCommand('remove', 'lift a block').argument('<customer>', 'the customer\'s id').action(lazy(async () => (await import('./blocks-command.js')).runBlocksRemoveCommand));

const operator = program.command('operator').description('operator keys: placements that move a merchant\'s home without its old home (docs/mesh.md)');

operator
  .command('keygen')
  .description('make an operator key pair: writes the private key, prints the public key for mesh.operatorKeys')
  .requiredOption('--out <file>', 'where to write the private key (PKCS#8 PEM; never overwritten)')
  .action(lazy(async () => (await import('./operator-command.js')).runOperatorKeygenCommand));

operator
  .command('place')
  .description('sign a placement of a merchant on a cell (re-homes it with no data: its history stays on the old home), and hand it to that cell (with --cluster) or print it')
  .requiredOption('--key <file>', 'the operator private key (from operator keygen)')
  .requiredOption('--tenant <id>', 'tenant of the merchant')
  .requiredOption('--merchant <id>', 'the merchant to place')
  .requiredOption('--cell <id>', 'id of the cell that becomes its home')
  .addOption(new Option('--epoch <n>', 'the claim epoch; default: one above the highest claimed, looked up through --cluster').argParser(parsePositiveInt))
  .option('--cluster <url>', 'any cell of the cluster, http://host:port')
  .addOption(new Option('--admin-token <token>', 'the admin token of the cells').env('CELLMESH_ADMIN_TOKEN'))
  .option('--force', 'place it even though its home still serves it (its data stays there: use move-merchant instead)')
  .action(lazy(async () => (await import('./operator-command.js')).runOperatorPlaceCommand));

addSimCommand(program);

const demo = program
  .command('demo')
  .description('run a demo cluster of three cells with demo merchants, agents and customers, and show how to chat')
  .addOption(new Option('--data-dir <dir>', 'where the demo cells keep their configs, data and logs').default('./data/demo'))
  .addOption(
    new Option('--port-base <port>', `cell N listens on base+N, its libp2p node on base+100+N`)
      .env('CELLMESH_DEMO_PORT_BASE')
      .default(DEFAULT_DEMO_PORT_BASE)
      .argParser(parsePortBase),
  )
  .action(lazy(async () => (await import('./demo-command.js')).runDemoCommand));

demo
  .command('add-cell')
  .description('start a fourth cell that joins the running demo cluster (Ctrl-C makes it leave)')
  .addOption(new Option('--data-dir <dir>', 'the running demo\'s directory (default: demo\'s)'))
  .action(async (_options, command: Command) => (await import('./demo-command.js')).runDemoAddCellCommand(demoOptionsOf(command)));

demo
  .command('stop-cell')
  .description('stop one cell of the running demo cluster gracefully')
  .argument('<cell>', 'the cell id, e.g. shops-b')
  .addOption(new Option('--data-dir <dir>', 'the running demo\'s directory (default: demo\'s)'))
  .action(async (cellId: string, _options, command: Command) => (await import('./demo-command.js')).runDemoStopCellCommand(cellId, demoOptionsOf(command)));

program
  .command('chat')
  .description('chat from the terminal, as a customer or an agent: prints the conversation and the desk\'s changes, sends each line you type')
  .option('--url <url>', 'the cell to connect to, e.g. ws://127.0.0.1:7400')
  .option('--cluster <url>', 'any cell of a cluster (http://...); the merchant\'s home cell is looked up there')
  .option('--token <jwt>', 'chat with this device token (see `cellmesh token`)')
  .option('--guest [name]', 'chat as a guest of the merchant; the guest is kept in ~/.cellmesh/guests.json (or $CELLMESH_HOME) and returns next time (a name keeps several apart)')
  .option('--login <agent>', 'log in as this agent of the merchant (password typed at a prompt, or with --password-stdin)')
  .option('--password-stdin', 'read the agent\'s password from the first line of standard input')
  .option('--tenant <id>', 'the tenant (for --guest and --login; a token names its own)')
  .option('--merchant <id>', 'the merchant (for --guest and --login, unless --conv names it)')
  .option('--device <id>', 'this device\'s id (--login: default "terminal"; --guest: the cell picks one)')
  .option('--conv <id>', 'conversation to write to, <merchant>:<customer> (a guest\'s is its own; an agent\'s follows its assignments)')
  .addHelpText(
    'after',
    `
In the chat: /history [n], /inbox, /read, /close, /quit; customers /rate <1-5> [comment];
agents /status online|busy|away, /desk, /conv <id>, /transfer <agent> [note], /transfer @<group> [note].

Examples:
  cellmesh chat --cluster http://127.0.0.1:7401 --tenant mall --merchant acme-shoes --guest
  cellmesh chat --cluster http://127.0.0.1:7401 --tenant mall --merchant acme-shoes --login ann
  cellmesh chat --url ws://127.0.0.1:7400 --token <jwt> --conv acme-shoes:alice`,
  )
  .action(lazy(async () => (await import('./chat-command.js')).runChatCommand));

/**
 * An action that loads its command's module only when that command runs, so that a command
 * loads only its own packages (`cell` libp2p, uWS and LevelDB; `token` none of them).
 */
function lazy<Args extends unknown[]>(load: () => Promise<(...args: Args) => Promise<void>>): (...args: Args) => Promise<void> {
  return async (...args) => (await load())(...args);
}

/** `--data-dir` given after the subcommand, or else to `demo` (or demo's default). */
function demoOptionsOf(command: Command): { dataDir: string } {
  const own = command.opts<{ dataDir?: string }>().dataDir;
  return { dataDir: own ?? demo.opts<{ dataDir: string }>().dataDir };
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`'${value}' is not a port number`);
  return port;
}

function parsePortBase(value: string): number {
  const base = parsePort(value);
  if (base === 0 || base + DEMO_PORT_SPAN > 65535) throw new InvalidArgumentError(`the demo needs ports ${value}+1 to ${value}+${DEMO_PORT_SPAN}`);
  return base;
}

function parsePositiveInt(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return parsed;
}

// The command whose action runs, to name it in its error line (`cellmesh demo stop-cell: ...`).
let running = program;
program.hook('preAction', (_program, actionCommand) => {
  running = actionCommand;
});

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // commander has printed its own message for a parse error; anything else gets one line here.
  if (error instanceof CommanderError) process.exit(exitCodeOfCommander(error));
  // Loaded on failure only: it knows the typed errors of the client and the cell's config.
  const { describeFailure } = await import('./describe-failure.js');
  const { message, exitCode } = describeFailure(error);
  process.stderr.write(`${commandPathOf(running)}: ${message}\n`);
  process.exit(exitCode);
}

function commandPathOf(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current !== null; current = current.parent) names.unshift(current.name());
  return names.join(' ');
}
