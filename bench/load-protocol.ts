/**
 * The messages between the benchmark's main thread and its load-generator worker threads, and
 * the few constants both sides share. Everything here is plain data (structured-clone safe).
 */

/** The servers the in-cell benchmark drives, each in its own child process. */
export type TargetKind = 'cell' | 'socketio' | 'uws-echo';

export const TARGET_LABELS: Record<TargetKind, string> = {
  cell: 'cellmesh cell',
  socketio: 'Socket.IO + LevelDB relay',
  'uws-echo': 'raw uWS echo',
};

export interface CustomerSpec {
  /** Index of the customer in the whole run (gives unique client message ids per customer). */
  index: number;
  token: string;
  /** `<merchant>:<customer>`. */
  conv: string;
  /** Where this device connects instead of the command's `baseUrl` (one process of a scaled cell). */
  baseUrl?: string | undefined;
  /** The cell's `merchant` URL parameter, which a process of a scaled cell relays the device by. */
  merchant?: string | undefined;
}

export interface AgentSpec {
  token: string;
  /** Where this device connects instead of the command's `baseUrl`. */
  baseUrl?: string | undefined;
}

export interface ConnectCommand {
  type: 'connect';
  target: TargetKind;
  /** `ws://127.0.0.1:P`, without a path. */
  baseUrl: string;
  customers: CustomerSpec[];
  agents: AgentSpec[];
  /** Sockets opening at once; bounds the server's accept backlog and the handshake burst. */
  concurrency: number;
  /** Per-socket bound from TCP connect to the server's welcome. */
  timeoutMs: number;
}

export interface OpenIdleCommand {
  type: 'open-idle';
  target: TargetKind;
  baseUrl: string;
  tokens: string[];
  concurrency: number;
  timeoutMs: number;
}

export interface RunCommand {
  type: 'run';
  /**
   * closed: every customer keeps `outstanding` sends in flight and sends the next one when an
   * ack arrives (finds peak throughput). paced: open loop at `ratePerSecond` for this worker,
   * sending on schedule whether or not acks came back (measures latency at a given load).
   */
  mode: 'closed' | 'paced';
  warmupMs: number;
  durationMs: number;
  /** Longest wait, after sending stops, for the acks still in flight. */
  drainMs: number;
  outstanding: number;
  /**
   * Only customers whose run-wide `index` is below this send in this phase (the window-1
   * phase's few conversations); null: every customer of the worker.
   */
  sendersBelowIndex: number | null;
  ratePerSecond: number;
  /** Paced mode skips (and counts) a send when its customer already has this many in flight. */
  maxPacedOutstanding: number;
  /** Hard bound on the sends of this phase in this worker, whatever the clock says. */
  maxSends: number;
  bodyBytes: number;
}

export interface CloseCommand {
  type: 'close';
}

export type WorkerCommand = ConnectCommand | OpenIdleCommand | RunCommand | CloseCommand;

export interface ConnectedReply {
  type: 'connected';
  opened: number;
  failed: number;
  firstError?: string;
  elapsedMs: number;
}

export interface IdleOpenedReply {
  type: 'idle-opened';
  opened: number;
  failed: number;
  firstError?: string;
  elapsedMs: number;
}

export interface ProgressReply {
  type: 'progress';
  /** Acks received so far in the current phase (warm-up included). */
  acked: number;
  stage: 'warmup' | 'measure' | 'drain';
}

export interface WindowReply {
  type: 'window-start' | 'window-end';
}

export interface RunResultReply {
  type: 'result';
  mode: 'closed' | 'paced';
  /** Sends issued during the measurement window. */
  sentInWindow: number;
  /** Acks (durable acks, or echoes) received during the measurement window. */
  ackedInWindow: number;
  windowMs: number;
  /** Latency histogram counts (see LatencyHistogram) of the acks in the window. */
  histogram: number[];
  totalSent: number;
  totalAcked: number;
  /** Sends still unacknowledged when the drain bound ran out. */
  unackedAfterDrain: number;
  /** Paced mode: sends skipped because the customer had too many in flight. */
  skipped: number;
  /** Error frames received, by code. */
  errors: Record<string, number>;
  /** Messages pushed to agents (and other devices) during the whole phase. */
  delivered: number;
  /** Conversations acknowledged by agents (one entry per conversation per ack flush). */
  deliveryAcksSent: number;
  /** Ack frames those went in (one per flush of an agent, up to 256 conversations each). */
  ackFramesSent: number;
  socketsClosedUnexpectedly: number;
  /** Event-loop utilisation of this worker during the window: near 1 means the generator is the bottleneck. */
  eventLoopUtilization: number;
  /** Paced mode: how late the generator's timer ticks fired, 99th percentile, ms. */
  tickLagP99Ms: number | null;
  /** Garbage-collection pauses of this worker during the window, ms. */
  gcPauseTotalMs: number;
  gcPauseMaxMs: number;
}

export interface ClosedReply {
  type: 'closed';
}

export interface FailedReply {
  type: 'failed';
  message: string;
}

export type WorkerReply =
  | ConnectedReply
  | IdleOpenedReply
  | ProgressReply
  | WindowReply
  | RunResultReply
  | ClosedReply
  | FailedReply;
