/**
 * `npm run bench -- hot-path`: what one chat message costs the cell's core itself, with no
 * sockets and no load generator sharing the machine: CPU time and garbage-collection time per
 * message through the real CellCore and a real LevelDB store (fsync on by default).
 *
 * The in-cell benchmark measures the whole cell over WebSockets, but on a shared 2-core virtual
 * machine its peak moves by 10-30% between identical runs. This one runs in one process, so a
 * change to the messaging path shows here as a few percent, stable enough to compare two commits
 * (run it on each). It drives C customers of M merchants (A agent devices each) in ticks: each tick
 * sends `--per-tick` messages from the next customers in turn and waits for their durable
 * acks; every `--ack-every` ticks each agent acknowledges what it received, in one frame naming
 * every conversation with news (as the SDK does).
 */
import { PerformanceObserver, performance } from 'node:perf_hooks';
import type { DeviceConnection, DevicePort } from '../cell/messaging/device.js';
import { nextTurn, startInProcessCell } from './in-process-cell.js';
import { RecordingLevelStore, replayStoreFloor, type StoreFloor } from './store-floor.js';

export interface HotPathOptions {
  customers: number;
  merchants: number;
  agentsPerMerchant: number;
  perTick: number;
  ackEvery: number;
  messages: number;
  warmupMessages: number;
  /** Messages whose store writes are recorded and replayed alone, for the store's floor (0: none). */
  floorMessages: number;
  bodyBytes: number;
  storeSync: boolean;
  seed: number;
  json: boolean;
}

export interface HotPathReport {
  benchmark: 'hot-path';
  messages: number;
  wallSeconds: number;
  msgsPerSec: number;
  /** Process CPU (all threads: LevelDB's and the collector's helpers too) per message. */
  cpuMicrosPerMessage: number;
  userCpuMicrosPerMessage: number;
  /** Garbage-collection pauses of the main thread per 1,000 messages. */
  gcMsPerThousandMessages: number;
  gcPausesPerThousandMessages: number;
  gcMaxPauseMs: number;
  /**
   * The store's floor (store-floor.ts): the CPU a fresh LevelStore takes to write the ops the
   * core wrote for `floorMessages` messages, replayed alone; null when not measured.
   */
  storeCpuMicrosPerMessage: number | null;
  /** `cpuMicrosPerMessage` less the store's floor: what the core's own code costs. */
  coreCpuMicrosPerMessage: number | null;
  storeOpsPerMessage: number | null;
  storeBytesPerMessage: number | null;
  deliveries: number;
  errorFrames: number;
  parameters: Omit<HotPathOptions, 'json'>;
  machine: { node: string };
}

/** A customer device: counts the durable acks (`sent`) of its sends. */
class CustomerPort implements DevicePort {
  constructor(private readonly tally: Tally) {}

  send(text: string): void {
    if (text.startsWith('{"t":"sent"')) this.tally.countSent();
    else if (text.startsWith('{"t":"error"')) this.tally.countError();
  }

  bufferedBytes(): number {
    return 0;
  }

  close(): void {}
}

const MESSAGE_FRAME_PREFIX = '{"t":"msg","conv":"';
const SEQ_FIELD = '","seq":';

/** An agent device: remembers the highest seq pushed per conversation, to acknowledge it. */
class AgentPort implements DevicePort {
  readonly highest = new Map<string, number>();

  constructor(private readonly tally: Tally) {}

  send(text: string): void {
    if (!text.startsWith('{"t":"msg"')) {
      if (text.startsWith('{"t":"error"')) this.tally.countError();
      return;
    }
    // A real device parses in its own process: read just the two fields the ack needs, so the
    // benchmark's CPU is the cell's. A message frame starts {"t":"msg","conv":"<id>","seq":<n>
    // (delivery.ts serialises the message's fields in that order; ids hold no quotes).
    const convStart = MESSAGE_FRAME_PREFIX.length;
    const convEnd = text.indexOf('"', convStart);
    if (!text.startsWith(MESSAGE_FRAME_PREFIX) || !text.startsWith(SEQ_FIELD, convEnd)) throw new Error(`unexpected message frame: ${text.slice(0, 80)}`);
    this.highest.set(text.slice(convStart, convEnd), Number.parseInt(text.slice(convEnd + SEQ_FIELD.length, convEnd + SEQ_FIELD.length + 16), 10));
    this.tally.deliveries++;
  }

  bufferedBytes(): number {
    return 0;
  }

  close(): void {}
}

/**
 * What the devices got. A tick waits for its acks by a callback from the customers' ports, not by
 * polling: a loop of setImmediate while the fsync is under way would spin the event loop and
 * count its own CPU as the cell's.
 */
class Tally {
  sent = 0;
  deliveries = 0;
  errors = 0;
  private waiter: { target: number; resolve: () => void } | undefined;

  countSent(): void {
    this.sent++;
    if (this.waiter !== undefined && this.sent >= this.waiter.target) this.wake();
  }

  countError(): void {
    this.errors++;
    this.wake();
  }

  /** Resolves once `target` sends were acknowledged in all, or an error frame came. */
  untilSent(target: number): Promise<void> {
    if (this.sent >= target || this.errors > 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = { target, resolve };
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve();
  }
}


export async function runHotPath(options: HotPathOptions): Promise<HotPathReport> {
  const merchants = Array.from({ length: options.merchants }, (_, index) => ({ id: `m${index}` }));
  // A standalone cell, wired as every cell is; its devices are this benchmark's ports, attached to the core directly.
  let store: RecordingLevelStore | undefined;
  const bench = await startInProcessCell({
    name: 'hot-path',
    seed: options.seed,
    merchants,
    limits: { ratePerSecond: 1_000_000, rateBurst: 1_000_000, maxDevicesPerUser: 10 },
    storeSync: options.storeSync,
    store: (init) => (store = new RecordingLevelStore(init)),
  });
  const recorder = store!;
  const { cell, identity } = bench;
  const { core } = cell;
  const tally = new Tally();
  const agents: Array<{ port: AgentPort; connection: DeviceConnection }> = [];
  for (let merchant = 0; merchant < options.merchants; merchant++) {
    for (let agent = 0; agent < options.agentsPerMerchant; agent++) {
      const port = new AgentPort(tally);
      agents.push({ port, connection: core.connect(await identity(`a${merchant}-${agent}`, `m${merchant}`), port) });
    }
  }
  const customers: DeviceConnection[] = [];
  for (let customer = 0; customer < options.customers; customer++) {
    customers.push(core.connect(await identity(`c${customer}`), new CustomerPort(tally)));
  }
  // Devices attach (load their cursors) asynchronously; let them settle before the first send.
  for (let turn = 0; turn < 50; turn++) await nextTurn();

  const bodyJson = JSON.stringify('x'.repeat(options.bodyBytes));
  let sendNumber = 0;
  let tick = 0;
  const runTicks = async (messages: number): Promise<void> => {
    for (let sentSoFar = 0; sentSoFar < messages; sentSoFar += options.perTick) {
      const before = tally.sent;
      const count = Math.min(options.perTick, messages - sentSoFar);
      for (let index = 0; index < count; index++) {
        const customer = sendNumber % options.customers;
        const id = String(sendNumber++);
        // Written as a device would send it; built from a template, as ids and the body need no escaping.
        core.receive(customers[customer]!, `{"op":"send","id":"${id}","conv":"m${customer % options.merchants}:c${customer}","cmid":"${id}","body":${bodyJson}}`);
      }
      await tally.untilSent(before + count);
      if (tally.errors > 0) throw new Error(`the cell answered ${tally.errors} error frame(s)`);
      recorder.endTick();
      if (++tick % options.ackEvery !== 0) continue;
      for (const { port, connection } of agents) {
        if (port.highest.size === 0) continue;
        core.receive(connection, JSON.stringify({ op: 'ack', acks: Object.fromEntries(port.highest) }));
        port.highest.clear();
      }
    }
  };

  try {
    await runTicks(options.warmupMessages);
    const gc = { totalMs: 0, count: 0, maxMs: 0, recording: true };
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (!gc.recording) continue;
        gc.totalMs += entry.duration;
        gc.count++;
        gc.maxMs = Math.max(gc.maxMs, entry.duration);
      }
    });
    observer.observe({ entryTypes: ['gc'] });
    const deliveriesBefore = tally.deliveries;
    const cpuBefore = process.cpuUsage();
    const startedMs = performance.now();
    await runTicks(options.messages);
    const wallMs = performance.now() - startedMs;
    const cpu = process.cpuUsage(cpuBefore);
    const deliveries = tally.deliveries - deliveriesBefore;
    // Entries of the last collections arrive on a later turn.
    await nextTurn();
    gc.recording = false;
    observer.disconnect();
    // After the measured window, so that the recorded writes weigh on none of its figures.
    const floor = options.floorMessages > 0 ? await measureStoreFloor(recorder, () => runTicks(options.floorMessages), options) : undefined;
    const { json: _json, ...parameters } = options;
    const cpuMicrosPerMessage = (cpu.user + cpu.system) / options.messages;
    return {
      benchmark: 'hot-path',
      messages: options.messages,
      wallSeconds: wallMs / 1000,
      msgsPerSec: options.messages / (wallMs / 1000),
      cpuMicrosPerMessage,
      userCpuMicrosPerMessage: cpu.user / options.messages,
      gcMsPerThousandMessages: (gc.totalMs / options.messages) * 1000,
      gcPausesPerThousandMessages: (gc.count / options.messages) * 1000,
      gcMaxPauseMs: gc.maxMs,
      storeCpuMicrosPerMessage: floor?.cpuMicrosPerMessage ?? null,
      coreCpuMicrosPerMessage: floor === undefined ? null : cpuMicrosPerMessage - floor.cpuMicrosPerMessage,
      storeOpsPerMessage: floor?.opsPerMessage ?? null,
      storeBytesPerMessage: floor?.bytesPerMessage ?? null,
      deliveries,
      errorFrames: tally.errors,
      parameters,
      machine: { node: process.version },
    };
  } finally {
    await bench.close();
  }
}

/** Records the store writes of `floorMessages` more messages and replays them alone (store-floor.ts). */
async function measureStoreFloor(recorder: RecordingLevelStore, run: () => Promise<void>, options: HotPathOptions): Promise<StoreFloor> {
  recorder.startRecording();
  await run();
  return replayStoreFloor(recorder.takeRecording(), options.floorMessages, options.storeSync);
}

export function describeHotPath(report: HotPathReport): string {
  const round = (value: number, digits = 1): string => value.toFixed(digits);
  return [
    `hot path: ${report.messages} messages through CellCore + LevelDB (sync ${report.parameters.storeSync}), no sockets`,
    `  CPU per message:      ${round(report.cpuMicrosPerMessage)} µs (user ${round(report.userCpuMicrosPerMessage)} µs)`,
    ...(report.storeCpuMicrosPerMessage === null
      ? []
      : [
          `  of which the store:  ${round(report.storeCpuMicrosPerMessage)} µs (its floor: ${round(report.storeOpsPerMessage ?? 0, 2)} ops, ${Math.round(report.storeBytesPerMessage ?? 0)} bytes per message, replayed alone)`,
          `  the core's own code: ${round(report.coreCpuMicrosPerMessage ?? 0)} µs`,
        ]),
    `  GC per 1,000 msgs:    ${round(report.gcMsPerThousandMessages, 2)} ms in ${round(report.gcPausesPerThousandMessages, 2)} pauses (longest ${round(report.gcMaxPauseMs)} ms)`,
    `  rate:                 ${Math.round(report.msgsPerSec)} msgs/s (${report.parameters.perTick} per tick, acks every ${report.parameters.ackEvery} ticks)`,
    `  deliveries to agents: ${report.deliveries}`,
  ].join('\n');
}
