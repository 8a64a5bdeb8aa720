/**
 * The load generator: runs in a worker thread, holds the customers' and agents' WebSockets,
 * and runs one bounded phase at a time on command from the main thread (load-protocol.ts).
 *
 * Customers send; the latency of a send is measured here, from just before the frame is
 * written to the arrival of its durable ack (`sent`, the Socket.IO ack, or the echo). Agents
 * (and any device that gets a pushed message) acknowledge cumulatively, per conversation, every
 * ACK_FLUSH_MS or every ACK_FLUSH_COUNT messages, whichever comes first.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PerformanceObserver, performance, type EventLoopUtilization } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket from 'ws';
import { SeededRandom, randomId } from '../platform/random.js';
import { codecOf, type Codec, type FrameSink } from './codecs.js';
import { LatencyHistogram } from './histogram.js';
import type {
  ConnectCommand,
  OpenIdleCommand,
  RunCommand,
  RunResultReply,
  WorkerCommand,
  WorkerReply,
} from './load-protocol.js';

const ACK_FLUSH_MS = 20;
const ACK_FLUSH_COUNT = 64;
/** Conversations per ack frame: the cell's `limits.maxAcksPerFrame`. */
const ACKS_PER_FRAME = 256;
const PROGRESS_INTERVAL_MS = 250;
const BODY_POOL_SIZE = 256;
/** A paced tick never sends more than this share of a second's load at once. */
const PACED_BURST_SECONDS = 0.05;
/** How many customers a paced send tries before it counts as skipped. */
const PACED_PROBES = 8;
const DRAIN_POLL_MS = 10;
/** Longest wait, after the senders' acks, for the agents' pushes to stop arriving. */
const DELIVERY_SETTLE_BOUND_MS = 5_000;
/** Wait between a refused send and the next one of the same customer, unless the server says. */
const RETRY_AFTER_DEFAULT_MS = 5;

interface WorkerInit {
  workerIndex: number;
  seed: number;
}

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('load-worker.ts must run in a worker thread');
const random = new SeededRandom(init.seed + init.workerIndex * 7919);

// A full collection of the generator's own heap before each phase, so that garbage of the
// previous phase (or of connecting) does not pause the generator inside the next window.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function post(reply: WorkerReply): void {
  port!.postMessage(reply);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Acknowledges pushed messages in batches: highest seq per conversation. */
class DeliveryAcker {
  private readonly highest = new Map<string, number>();
  private pendingCount = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: WebSocket,
    private readonly codec: Codec,
  ) {}

  onDelivery(conv: string, seq: number): void {
    counters.delivered++;
    if (seq > (this.highest.get(conv) ?? -1)) this.highest.set(conv, seq);
    this.pendingCount++;
    if (this.pendingCount >= ACK_FLUSH_COUNT) this.flush();
    else if (this.timer === undefined) this.timer = setTimeout(() => this.flush(), ACK_FLUSH_MS);
  }

  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.pendingCount = 0;
    if (this.socket.readyState !== WebSocket.OPEN) {
      this.highest.clear();
      return;
    }
    // One frame for all conversations with news, as the SDK does with a cell that announces
    // `maxAcksPerFrame` (and the relay takes the same map in one event).
    let batch = new Map<string, number>();
    for (const [conv, seq] of this.highest) {
      batch.set(conv, seq);
      counters.deliveryAcksSent++;
      if (batch.size === ACKS_PER_FRAME) {
        this.socket.send(this.codec.encodeAcks(batch));
        counters.ackFramesSent++;
        batch = new Map();
      }
    }
    if (batch.size > 0) {
      this.socket.send(this.codec.encodeAcks(batch));
      counters.ackFramesSent++;
    }
    this.highest.clear();
  }
}

class Customer {
  inflight = 0;
  nextSendNumber = 1;
  readonly pending = new Map<number, number>();
  closed = false;
  readonly acker: DeliveryAcker;

  constructor(
    readonly index: number,
    readonly conv: string,
    readonly socket: WebSocket,
    readonly codec: Codec,
  ) {
    this.acker = new DeliveryAcker(socket, codec);
  }
}

/** Counters of the phase under way (reset at the start of each phase). */
const counters = {
  delivered: 0,
  deliveryAcksSent: 0,
  ackFramesSent: 0,
  socketsClosedUnexpectedly: 0,
};

interface PhaseState {
  command: RunCommand;
  stage: 'warmup' | 'measure' | 'drain';
  sending: boolean;
  histogram: LatencyHistogram;
  sentInWindow: number;
  ackedInWindow: number;
  totalSent: number;
  totalAcked: number;
  skipped: number;
  errors: Record<string, number>;
  bodies: string[];
}

let codec: Codec | undefined;
let customers: Customer[] = [];
const agentAckers: DeliveryAcker[] = [];
const allSockets: WebSocket[] = [];
let closing = false;
let phase: PhaseState | undefined;

/** Garbage-collection pauses of this worker during a measurement window (the generator's own hiccups). */
const gcPauses = { totalMs: 0, maxMs: 0, count: 0, recording: false };
const gcObserver = new PerformanceObserver((list) => {
  if (!gcPauses.recording) return;
  for (const entry of list.getEntries()) {
    gcPauses.totalMs += entry.duration;
    gcPauses.maxMs = Math.max(gcPauses.maxMs, entry.duration);
    gcPauses.count++;
  }
});
gcObserver.observe({ entryTypes: ['gc'] });

/**
 * Opens one socket and resolves once the server has accepted it (the cell's welcome, the
 * Socket.IO namespace connect, or the WebSocket open for the echo server).
 */
function openSocket(
  socketCodec: Codec,
  baseUrl: string,
  token: string,
  timeoutMs: number,
  merchant?: string | undefined,
): Promise<{ socket: WebSocket; setHandler: (handler: (text: string) => void) => void }> {
  const url = socketCodec.url(baseUrl, token) + (merchant === undefined ? '' : `&merchant=${encodeURIComponent(merchant)}`);
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, socketCodec.protocols, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: timeoutMs,
      maxPayload: 1 << 20,
    });
    let settled = false;
    // One permanent listener dispatching to a swappable handler: frames that arrive in the same
    // TCP read as the greeting are never lost between the handshake and the caller's handler.
    let handler: (text: string) => void = (text) => {
      if (settled) return;
      let step;
      try {
        step = socketCodec.handshake(socket, text, token);
      } catch (error) {
        fail(`bad greeting: ${String(error)}`);
        return;
      }
      if (step.kind === 'ready') succeed();
      else if (step.kind === 'error') fail(step.message);
    };
    const timer = setTimeout(() => fail(`no greeting within ${timeoutMs} ms`), timeoutMs);
    const fail = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.terminate();
      reject(new Error(reason));
    };
    const succeed = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      allSockets.push(socket);
      resolve({ socket, setHandler: (next) => (handler = next) });
    };
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      handler(data.toString());
    });
    socket.on('open', () => {
      if (socketCodec.readyOnOpen) succeed();
    });
    socket.on('error', (error) => fail(error.message));
    socket.on('close', (code, reason) => {
      if (!settled) fail(`closed ${code} ${reason.toString()}`);
      else if (!closing) counters.socketsClosedUnexpectedly++;
    });
  });
}

/** Runs `tasks` with at most `concurrency` at once; returns the count that failed and the first error. */
async function runBounded(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<{ failed: number; firstError?: string }> {
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      try {
        await task(index);
      } catch (error) {
        failed++;
        firstError ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, lane));
  return firstError === undefined ? { failed } : { failed, firstError };
}

function sinkOfCustomer(customer: Customer): FrameSink {
  return {
    sent: (sendNumber) => onSent(customer, sendNumber),
    failed: (sendNumber, code, retryAfterMs) => onFailed(customer, sendNumber, code, retryAfterMs),
    delivery: (conv, seq) => customer.acker.onDelivery(conv, seq),
  };
}

function countError(code: string): void {
  if (phase !== undefined) phase.errors[code] = (phase.errors[code] ?? 0) + 1;
}

async function connect(command: ConnectCommand): Promise<void> {
  const startedMs = performance.now();
  const socketCodec = codecOf(command.target);
  codec = socketCodec;
  const opened: Customer[] = [];
  // Agents first: a message sent before its merchant's agents are online would only be queued.
  const agentResult = await runBounded(command.agents.length, command.concurrency, async (index) => {
    const spec = command.agents[index]!;
    const { socket, setHandler } = await openSocket(socketCodec, spec.baseUrl ?? command.baseUrl, spec.token, command.timeoutMs);
    const acker = new DeliveryAcker(socket, socketCodec);
    agentAckers.push(acker);
    const sink: FrameSink = {
      sent: () => undefined,
      failed: (_sendNumber, code) => countError(code),
      delivery: (conv, seq) => acker.onDelivery(conv, seq),
    };
    setHandler((text) => socketCodec.decode(socket, text, sink));
  });
  const customerResult = await runBounded(command.customers.length, command.concurrency, async (index) => {
    const spec = command.customers[index]!;
    const { socket, setHandler } = await openSocket(
      socketCodec,
      spec.baseUrl ?? command.baseUrl,
      spec.token,
      command.timeoutMs,
      spec.merchant,
    );
    const customer = new Customer(spec.index, spec.conv, socket, socketCodec);
    socket.on('close', () => {
      customer.closed = true;
    });
    const sink = sinkOfCustomer(customer);
    setHandler((text) => socketCodec.decode(socket, text, sink));
    opened.push(customer);
  });
  customers = opened.sort((left, right) => left.index - right.index);
  const failed = agentResult.failed + customerResult.failed;
  const firstError = agentResult.firstError ?? customerResult.firstError;
  post({
    type: 'connected',
    opened: opened.length + agentAckers.length,
    failed,
    ...(firstError === undefined ? {} : { firstError }),
    elapsedMs: performance.now() - startedMs,
  });
}

async function openIdle(command: OpenIdleCommand): Promise<void> {
  const startedMs = performance.now();
  const socketCodec = codecOf(command.target);
  const ignore: FrameSink = { sent: () => undefined, failed: () => undefined, delivery: () => undefined };
  let opened = 0;
  const result = await runBounded(command.tokens.length, command.concurrency, async (index) => {
    const { socket, setHandler } = await openSocket(socketCodec, command.baseUrl, command.tokens[index]!, command.timeoutMs);
    // Idle sockets still answer Socket.IO's pings; ws answers WebSocket pings by itself.
    setHandler((text) => socketCodec.decode(socket, text, ignore));
    opened++;
  });
  post({
    type: 'idle-opened',
    opened,
    failed: result.failed,
    ...(result.firstError === undefined ? {} : { firstError: result.firstError }),
    elapsedMs: performance.now() - startedMs,
  });
}

function sendOne(customer: Customer, state: PhaseState): boolean {
  if (customer.closed || state.totalSent >= state.command.maxSends) return false;
  const sendNumber = customer.nextSendNumber++;
  const frame = customer.codec.encodeSend(customer.conv, sendNumber, state.bodies[sendNumber % BODY_POOL_SIZE]!);
  customer.pending.set(sendNumber, performance.now());
  customer.inflight++;
  state.totalSent++;
  if (state.stage === 'measure') state.sentInWindow++;
  customer.socket.send(frame);
  return true;
}

function onSent(customer: Customer, sendNumber: number): void {
  const startedMs = customer.pending.get(sendNumber);
  if (startedMs === undefined) return;
  const nowMs = performance.now();
  customer.pending.delete(sendNumber);
  customer.inflight--;
  const state = phase;
  if (state === undefined) return;
  state.totalAcked++;
  if (state.stage === 'measure') {
    state.ackedInWindow++;
    state.histogram.recordMs(nowMs - startedMs);
  }
  if (state.command.mode === 'closed' && state.sending) sendOne(customer, state);
}

function onFailed(customer: Customer, sendNumber: number | undefined, code: string, retryAfterMs: number | undefined): void {
  countError(code);
  if (sendNumber === undefined || !customer.pending.has(sendNumber)) return;
  customer.pending.delete(sendNumber);
  customer.inflight--;
  const state = phase;
  if (state === undefined || state.command.mode !== 'closed') return;
  setTimeout(() => {
    if (state.sending && customer.inflight < state.command.outstanding) sendOne(customer, state);
  }, retryAfterMs ?? RETRY_AFTER_DEFAULT_MS);
}

function inflightTotal(): number {
  let total = 0;
  for (const customer of customers) if (!customer.closed) total += customer.inflight;
  return total;
}

async function run(command: RunCommand): Promise<void> {
  if (codec === undefined) throw new Error('run before connect');
  const bodies = Array.from({ length: BODY_POOL_SIZE }, () => randomId(random, command.bodyBytes));
  collectGarbage();
  counters.delivered = 0;
  counters.deliveryAcksSent = 0;
  counters.ackFramesSent = 0;
  counters.socketsClosedUnexpectedly = 0;
  const state: PhaseState = {
    command,
    stage: 'warmup',
    sending: true,
    histogram: new LatencyHistogram(),
    sentInWindow: 0,
    ackedInWindow: 0,
    totalSent: 0,
    totalAcked: 0,
    skipped: 0,
    errors: {},
    bodies,
  };
  phase = state;
  const progressTimer = setInterval(
    () => post({ type: 'progress', acked: state.totalAcked, stage: state.stage }),
    PROGRESS_INTERVAL_MS,
  );
  const tickGaps = new LatencyHistogram();
  let pacedTimer: NodeJS.Timeout | undefined;
  const startedMs = performance.now();

  const limit = command.sendersBelowIndex;
  const senders = limit === null ? customers : customers.filter((customer) => customer.index < limit);
  if (command.mode === 'closed') {
    for (const customer of senders) {
      for (let slot = 0; slot < command.outstanding; slot++) sendOne(customer, state);
    }
  } else {
    const ratePerMs = command.ratePerSecond / 1000;
    const burstMax = Math.max(1, Math.ceil(command.ratePerSecond * PACED_BURST_SECONDS));
    let issued = 0;
    let cursor = 0;
    let lastTickMs = startedMs;
    pacedTimer = setInterval(() => {
      const nowMs = performance.now();
      if (state.stage === 'measure') tickGaps.recordMs(nowMs - lastTickMs);
      lastTickMs = nowMs;
      if (!state.sending || senders.length === 0) return;
      let due = Math.floor((nowMs - startedMs) * ratePerMs) - issued;
      if (due > burstMax) {
        // The generator fell behind (a long pause): drop the backlog rather than burst it.
        state.skipped += due - burstMax;
        issued += due - burstMax;
        due = burstMax;
      }
      for (; due > 0; due--) {
        issued++;
        let sent = false;
        for (let probe = 0; probe < PACED_PROBES && !sent; probe++) {
          const customer = senders[cursor]!;
          cursor = (cursor + 1) % senders.length;
          if (customer.inflight < command.maxPacedOutstanding) sent = sendOne(customer, state);
        }
        if (!sent) state.skipped++;
      }
    }, 1);
  }

  await sleep(command.warmupMs);
  state.stage = 'measure';
  post({ type: 'window-start' });
  const windowStartMs = performance.now();
  const eluAtStart: EventLoopUtilization = performance.eventLoopUtilization();
  Object.assign(gcPauses, { totalMs: 0, maxMs: 0, count: 0, recording: true });
  await sleep(command.durationMs);
  const windowMs = performance.now() - windowStartMs;
  const elu = performance.eventLoopUtilization(eluAtStart);
  gcPauses.recording = false;
  state.stage = 'drain';
  state.sending = false;
  post({ type: 'window-end' });
  if (pacedTimer !== undefined) clearInterval(pacedTimer);

  const drainUntilMs = performance.now() + command.drainMs;
  while (inflightTotal() > 0 && performance.now() < drainUntilMs) await sleep(DRAIN_POLL_MS);
  // Pushes to agents may trail the senders' acks: wait until they stop arriving (bounded), so
  // that each phase counts its own deliveries and the next starts with the agents caught up.
  const settleUntilMs = performance.now() + DELIVERY_SETTLE_BOUND_MS;
  let quietPolls = 0;
  let deliveredBefore = counters.delivered;
  while (quietPolls < 2 && performance.now() < settleUntilMs) {
    await sleep(ACK_FLUSH_MS * 5);
    quietPolls = counters.delivered === deliveredBefore ? quietPolls + 1 : 0;
    deliveredBefore = counters.delivered;
  }
  for (const acker of agentAckers) acker.flush();
  for (const customer of customers) customer.acker.flush();
  clearInterval(progressTimer);

  const unackedAfterDrain = inflightTotal();
  // What stays unacknowledged is forgotten, so that a later phase starts clean.
  for (const customer of customers) {
    customer.pending.clear();
    customer.inflight = 0;
  }
  phase = undefined;
  const result: RunResultReply = {
    type: 'result',
    mode: command.mode,
    sentInWindow: state.sentInWindow,
    ackedInWindow: state.ackedInWindow,
    windowMs,
    histogram: Array.from(state.histogram.counts),
    totalSent: state.totalSent,
    totalAcked: state.totalAcked,
    unackedAfterDrain,
    skipped: state.skipped,
    errors: state.errors,
    delivered: counters.delivered,
    deliveryAcksSent: counters.deliveryAcksSent,
    ackFramesSent: counters.ackFramesSent,
    socketsClosedUnexpectedly: counters.socketsClosedUnexpectedly,
    eventLoopUtilization: elu.utilization,
    tickLagP99Ms: command.mode === 'paced' ? tickGaps.quantileMs(0.99) : null,
    gcPauseTotalMs: gcPauses.totalMs,
    gcPauseMaxMs: gcPauses.maxMs,
  };
  post(result);
}

async function closeAll(): Promise<void> {
  closing = true;
  for (const socket of allSockets) socket.terminate();
  allSockets.length = 0;
  customers = [];
  post({ type: 'closed' });
}

async function handle(command: WorkerCommand): Promise<void> {
  switch (command.type) {
    case 'connect':
      return connect(command);
    case 'open-idle':
      return openIdle(command);
    case 'run':
      return run(command);
    case 'close':
      return closeAll();
  }
}

port.on('message', (command: WorkerCommand) => {
  handle(command).catch((error: unknown) => {
    post({ type: 'failed', message: String((error as Error)?.stack ?? error) });
  });
});
