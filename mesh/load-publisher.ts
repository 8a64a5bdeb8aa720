import type { Clock, TimerHandle } from '../platform/clock.js';
import type { CellRecordContent } from './cell-record.js';
import { budgetedIntervalMs, type MembershipOptions } from './membership-config.js';

/** The load a cell's record carries. */
export type CellLoad = CellRecordContent['load'];

/** What the publisher reads from the cell: its devices now, and its messages since it started. */
export interface LoadSource {
  devices(): number;
  /** A counter that only grows (the cell's `messages_in_total`); the rate is taken from its steps. */
  messagesTotal(): number | Promise<number>;
}

/** The part of CellMesh the publisher uses. */
export interface LoadRecordOwner {
  readonly state: string;
  readonly options: MembershipOptions;
  ownRecord(): { readonly load: CellLoad };
  /** Serving cells this cell knows of, itself included. */
  servingCellCount(): number;
  updateOwnRecord(patch: { load: CellLoad }): Promise<unknown>;
}

/**
 * The interval at which a cell of a cluster of `servingCells` looks at its load and republishes it
 * when it changed: `loadPublishIntervalMs`, stretched so that the load updates of all the other
 * cells add up to at most `loadUpdateReceiveBudgetPerSecond` per cell. Every update is a new
 * record version that every cell receives, verifies and stores, so without the budget a cell of
 * a 1,000-cell cluster would take 200 of them a second (5 s each); with the LAN budget of 20 it
 * takes at most 20, and each cell publishes at most every 50 s. A budget of 0 turns it off.
 */
export function loadPublishIntervalMs(servingCells: number, options: MembershipOptions): number {
  return budgetedIntervalMs(servingCells, options.loadPublishIntervalMs, options.loadUpdateReceiveBudgetPerSecond, options.maxCells);
}

/**
 * Whether `now` differs from the `published` figure enough to be news: by at least `threshold`
 * of the published figure (0.1: ten per cent), or at all when either is zero. Compared with what
 * was last published, not last sampled, so a slow drift is published once it adds up.
 */
export function changedNoticeably(published: number, now: number, threshold: number): boolean {
  if (published === now) return false;
  if (published === 0 || now === 0) return true;
  return Math.abs(now - published) >= threshold * published;
}

/**
 * Keeps the load in the cell's own record current (devices connected, messages per second over
 * the last interval), which routing and the admin view show. The same code runs in every cell
 * process and in the simulator's cells.
 *
 * Runs until cancelled; a failed sample or publish is reported to `onError` and the next interval
 * tries again. Nothing is published while the mesh is not running (joining, leaving).
 */
export function publishLoadPeriodically(
  mesh: LoadRecordOwner,
  clock: Clock,
  source: LoadSource,
  onError: (error: unknown) => void,
): TimerHandle {
  let timer: TimerHandle | undefined;
  let cancelled = false;
  let lastSample: { atMs: number; messages: number } | undefined;

  const publishIfChanged = async (): Promise<void> => {
    const messages = await source.messagesTotal();
    const nowMs = clock.now();
    const previous = lastSample;
    lastSample = { atMs: nowMs, messages };
    // The first look only starts the rate; the record's first version already said zero.
    if (previous === undefined || mesh.state !== 'running') return;
    const elapsedSeconds = Math.max(0.001, (nowMs - previous.atMs) / 1_000);
    const load: CellLoad = {
      devices: source.devices(),
      messagesPerSecond: Math.round(Math.max(0, (messages - previous.messages) / elapsedSeconds)),
    };
    const published = mesh.ownRecord().load;
    const threshold = mesh.options.loadChangeThreshold;
    if (!changedNoticeably(published.devices, load.devices, threshold) && !changedNoticeably(published.messagesPerSecond, load.messagesPerSecond, threshold)) {
      return;
    }
    await mesh.updateOwnRecord({ load });
  };

  const schedule = (): void => {
    timer = clock.setTimer(loadPublishIntervalMs(mesh.servingCellCount(), mesh.options), tick);
  };
  const tick = (): void => {
    if (cancelled) return;
    publishIfChanged()
      .catch(onError)
      .finally(() => {
        if (!cancelled) schedule();
      });
  };
  // The rate needs two samples: the first is taken at once.
  tick();
  return {
    cancel: () => {
      cancelled = true;
      timer?.cancel();
    },
  };
}
