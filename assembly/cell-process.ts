import { StandbyAccess } from '../cell/access/standby-access.js';
import { attachmentsConfigOf } from '../cell/settings.js';
import { SystemClock } from '../platform/clock.js';
import { PromMetrics } from '../platform/prom-metrics.js';
import type { CellConfig } from './config.js';
import { processAddressOf, startCell, type RunningCell, type StartCellOptions } from './process-cell.js';
import { registerMeshProcess, type SpeakerProcess } from './speaker-process.js';
import { listenStartError } from './start-errors.js';

/** What `cellmesh cell` runs: a cell, or a standby process of a cell in a mesh that may become it. */
export interface CellProcess {
  readonly cellId: string;
  /** The port devices reach this process at; a standby that takes over keeps it. */
  readonly port: number;
  /** The cell this process runs: from the start, or once it took over as the speaker; undefined while it stands by. */
  cell(): RunningCell | undefined;
  /** Graceful stop: the cell's (leaving the mesh, releasing the speaker lease), or the standby's. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts the process of a cell. A cell on Redis in a mesh runs in the process that holds its
 * speaker lease (docs/operations.md, "A cell of several processes"); any other process of it is
 * a standby: it relays every device and HTTP call to the speaker and tries for the speaker lease
 * every round. When it gets it (the speaker left or died, and its writes are fenced off), it stops
 * relaying (its relayed devices reconnect) and starts the cell on the same port: the store fenced
 * by its own lease, the core, and the mesh under the cell's shared key with a new incarnation.
 * `onSpeakerLost` ends the process (see StartCellOptions); a takeover that fails calls it too.
 */
export async function startCellProcess(options: StartCellOptions): Promise<CellProcess> {
  const { config, logger } = options;
  const speaker = options.store === undefined ? await registerMeshProcess(config, options.clock ?? new SystemClock(), logger) : undefined;
  if (speaker === undefined || speaker.lease.isSpeaker()) {
    const cell = await startCell({ ...options, ...(speaker === undefined ? {} : { speaker }) });
    return { cellId: cell.cellId, port: cell.port, cell: () => cell, stop: () => cell.stop() };
  }
  return standBy(options, speaker);
}

async function standBy(options: StartCellOptions, speaker: SpeakerProcess): Promise<CellProcess> {
  const { config, logger } = options;
  const metrics = new PromMetrics();
  if (options.processMetrics === true) metrics.collectProcessMetrics();
  const standby = new StandbyAccess({
    host: config.listen.host,
    port: config.listen.port,
    logger,
    limits: config.limits,
    maxBodyBytes: largestBodyOf(config),
    exposition: metrics,
    processId: speaker.lease.processId,
    speaker: () => speaker.lease.speaker(),
  });
  let port: number;
  try {
    port = await standby.listen();
  } catch (error) {
    await speaker.close();
    throw await listenStartError({ host: 'listen.host', port: 'listen.port' }, config.listen.host, config.listen.port, error);
  }
  await speaker.lease.publish(processAddressOf(config, port));
  logger.info({ cell: config.cell.id, process: speaker.lease.processId, port, speaker: speaker.lease.speaker()?.id }, 'standing by: relaying devices and calls to the process that speaks for the cell');
  speaker.lease.onSpeakerChange((record) => logger.info({ speaker: record?.id }, record === undefined ? 'no process speaks for the cell right now' : 'the cell has a new speaker'));
  let cell: RunningCell | undefined;
  let stopping = false;
  let takingOver: Promise<void> | undefined;
  void speaker.lease.whenSpeaker().then(() => {
    if (stopping) return;
    takingOver = (async () => {
      logger.info({ cell: config.cell.id, process: speaker.lease.processId }, 'taking over: this process speaks for the cell now');
      standby.stop();
      // The same port: the balancer and the devices' reconnects find the cell where the standby was.
      cell = await startCell({ ...options, config: { ...config, listen: { ...config.listen, port } }, speaker });
    })().catch((error: unknown) => {
      logger.error({ err: error }, 'taking over the cell failed');
      (options.onSpeakerLost ?? (() => undefined))('taking over the cell failed');
    });
  });
  let stopped: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    stopping = true;
    if (takingOver === undefined) {
      standby.stop();
      await speaker.close();
      return;
    }
    await takingOver;
    await cell?.stop();
  };
  return { cellId: config.cell.id, port, cell: () => cell, stop: () => (stopped ??= stop()) };
}

/** The largest request body a standby sends on: a frame, or the largest attachment a tenant takes. */
function largestBodyOf(config: CellConfig): number {
  return Math.max(config.limits.maxFrameBytes, ...config.tenants.map((tenant) => attachmentsConfigOf(tenant).maxBytes));
}
