/**
 * Every period, timeout and bound of the membership core, in one place, with the reason for
 * each default. Modelled on memberlist's config presets (`DefaultLANConfig`, `DefaultWANConfig`,
 * `DefaultLocalConfig`): start from a preset, override single fields.
 *
 * How the failure-detection figures add up (LAN preset, a healthy observer, LHM = 0):
 * - A cell whose connection drops (crash, kill -9: the OS resets its TCP connections) is pinged at
 *   once; the ping and the k indirect pings fail within milliseconds, so it is suspected almost
 *   immediately. With n >= 5 cells, the other observers' own suspicions arrive as confirmations
 *   and the suspicion timeout shrinks from `suspicionMaxMs` to `suspicionMinMs`: declared dead
 *   about 2 s after the crash (3 cells: one confirmation, about 4 s).
 * - A cell that goes silent without a disconnect (a frozen host, a cut cable) is probed after
 *   `suspectAfterMs` plus at most one `probeIntervalMs`, suspected after the direct and indirect
 *   pings time out (about 2 x `probeTimeoutMs`), and declared dead `suspicionMinMs` later once
 *   confirmed by others: about 5 s.
 * - A live cell whose event loop stalls for 1 s is never declared dead: `suspectAfterMs` is longer
 *   than a heartbeat interval plus the stall, and even when suspected it refutes (a higher
 *   incarnation) as soon as it runs again, long before `suspicionMinMs` expires.
 * Every timeout of a cell is multiplied by (its local health multiplier + 1) (Lifeguard): a cell
 * that is itself slow waits longer before it accuses others.
 * These figures hold up to 51 cells. In a larger cluster the heartbeat interval and
 * `suspectAfterMs` stretch by f = (n - 1) / (heartbeatReceiveBudgetPerSecond x interval) so each
 * cell receives a bounded number of heartbeats: a crash that drops connections is still declared
 * dead in about 2 s (the cells connected to it probe at once and confirm each other), a silent
 * cell takes f x `suspectAfterMs` longer to be probed (LAN, 200 cells: f = 4, about 10 s in all;
 * 1,000 cells: f = 20, about 35 s).
 */
export interface MembershipOptions {
  /** How often a cell publishes its heartbeat ({cellId, incarnation, version}), up to `heartbeatReceiveBudgetPerSecond`'s cluster size. */
  readonly heartbeatIntervalMs: number;
  /**
   * Heartbeats a cell should have to receive per second, from all other cells together. Every
   * cell publishes to every other, so at `heartbeatIntervalMs` a cell of an n-cell cluster
   * receives (n - 1) / interval of them: 2,000 a second at 1,000 cells on the LAN preset. Past
   * budget x interval + 1 cells (51 with every preset) the interval stretches to
   * (n - 1) / budget, the heartbeat announces it, and `suspectAfterMs` stretches by the same
   * factor, so each cell's membership load stays bounded as in SWIM, at the price of slower
   * detection of a silent cell in a large cluster (a crash that resets connections is still
   * seen at once by the cells connected to it). 0 turns it off: fixed interval at any size.
   */
  readonly heartbeatReceiveBudgetPerSecond: number;
  /**
   * How often a cell looks at its load (devices, messages per second) and republishes its
   * record when the load changed by `loadChangeThreshold` or more (mesh/load-publisher.ts).
   */
  readonly loadPublishIntervalMs: number;
  /**
   * Load updates a cell should have to receive per second, from all other cells together: past
   * budget x interval + 1 cells the load interval stretches to (n - 1) / budget, as the
   * heartbeat's does. 0 turns it off.
   */
  readonly loadUpdateReceiveBudgetPerSecond: number;
  /** Smallest change of a load figure, relative to the published one, that is republished (0: any change). */
  readonly loadChangeThreshold: number;
  /** How often the probe loop looks for silent cells (scaled by LHM + 1). */
  readonly probeIntervalMs: number;
  /** How long a direct ping waits for its answer (scaled by LHM + 1). */
  readonly probeTimeoutMs: number;
  /**
   * A cell not heard from for this long is probed (scaled by LHM + 1). Three heartbeats; stretched
   * with the heartbeat interval in a cluster larger than the heartbeat budget allows.
   */
  readonly suspectAfterMs: number;
  /** How many other cells are asked to ping a cell that did not answer a direct ping (SWIM's k). */
  readonly indirectProbes: number;
  /** Shortest suspicion before a suspect is declared dead, reached with enough confirmations. */
  readonly suspicionMinMs: number;
  /** Longest suspicion, when no other cell confirms. */
  readonly suspicionMaxMs: number;
  /** Independent confirmations after which the suspicion timeout reaches its minimum (Lifeguard's K). */
  readonly suspicionConfirmations: number;
  /** Ceiling of the local health multiplier (Lifeguard's LHM); timeouts scale by LHM + 1. */
  readonly maxLocalHealth: number;
  /** Probes (direct + indirect) in flight at once; the others wait for the next round. */
  readonly maxConcurrentProbes: number;
  /**
   * A dead claim is re-announced to a cell still heard from (so it learns it must refute) at
   * most this often per cell.
   */
  readonly claimReannounceIntervalMs: number;

  /** Mean period of the anti-entropy loop; each round is jittered to 50-150 % of it. */
  readonly antiEntropyIntervalMs: number;
  /**
   * Above this many serving cells the anti-entropy period grows by one `antiEntropyIntervalMs`
   * per doubling (memberlist's push-pull scaling): each exchange carries a digest of every
   * cell, so without it a cell's anti-entropy work grows with the cluster. 0 turns it off.
   */
  readonly antiEntropyScaleAboveCells: number;
  /** Timeout of one anti-entropy request. */
  readonly antiEntropyTimeoutMs: number;
  /** Anti-entropy exchanges in flight at once (periodic, join and heartbeat-triggered together). */
  readonly maxConcurrentExchanges: number;
  /** Digest-and-delta rounds in one exchange when answers are chunked (`more: true`). */
  readonly antiEntropyMaxRounds: number;
  /** Records in one anti-entropy answer or push. */
  readonly antiEntropyMaxRecordsPerMessage: number;
  /** Bytes of records in one anti-entropy answer or push (the first record always goes). */
  readonly antiEntropyMaxBytesPerMessage: number;
  /** Largest message or request accepted on receipt; larger ones are rejected before parsing. */
  readonly maxMessageBytes: number;

  /** How often the connection keeper dials known cells it is not connected to. */
  readonly connectionMaintenanceIntervalMs: number;
  /** Connections the keeper aims for; beyond it cells are not dialled (peers may still dial in). */
  readonly maxConnections: number;
  /** Dials in flight at once. */
  readonly maxConcurrentDials: number;
  /** One dial attempt is aborted after this long. */
  readonly dialTimeoutMs: number;
  /** First wait before redialling a cell that failed to dial; doubles up to the max. */
  readonly redialBackoffBaseMs: number;
  readonly redialBackoffMaxMs: number;
  /**
   * How often the keeper dials a cell it holds dead (not left), as memberlist gossips to the
   * dead: after a partition that closed the connections, both sides hold the other dead, and
   * without this nobody would dial across again. A cell that answers refutes and comes back.
   */
  readonly deadRedialIntervalMs: number;
  /** First wait between rounds over the bootstrap list; doubles up to the max, jittered. */
  readonly bootstrapRetryBaseMs: number;
  readonly bootstrapRetryMaxMs: number;
  /** Rounds over the bootstrap list before `waitJoined()` rejects (the keeper goes on trying). */
  readonly bootstrapMaxAttempts: number;
  /** How long `leave()` waits for peers to acknowledge the pushed 'left' record. */
  readonly leavePushTimeoutMs: number;

  /** Records known (own, live and tombstones); records of further cells are refused. */
  readonly maxCells: number;
  /** How long a dead or left record is kept so anti-entropy cannot resurrect it. */
  readonly tombstoneRetentionMs: number;
  /** Tombstones kept at most; the oldest go first. */
  readonly maxTombstones: number;
}

/**
 * The LAN preset, and the default: cells in one data centre or on one machine, round trips
 * well under 10 ms. Heartbeats every 500 ms cost n - 1 small messages per cell per period, up
 * to the budget of 100 received per second per cell (51 cells); larger clusters stretch it.
 */
export const LAN_MEMBERSHIP_OPTIONS: MembershipOptions = Object.freeze({
  heartbeatIntervalMs: 500,
  // 100 a second up to 51 cells; beyond, the interval grows: 2 s at 200 cells, 10 s at 1,000.
  heartbeatReceiveBudgetPerSecond: 100,
  // Every 5 s up to 101 cells; beyond, at most 20 load updates a second reach a cell (50 s at 1,000).
  loadPublishIntervalMs: 5_000,
  loadUpdateReceiveBudgetPerSecond: 20,
  loadChangeThreshold: 0.1,
  probeIntervalMs: 500,
  probeTimeoutMs: 500,
  suspectAfterMs: 1_500,
  indirectProbes: 3,
  suspicionMinMs: 2_000,
  suspicionMaxMs: 6_000,
  suspicionConfirmations: 3,
  maxLocalHealth: 8,
  maxConcurrentProbes: 8,
  claimReannounceIntervalMs: 1_000,

  antiEntropyIntervalMs: 2_000,
  // memberlist's threshold: 4 s up to 64 cells, 8 s at 200, 12 s at 1,000.
  antiEntropyScaleAboveCells: 32,
  antiEntropyTimeoutMs: 2_000,
  maxConcurrentExchanges: 4,
  antiEntropyMaxRounds: 16,
  antiEntropyMaxRecordsPerMessage: 256,
  antiEntropyMaxBytesPerMessage: 512 * 1024,
  maxMessageBytes: 1024 * 1024,

  connectionMaintenanceIntervalMs: 1_000,
  maxConnections: 32,
  maxConcurrentDials: 4,
  dialTimeoutMs: 5_000,
  redialBackoffBaseMs: 1_000,
  redialBackoffMaxMs: 30_000,
  deadRedialIntervalMs: 5_000,
  bootstrapRetryBaseMs: 250,
  bootstrapRetryMaxMs: 5_000,
  bootstrapMaxAttempts: 20,
  leavePushTimeoutMs: 1_000,

  maxCells: 4_096,
  // An hour: far longer than any partition the cluster is expected to heal from. A record
  // forgotten earlier could come back from a stale peer as alive; it would then be suspected
  // and declared dead again, which is noise but not harm.
  tombstoneRetentionMs: 3_600_000,
  maxTombstones: 1_024,
});

/**
 * The WAN preset: cells in different regions, round trips up to a few hundred milliseconds and
 * occasional loss. Slower to detect (tens of seconds), far fewer false suspicions.
 */
export const WAN_MEMBERSHIP_OPTIONS: MembershipOptions = Object.freeze({
  ...LAN_MEMBERSHIP_OPTIONS,
  heartbeatIntervalMs: 1_000,
  heartbeatReceiveBudgetPerSecond: 50,
  probeIntervalMs: 1_000,
  probeTimeoutMs: 3_000,
  suspectAfterMs: 5_000,
  suspicionMinMs: 10_000,
  suspicionMaxMs: 30_000,
  antiEntropyIntervalMs: 10_000,
  antiEntropyTimeoutMs: 10_000,
  dialTimeoutMs: 10_000,
  deadRedialIntervalMs: 30_000,
  leavePushTimeoutMs: 3_000,
});

/**
 * The local preset: cells of one test or demo on loopback. The same detection rules with
 * shorter periods, for quick feedback; not for machines under load.
 */
export const LOCAL_MEMBERSHIP_OPTIONS: MembershipOptions = Object.freeze({
  ...LAN_MEMBERSHIP_OPTIONS,
  heartbeatIntervalMs: 200,
  heartbeatReceiveBudgetPerSecond: 250,
  probeIntervalMs: 200,
  probeTimeoutMs: 200,
  suspectAfterMs: 600,
  suspicionMinMs: 1_000,
  suspicionMaxMs: 3_000,
  antiEntropyIntervalMs: 1_000,
  antiEntropyTimeoutMs: 1_000,
  connectionMaintenanceIntervalMs: 500,
  deadRedialIntervalMs: 2_000,
});

export const MEMBERSHIP_PRESETS = Object.freeze({
  lan: LAN_MEMBERSHIP_OPTIONS,
  wan: WAN_MEMBERSHIP_OPTIONS,
  local: LOCAL_MEMBERSHIP_OPTIONS,
});

export type MembershipPreset = keyof typeof MEMBERSHIP_PRESETS;

/**
 * The period at which each of `servingCells` cells (itself included) should publish something
 * that every other cell receives, so that a cell receives at most `receiveBudgetPerSecond` of
 * them a second from all the others together: `baseMs`, or (n - 1) / budget seconds when that is
 * longer. A budget of 0 keeps `baseMs` at any size. Heartbeats and load updates both use it.
 */
export function budgetedIntervalMs(servingCells: number, baseMs: number, receiveBudgetPerSecond: number, maxCells: number): number {
  if (receiveBudgetPerSecond <= 0) return baseMs;
  const others = Math.min(Math.max(0, servingCells - 1), maxCells);
  return Math.max(baseMs, Math.ceil((others * 1_000) / receiveBudgetPerSecond));
}

/**
 * The LAN preset with `overrides` applied, checked: a nonsensical combination is a programmer
 * error and throws at construction rather than misbehaving at runtime.
 */
export function membershipOptions(overrides: Partial<MembershipOptions> = {}, preset: MembershipPreset = 'lan'): MembershipOptions {
  const options: MembershipOptions = { ...MEMBERSHIP_PRESETS[preset], ...overrides };
  for (const [name, value] of Object.entries(options)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new RangeError(`membership option ${name} must be a finite number >= 0, got ${String(value)}`);
    }
  }
  const positive: Array<keyof MembershipOptions> = [
    'heartbeatIntervalMs', 'probeIntervalMs', 'probeTimeoutMs', 'antiEntropyIntervalMs', 'antiEntropyTimeoutMs',
    'connectionMaintenanceIntervalMs', 'maxConcurrentProbes', 'maxConcurrentExchanges', 'antiEntropyMaxRounds',
    'antiEntropyMaxRecordsPerMessage', 'antiEntropyMaxBytesPerMessage', 'maxMessageBytes', 'maxConcurrentDials',
    'dialTimeoutMs', 'maxCells', 'suspicionConfirmations', 'loadPublishIntervalMs',
  ];
  for (const name of positive) {
    if (options[name] <= 0) throw new RangeError(`membership option ${name} must be > 0`);
  }
  if (options.suspicionMinMs > options.suspicionMaxMs) throw new RangeError('suspicionMinMs must not exceed suspicionMaxMs');
  if (options.maxTombstones > options.maxCells) throw new RangeError('maxTombstones must not exceed maxCells');
  return Object.freeze(options);
}
