import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { MEMBERSHIP_PRESETS } from '../mesh/membership-config.js';

/**
 * The scenario file of a simulation run (YAML or JSON): the cluster, the people on it, their
 * traffic, and a timeline of faults. Every field is validated with zod; an invalid file is
 * refused with one line per problem, each naming its path (`timeline.3.partition.groups`).
 * docs/simulation.md describes every field.
 */

/** A duration: a number of seconds, or a string with a unit: `250ms`, `30s`, `5m`, `1h`. */
const DURATION_PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;

export const Duration = z.union([z.number().nonnegative(), z.string().regex(DURATION_PATTERN, 'must be a duration such as 250ms, 30s, 5m or 1h (a bare number is seconds)')]).transform((value) => {
  if (typeof value === 'number') return Math.round(value * 1000);
  const match = DURATION_PATTERN.exec(value)!;
  const amount = Number(match[1]);
  const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
  return Math.round(amount * unitMs);
});

/** A latency distribution of one delivery (one way), in ms; draws are rounded to whole ms and at least 0. */
export const LatencySpec = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('fixed'), ms: z.number().nonnegative() }).strict(),
  z.object({ kind: z.literal('uniform'), min: z.number().nonnegative(), max: z.number().nonnegative() }).strict().refine((spec) => spec.max >= spec.min, { message: 'max must be at least min', path: ['max'] }),
  z.object({ kind: z.literal('normal'), mean: z.number().nonnegative(), stddev: z.number().nonnegative() }).strict(),
  z.object({ kind: z.literal('lognormal'), median: z.number().positive(), sigma: z.number().nonnegative() }).strict(),
  z.object({ kind: z.literal('pareto'), min: z.number().positive(), alpha: z.number().positive() }).strict(),
]);
export type LatencySpec = z.infer<typeof LatencySpec>;

/**
 * Which cells an event applies to, resolved when it happens: a cell id (`cell-0003`), an index
 * (`3`), an index range (`0-9`), a share of the running cells drawn from the seed (`25%`),
 * `random` (one running cell), or `rest` (every running cell the other groups of the event did
 * not name).
 */
const SELECTOR_PATTERN = /^(cell-\d+|\d+|\d+-\d+|\d+(?:\.\d+)?%|random|rest)$/;
export const CellSelector = z.string().regex(SELECTOR_PATTERN, 'must be a cell id (cell-0003), an index (3), a range (0-9), a share (25%), random or rest');
const Group = z.array(CellSelector).min(1, 'a group names at least one selector');

const FaultActions = {
  partition: z.object({ groups: z.array(Group).min(2, 'a partition needs at least two groups'), duration: Duration.optional() }).strict(),
  oneWay: z.object({ from: Group, to: Group, duration: Duration.optional() }).strict(),
  heal: z.object({}).strict(),
  loss: z.object({ rate: z.number().min(0).max(1), duration: Duration.optional() }).strict(),
  /** Mesh deliveries arriving twice (each copy with its own latency). */
  duplicate: z.object({ rate: z.number().min(0).max(1), duration: Duration.optional() }).strict(),
  /** Mesh deliveries held back by up to `maxDelay` beyond their latency, so later ones overtake them. */
  reorder: z.object({ rate: z.number().min(0).max(1), maxDelay: Duration, duration: Duration.optional() }).strict(),
  latency: z.object({ mesh: LatencySpec.optional(), devices: LatencySpec.optional(), duration: Duration.optional() }).strict(),
  crash: z.object({ cells: Group, restartAfter: Duration.optional() }).strict(),
  restart: z.object({ cells: Group }).strict(),
  join: z
    .object({ cells: z.number().int().min(1).max(1_000), merchantsPerCell: z.number().int().min(0).max(1_000).optional(), customers: z.number().int().min(0).max(1_000_000).optional() })
    .strict(),
  leave: z.object({ cells: Group }).strict(),
  deviceFlap: z.object({ fraction: z.number().min(0).max(1) }).strict(),
  /**
   * Moves `merchants` merchants, each hosted by a running cell of `from`, to a running cell of
   * `to` (another one): the production move (cell/merchant-move.ts) under whatever else happens.
   */
  move: z.object({ merchants: z.number().int().min(1).max(1_000).default(1), from: Group.default(['rest']), to: Group.default(['rest']) }).strict(),
  /**
   * The disks of `cells` fail for `duration` (to the final heal without one): each read and
   * write fails with its rate (StoreError, answered STORE_UNAVAILABLE), and each one is slowed
   * by `spike` with `spikeRate` (writes land in order, so a slow one holds back those behind).
   */
  disk: z
    .object({
      cells: Group,
      readErrorRate: z.number().min(0).max(1).default(0),
      writeErrorRate: z.number().min(0).max(1).default(0),
      spikeRate: z.number().min(0).max(1).default(0),
      spike: Duration.default(0),
      duration: Duration.optional(),
    })
    .strict(),
} as const;
export type FaultKind = keyof typeof FaultActions;
export const FAULT_KINDS = Object.keys(FaultActions) as FaultKind[];
export type FaultAction = { [Kind in FaultKind]: { kind: Kind } & z.infer<(typeof FaultActions)[Kind]> }[FaultKind];
export interface TimelineEvent {
  readonly atMs: number;
  readonly action: FaultAction;
}

/** One timeline entry: `{at: 30s, partition: {...}}`, exactly one action key besides `at`. */
const TimelineEntry = z.record(z.string(), z.unknown()).transform((entry, context): TimelineEvent => {
  const at = Duration.safeParse(entry['at']);
  if (!at.success) {
    for (const issue of at.error.issues) context.addIssue({ code: 'custom', path: ['at', ...issue.path], message: entry['at'] === undefined ? 'is required' : issue.message });
  }
  const keys = Object.keys(entry).filter((key) => key !== 'at');
  if (keys.length !== 1 || !Object.hasOwn(FaultActions, keys[0]!)) {
    context.addIssue({ code: 'custom', path: keys.length === 1 ? [keys[0]!] : [], message: `needs exactly one action besides \`at\`, one of ${FAULT_KINDS.join(', ')}; got ${keys.length === 0 ? 'none' : keys.join(', ')}` });
    return z.NEVER;
  }
  const kind = keys[0] as FaultKind;
  const parsed = FaultActions[kind].safeParse(entry[kind]);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) context.addIssue({ code: 'custom', path: [kind, ...issue.path], message: issue.message });
    return z.NEVER;
  }
  if (!at.success) return z.NEVER;
  return { atMs: at.data, action: { kind, ...parsed.data } as FaultAction };
});

const RANDOM_FAULT_KINDS = ['partition', 'oneWay', 'loss', 'duplicate', 'reorder', 'latency', 'crash', 'deviceFlap', 'move'] as const;

export const ScenarioSchema = z
  .object({
    name: z.string().min(1).max(100),
    description: z.string().max(2_000).optional(),
    /** Cells at the start; each hosts `merchantsPerCell` merchants. */
    cells: z.number().int().min(1).max(5_000),
    merchantsPerCell: z.number().int().min(1).max(1_000).default(4),
    /** Popularity of merchants among customers: weight of rank k is 1/(k+1)^zipf (0: uniform). */
    merchantPopularity: z.object({ zipf: z.number().min(0).max(5).default(1) }).strict().default({ zipf: 1 }),
    agentsPerMerchant: z.number().int().min(1).max(20).default(1),
    customers: z.number().int().min(0).max(1_000_000),
    /** Share of customers with a second device (on the same access cell). */
    secondDeviceShare: z.number().min(0).max(1).default(0.2),
    /** Share of customers who also talk to a merchant of another cell (a cross-cell conversation). */
    crossCellShare: z.number().min(0).max(1).default(0.3),
    traffic: z
      .object({
        /** Messages each customer sends per minute on average (a Poisson process). */
        customerMessagesPerMinute: z.number().min(0).max(600).default(1),
        /** Chance that the agent answers a customer's message, after `agentReplyDelay`. */
        agentReplyProbability: z.number().min(0).max(1).default(0.7),
        agentReplyDelay: z.object({ min: Duration, max: Duration }).strict().default({ min: 500, max: 5_000 }),
        /** Chance that a device marks a conversation read after a message from the other party arrives. */
        readProbability: z.number().min(0).max(1).default(0.3),
        readDelay: z.object({ min: Duration, max: Duration }).strict().default({ min: 200, max: 3_000 }),
      })
      .strict()
      .default({ customerMessagesPerMinute: 1, agentReplyProbability: 0.7, agentReplyDelay: { min: 500, max: 5_000 }, readProbability: 0.3, readDelay: { min: 200, max: 3_000 } }),
    /** Traffic and faults run this long, after the warmup. */
    duration: Duration,
    /** Cells start and devices connect during the warmup; no traffic, no faults. */
    warmup: Duration.default(15_000),
    /** After the final heal: at most this long for everything to arrive and the directory to converge. */
    settle: Duration.default(120_000),
    network: z
      .object({
        mesh: z
          .object({
            latency: LatencySpec,
            /**
             * A connection across a link blocked (either way) this long is closed at both ends, as
             * TCP and yamux keep-alives would close it; 0 keeps connections open through partitions.
             */
            connectionTimeout: Duration.default(10_000),
          })
          .strict()
          .default({ latency: { kind: 'uniform', min: 1, max: 5 }, connectionTimeout: 10_000 }),
        devices: z.object({ latency: LatencySpec }).strict().default({ latency: { kind: 'uniform', min: 5, max: 40 } }),
        /** Virtual time from a store write to its durability (the fsync). */
        storeWrite: Duration.default(2),
      })
      .strict()
      .default({ mesh: { latency: { kind: 'uniform', min: 1, max: 5 }, connectionTimeout: 10_000 }, devices: { latency: { kind: 'uniform', min: 5, max: 40 } }, storeWrite: 2 }),
    mesh: z
      .object({
        preset: z.enum(Object.keys(MEMBERSHIP_PRESETS) as [string, ...string[]]).default('lan'),
        /** Overrides of the preset, by option name (mesh/membership-config.ts). */
        timings: z.record(z.string(), z.number().positive()).default({}),
        /** `hmac` (default) or `ed25519` record signatures; see sim/sim-keys.ts. */
        signatures: z.enum(['hmac', 'ed25519']).default('hmac'),
      })
      .strict()
      .default({ preset: 'lan', timings: {}, signatures: 'hmac' }),
    timeline: z.array(TimelineEntry).default([]),
    randomFaults: z
      .object({
        enabled: z.boolean().default(true),
        /** Mean time between two faults (exponential). */
        meanInterval: Duration.default(60_000),
        kinds: z.array(z.enum(RANDOM_FAULT_KINDS)).min(1).default([...RANDOM_FAULT_KINDS]),
        /** Longest a drawn fault lasts (drawn uniformly from a tenth of it to all of it). */
        maxDuration: Duration.default(30_000),
        /** Largest share of the cells one drawn partition or crash cuts off. */
        maxShare: z.number().min(0).max(1).default(0.3),
        maxLossRate: z.number().min(0).max(1).default(0.2),
        /**
         * Disk faults, drawn from a stream of their own (so they leave the other faults of a
         * seed as they were): one cell's disk at a time fails reads and writes at up to
         * `maxErrorRate` and slows some by up to `maxSpike`, for up to `maxDuration`.
         */
        disk: z
          .object({
            enabled: z.boolean().default(true),
            meanInterval: Duration.default(30_000),
            maxErrorRate: z.number().min(0).max(1).default(0.2),
            maxSpike: Duration.default(1_000),
          })
          .strict()
          .default({ enabled: true, meanInterval: 30_000, maxErrorRate: 0.2, maxSpike: 1_000 }),
      })
      .strict()
      .optional(),
    invariants: z
      .object({
        /** After the final heal, every live cell must hold the same membership and merchant homes within this. */
        convergeWithin: Duration.default(30_000),
        /** An in-cell send during a partition counts as delivered when acked within this. */
        inCellAckWithin: Duration.default(5_000),
        /** Least share of in-cell sends during partitions that must be acked within `inCellAckWithin`. */
        inCellDeliveryRatioMin: z.number().min(0).max(1).default(0.99),
        /**
         * When set, a customer's send made while its merchant's home cell is down must be queued
         * (by a live cell, in leave-a-message mode) or acknowledged within this
         * (`outage-unserved`, sim/outage-checks.ts); unset, that part is not judged.
         */
        outageAcceptWithin: Duration.optional(),
      })
      .strict()
      .default({ convergeWithin: 30_000, inCellAckWithin: 5_000, inCellDeliveryRatioMin: 0.99 }),
    /**
     * The service desk (docs/desk.md): a share of the merchants have their agents registered,
     * with capacities and groups; their agents go online, busy, away and offline, close and
     * transfer consultations, and the desk's invariants are checked (docs/simulation.md, "The
     * desk's invariants"). Absent: every merchant keeps an open desk.
     */
    desk: z
      .object({
        /** Share of the merchants with a desk (drawn per merchant); the others keep an open desk. */
        share: z.number().min(0).max(1).default(0.5),
        /** Each desk agent's capacity, drawn uniformly. */
        capacity: z.object({ min: z.number().int().min(1).max(50), max: z.number().int().min(1).max(50) }).strict().default({ min: 1, max: 3 }),
        groups: z.array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'a group is lower-case letters, digits and dashes')).min(1).max(10).default(['sales', 'support']),
        /** Each agent is in 1 to this many of the groups. */
        groupsPerAgent: z.number().int().min(1).max(10).default(2),
        /** Share of customer messages that name a group (a customer's first message of a consultation decides). */
        namedGroupShare: z.number().min(0).max(1).default(0.4),
        /** The desk's settings (`desk` of the cell config), short so that the run exercises them. */
        grace: Duration.default(5_000),
        stickyWindow: Duration.default(60_000),
        inactivityClose: Duration.default(45_000),
        agents: z
          .object({
            /** An agent closes a consultation this long after it got it. */
            closeAfter: z.object({ min: Duration, max: Duration }).strict().default({ min: 5_000, max: 30_000 }),
            /** Chance that the agent transfers a consultation (to a group, or to another agent) instead of closing it. */
            transferProbability: z.number().min(0).max(1).default(0.15),
            /** Mean time between two changes of an agent's presence (exponential). */
            changeEvery: Duration.default(30_000),
            /** Of those changes: the share that disconnects every device (the others set busy or away); each lasts from a tenth of the grace period to three times it. */
            offlineShare: z.number().min(0).max(1).default(0.4),
          })
          .strict()
          .default({ closeAfter: { min: 5_000, max: 30_000 }, transferProbability: 0.15, changeEvery: 30_000, offlineShare: 0.4 }),
        invariants: z
          .object({
            /** A waiting customer must be assigned within this once an agent of its group is online with free capacity. */
            assignWithin: Duration.default(3_000),
            /** Tolerance on the grace period: the desk's timers and the devices' view of a disconnect differ by latencies. */
            graceSlack: Duration.default(3_000),
            /**
             * How far apart the system messages of one decision may become durable (each
             * conversation's append on its own; keep it above the disk faults' spikes).
             */
            orderTolerance: Duration.default(2_000),
          })
          .strict()
          .default({ assignWithin: 3_000, graceSlack: 3_000, orderTolerance: 2_000 }),
      })
      .strict()
      .optional(),
    /** How often the time series of the report is sampled; default: about 300 points over the run. */
    sampleInterval: Duration.optional(),
  })
  .strict()
  .superRefine((scenario, context) => {
    const known = Object.keys(MEMBERSHIP_PRESETS.lan);
    for (const name of Object.keys(scenario.mesh.timings)) {
      if (!known.includes(name)) context.addIssue({ code: 'custom', path: ['mesh', 'timings', name], message: `unknown option; known: ${known.join(', ')}` });
    }
    const endMs = scenario.duration;
    scenario.timeline.forEach((event, index) => {
      if (event.atMs > endMs) context.addIssue({ code: 'custom', path: ['timeline', index, 'at'], message: `is after the end of the traffic (duration ${endMs / 1000}s)` });
    });
    if (scenario.desk !== undefined) {
      if (scenario.desk.capacity.max < scenario.desk.capacity.min) context.addIssue({ code: 'custom', path: ['desk', 'capacity', 'max'], message: 'must be at least min' });
      if (scenario.desk.agents.closeAfter.max < scenario.desk.agents.closeAfter.min) context.addIssue({ code: 'custom', path: ['desk', 'agents', 'closeAfter', 'max'], message: 'must be at least min' });
    }
    for (const [name, range] of [['traffic.agentReplyDelay', scenario.traffic.agentReplyDelay], ['traffic.readDelay', scenario.traffic.readDelay]] as const) {
      if (range.max < range.min) context.addIssue({ code: 'custom', path: [...name.split('.'), 'max'], message: 'must be at least min' });
    }
  });

export type Scenario = z.output<typeof ScenarioSchema>;

/** An invalid scenario: the message has one line per problem, each with its path. */
export class ScenarioError extends Error {
  readonly code = 'SCENARIO_INVALID';

  constructor(
    message: string,
    readonly problems: readonly string[] = [],
  ) {
    super(message);
    this.name = 'ScenarioError';
  }
}

/** Validates a parsed scenario object; `source` names it in errors. */
export function parseScenario(raw: unknown, source = 'scenario'): Scenario {
  const result = ScenarioSchema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.map(String).join('.') || '(root)'}: ${issue.message}`);
    throw new ScenarioError(`invalid ${source}:\n${problems.map((line) => `  ${line}`).join('\n')}`, problems);
  }
  return result.data;
}

/** Parses scenario text, YAML or JSON (JSON is YAML). */
export function parseScenarioText(text: string, source = 'scenario'): Scenario {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ScenarioError(`${source} is not valid YAML or JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  return parseScenario(raw, source);
}

export function loadScenario(file: string): Scenario {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ScenarioError(`cannot read scenario ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return parseScenarioText(text, file);
}
