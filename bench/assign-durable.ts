/**
 * The durable half of `npm run bench -- assign`: assignments end to end through a real cell
 * (the assembly, LevelDB with fsync, system messages, delivery to the agents' devices), against
 * the same cell's durable message rate in the same run.
 *
 * - Baseline: `consultations` customers each send one message to a merchant without a desk, all
 *   at once, into conversations already open, each pushed to the merchant's agent's device;
 *   messages made durable per second until the last is acknowledged.
 * - Desk: as many customers write to a merchant whose agents are all away, so every
 *   consultation waits; the agents' devices are connected; then every agent sets its status to
 *   online and the desk drains the queue. `durableAssignPerSec`: assignments whose system
 *   message (with the consultation's record) is durable and pushed to the agent's device, per
 *   second, from the first status change to the last assignment written.
 */
import { performance } from 'node:perf_hooks';
import type { DevicePort } from '../cell/messaging/device.js';
import { nextTurn, startInProcessCell } from './in-process-cell.js';

export interface DurableAssignOptions {
  consultations: number;
  agents: number;
  seed: number;
}

export interface DurableAssignReport {
  /** Assignments made durable (system message and record) per second while the desk drained its queue. */
  durableAssignPerSec: number;
  /** Chat messages made durable per second by the same cell, in the same run (the baseline). */
  durableMessagesPerSec: number;
  /** durableAssignPerSec / durableMessagesPerSec: the goal is at least 1. */
  assignToMessageRatio: number;
}

/** A phase that has not finished by then is a failure, not a slow run. */
const DURABLE_TIMEOUT_MS = 120_000;
/** A device port that takes every frame and never pushes back. */
const NULL_PORT: DevicePort = { send: () => undefined, bufferedBytes: () => 0, close: () => undefined };


export async function runDurableAssign(options: DurableAssignOptions): Promise<DurableAssignReport> {
  const capacity = Math.ceil(options.consultations / options.agents);
  const agents = Array.from({ length: options.agents }, (_, index) => ({ id: `agent-${index}`, capacity }));
  const bench = await startInProcessCell({
    name: 'assign',
    seed: options.seed,
    merchants: [{ id: 'desk', agents }, { id: 'open' }],
    // Devices here never ack: a window as large as the runs lets every message reach them.
    limits: { ratePerSecond: 1_000_000, rateBurst: 1_000_000, deliveryWindow: 10_000 },
    storeSync: true,
  });
  const { cell, identity } = bench;
  const { core, metrics } = cell;
  const untilDurable = async (count: number): Promise<void> => {
    const deadline = performance.now() + DURABLE_TIMEOUT_MS;
    while (metrics.messagesInTotal() < count) {
      if (performance.now() > deadline) throw new Error(`only ${metrics.messagesInTotal()} of ${count} messages were durable after ${DURABLE_TIMEOUT_MS} ms`);
      await nextTurn();
    }
  };
  try {
    const customers = await Promise.all(Array.from({ length: options.consultations }, (_, index) => identity(`c${index}`)));
    // The baseline: one message per customer to the merchant without a desk, all at once, into
    // conversations already in memory (as the desk's are when it assigns), each pushed to the
    // merchant's agent as every message is; a first round opens them.
    core.connect(await identity('agent-0', 'open'), NULL_PORT);
    await Promise.all(customers.map((customer) => core.send(customer, `open:${customer.user}`, 'hello', 'where is my parcel?')));
    let startedMs = performance.now();
    await Promise.all(customers.map((customer) => core.send(customer, `open:${customer.user}`, 'again', 'any news?')));
    const durableMessagesPerSec = options.consultations / ((performance.now() - startedMs) / 1000);

    // The queue: the same customers at the desk, nobody online. Each message is followed by its "queued" notice.
    await Promise.all(customers.map((customer) => core.send(customer, `desk:${customer.user}`, 'hello', 'where is my parcel?')));
    const queuedBy = options.consultations * 4;
    await untilDurable(queuedBy);
    // The agents connect away (their chosen status), then come online at once: the desk drains the queue.
    const agentIdentities = await Promise.all(agents.map((agent) => identity(agent.id, 'desk')));
    await Promise.all(agentIdentities.map((agent) => core.desk.setStatus(agent, 'away')));
    for (const agent of agentIdentities) core.connect(agent, NULL_PORT);
    for (let turn = 0; turn < 50; turn++) await nextTurn();
    startedMs = performance.now();
    await Promise.all(agentIdentities.map((agent) => core.desk.setStatus(agent, 'online')));
    await untilDurable(queuedBy + options.consultations);
    const durableAssignPerSec = options.consultations / ((performance.now() - startedMs) / 1000);
    return {
      durableAssignPerSec: Math.round(durableAssignPerSec),
      durableMessagesPerSec: Math.round(durableMessagesPerSec),
      assignToMessageRatio: Math.round((durableAssignPerSec / durableMessagesPerSec) * 100) / 100,
    };
  } finally {
    await bench.close();
  }
}
