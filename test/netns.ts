import { spawn } from 'node:child_process';

/**
 * Linux network namespaces for tests with real processes: one namespace per node (like a pod),
 * each with its own address on a private bridge, and nftables rules that cut and heal the links
 * between them. Everything this module creates is named after the test process (`cmt<pid>`), so
 * that parallel runs never touch each other's topology and stale leftovers of dead runs can be
 * recognised and removed.
 */

/** Every name this module creates starts with this, then the pid of the process that made it. */
const PREFIX = 'cmt';
/** Namespaces `cmt<pid>-<node>`, bridges `cmt<pid>br`, host ends of veth pairs `cmt<pid>v<index>`. */
const OWN_NAME = /^cmt(\d+)(?:-|br$|v\d+$)/;
/** The private /16 the topologies take a /24 of; unlikely to collide with anything real. */
const NETWORK = '10.231';
/** The nftables table that holds a namespace's cuts; deleting it heals every link of that namespace. */
const CUT_TABLE = 'cmt_partition';
/** No command this module runs should take long; a hung `ip` must not hang the test. */
const COMMAND_TIMEOUT_MS = 10_000;

export interface NetnsNode {
  /** The name the test gave the node (`a`, `b`...). */
  readonly name: string;
  readonly namespace: string;
  readonly address: string;
  /** The command prefix that runs a program inside the node's namespace. */
  readonly exec: readonly string[];
}

export interface Topology {
  /** The bridge's address in the root namespace: where the test's own traffic comes from. */
  readonly hostAddress: string;
  readonly bridge: string;
  readonly nodes: readonly NetnsNode[];
  node(name: string): NetnsNode;
  /**
   * Drops every packet between the two groups, both ways. Adds to cuts already in force (the
   * rules of each namespace are replaced atomically).
   */
  cut(sideA: readonly string[], sideB: readonly string[]): Promise<void>;
  /** Drops the packets `from` sends to `to` (`to` drops them on input); the other direction still flows. */
  cutOneWay(from: readonly string[], to: readonly string[]): Promise<void>;
  /** Removes every cut. */
  heal(): Promise<void>;
  /** Kills whatever still runs in the namespaces, and removes namespaces, veths and the bridge. */
  destroy(): Promise<void>;
}

interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; resolves with its outcome (spawn failures become code null). */
function run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    const child = spawn(command, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: COMMAND_TIMEOUT_MS });
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (error) => resolve({ code: null, stdout, stderr: stderr + String(error) }));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** Runs a command that must succeed. */
async function must(command: string, args: readonly string[], input?: string): Promise<string> {
  const result = await run(command, args, input);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${String(result.code)}): ${result.stderr.trim()}`);
  return result.stdout;
}

/**
 * Why namespaces cannot be used here (not root, `ip` or `nft` missing, the kernel refuses), or
 * undefined when they can: the check makes a namespace, adds an nftables table in it, and
 * removes it again.
 */
export async function netnsUnavailableReason(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const ip = await run('ip', ['-V']);
  if (ip.code !== 0) return '`ip` (iproute2) is not installed';
  const nft = await run('nft', ['--version']);
  if (nft.code !== 0) return '`nft` (nftables) is not installed';
  const probe = `${PREFIX}${process.pid}-probe`;
  const added = await run('ip', ['netns', 'add', probe]);
  if (added.code !== 0) return `cannot create a network namespace: ${added.stderr.trim()}`;
  try {
    const table = await run('ip', ['netns', 'exec', probe, 'nft', 'add', 'table', 'inet', CUT_TABLE]);
    if (table.code !== 0) return `nftables does not work in a network namespace: ${table.stderr.trim()}`;
    const veth = await run('ip', ['link', 'add', `${PREFIX}${process.pid}v99`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', probe]);
    if (veth.code !== 0) return `cannot create a veth pair: ${veth.stderr.trim()}`;
    return undefined;
  } finally {
    await run('ip', ['link', 'del', `${PREFIX}${process.pid}v99`]);
    await run('ip', ['netns', 'del', probe]);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills the processes in a namespace (SIGKILL) and deletes it. */
async function removeNamespace(namespace: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', namespace]);
  for (const pid of pids.stdout.split(/\s+/).filter((word) => /^\d+$/.test(word))) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await run('ip', ['netns', 'del', namespace]);
}

/**
 * Removes what earlier runs of this module left behind when their process died without cleaning
 * up: namespaces (and the processes in them), bridges and veths named `cmt<pid>...` whose pid no
 * longer runs. Nothing of a live process, and nothing named otherwise, is touched.
 */
export async function removeStaleTopologies(): Promise<string[]> {
  const removed: string[] = [];
  const stale = (name: string): boolean => {
    const match = OWN_NAME.exec(name);
    return match !== null && Number(match[1]) !== process.pid && !isAlive(Number(match[1]));
  };
  const namespaces = (await run('ip', ['netns', 'list'])).stdout.split('\n').map((line) => line.split(' ')[0] ?? '');
  for (const namespace of namespaces.filter(stale)) {
    await removeNamespace(namespace);
    removed.push(namespace);
  }
  const links = (await run('ip', ['-o', 'link', 'show'])).stdout
    .split('\n')
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1] ?? '')
    .filter(stale);
  for (const link of links) {
    await run('ip', ['link', 'del', link]);
    removed.push(link);
  }
  return removed;
}

/** The third octet of a /24 of 10.231/16 that no interface or route of the root namespace uses. */
async function freeSubnet(): Promise<number> {
  const used = (await must('ip', ['-4', 'addr', 'show'])) + (await must('ip', ['-4', 'route', 'show', 'table', 'all']));
  for (let step = 0; step < 250; step++) {
    const octet = 1 + ((process.pid + step) % 250);
    if (!used.includes(`${NETWORK}.${octet}.`)) return octet;
  }
  throw new Error(`no free /24 left in ${NETWORK}.0.0/16`);
}

/**
 * Creates a bridge in the root namespace (address .1) and, per name, a namespace joined to it by
 * a veth pair, with `lo` up and its own address (.11, .12, ...). On failure, whatever was made is
 * removed again.
 */
export async function createTopology(names: readonly string[]): Promise<Topology> {
  if (names.length === 0 || names.length > 50) throw new Error('a topology has 1 to 50 nodes');
  const base = `${PREFIX}${process.pid}`;
  const octet = await freeSubnet();
  const hostAddress = `${NETWORK}.${octet}.1`;
  const bridge = `${base}br`;
  const nodes: NetnsNode[] = names.map((name, index) => {
    if (!/^[a-z0-9]{1,5}$/.test(name)) throw new Error(`node name ${name} must be 1-5 lowercase letters or digits`);
    const namespace = `${base}-${name}`;
    return { name, namespace, address: `${NETWORK}.${octet}.${11 + index}`, exec: ['ip', 'netns', 'exec', namespace] };
  });
  const created: { bridge: boolean; namespaces: string[]; veths: string[] } = { bridge: false, namespaces: [], veths: [] };
  /** Per namespace: addresses whose packets it drops on input, and on output. */
  const cuts = new Map<string, { input: Set<string>; output: Set<string> }>();

  const destroy = async (): Promise<void> => {
    // A namespace outlives `ip netns del` while anything still refers to it (a dying process, a
    // socket in TIME_WAIT), and its veth with it: delete the pairs explicitly, then the rest.
    for (const veth of created.veths.splice(0)) await run('ip', ['link', 'del', veth]);
    for (const namespace of created.namespaces.splice(0)) await removeNamespace(namespace);
    if (created.bridge) await run('ip', ['link', 'del', bridge]);
    created.bridge = false;
  };

  try {
    await must('ip', ['link', 'add', bridge, 'type', 'bridge']);
    created.bridge = true;
    await must('ip', ['addr', 'add', `${hostAddress}/24`, 'dev', bridge]);
    await must('ip', ['link', 'set', bridge, 'up']);
    for (const [index, node] of nodes.entries()) {
      await must('ip', ['netns', 'add', node.namespace]);
      created.namespaces.push(node.namespace);
      const hostEnd = `${base}v${index}`;
      await must('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.namespace]);
      created.veths.push(hostEnd);
      await must('ip', ['link', 'set', hostEnd, 'master', bridge, 'up']);
      await must('ip', ['-n', node.namespace, 'link', 'set', 'lo', 'up']);
      await must('ip', ['-n', node.namespace, 'addr', 'add', `${node.address}/24`, 'dev', 'eth0']);
      await must('ip', ['-n', node.namespace, 'link', 'set', 'eth0', 'up']);
    }
  } catch (error) {
    await destroy();
    throw error;
  }

  const byName = new Map(nodes.map((node) => [node.name, node]));
  const node = (name: string): NetnsNode => {
    const found = byName.get(name);
    if (found === undefined) throw new Error(`no node ${name} in this topology`);
    return found;
  };
  const cutsOf = (namespace: string): { input: Set<string>; output: Set<string> } => {
    let entry = cuts.get(namespace);
    if (entry === undefined) {
      entry = { input: new Set(), output: new Set() };
      cuts.set(namespace, entry);
    }
    return entry;
  };
  /** Replaces a namespace's table with its current cuts in one nft transaction. */
  const apply = async (namespace: string): Promise<void> => {
    const { input, output } = cutsOf(namespace);
    const rule = (direction: 'saddr' | 'daddr', addresses: Set<string>): string => (addresses.size === 0 ? '' : `    ip ${direction} { ${[...addresses].join(', ')} } drop\n`);
    const script =
      `table inet ${CUT_TABLE}\ndelete table inet ${CUT_TABLE}\n` +
      `table inet ${CUT_TABLE} {\n` +
      `  chain input {\n    type filter hook input priority 0; policy accept;\n${rule('saddr', input)}  }\n` +
      `  chain output {\n    type filter hook output priority 0; policy accept;\n${rule('daddr', output)}  }\n` +
      `}\n`;
    await must('ip', ['netns', 'exec', namespace, 'nft', '-f', '-'], script);
  };

  return {
    hostAddress,
    bridge,
    nodes,
    node,
    async cut(sideA, sideB) {
      const addressesA = sideA.map((name) => node(name).address);
      const addressesB = sideB.map((name) => node(name).address);
      for (const [own, other] of [
        [sideA, addressesB],
        [sideB, addressesA],
      ] as const) {
        for (const name of own) {
          const entry = cutsOf(node(name).namespace);
          for (const address of other) {
            entry.input.add(address);
            entry.output.add(address);
          }
        }
      }
      await Promise.all([...sideA, ...sideB].map((name) => apply(node(name).namespace)));
    },
    async cutOneWay(from, to) {
      const addresses = from.map((name) => node(name).address);
      for (const name of to) for (const address of addresses) cutsOf(node(name).namespace).input.add(address);
      await Promise.all(to.map((name) => apply(node(name).namespace)));
    },
    async heal() {
      const namespaces = [...cuts.keys()];
      cuts.clear();
      // Declaring the table first makes the delete succeed whether or not it exists.
      const script = `table inet ${CUT_TABLE}\ndelete table inet ${CUT_TABLE}\n`;
      await Promise.all(namespaces.map((namespace) => must('ip', ['netns', 'exec', namespace, 'nft', '-f', '-'], script)));
    },
    destroy,
  };
}
