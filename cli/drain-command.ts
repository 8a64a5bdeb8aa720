import cliProgress from 'cli-progress';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminCall, printJson, type AdminOptions } from './admin-call.js';
import { CliError, ExitCode } from './cli-errors.js';

/**
 * `cellmesh drain` (docs/operations.md, "Removing a cell"): asks a cell to move every merchant it
 * hosts to the other live cells (`POST /v1/admin/drain`), then follows its progress
 * (`GET /v1/admin/drain`) with a bar on a terminal, a line per merchant otherwise, until the
 * drain ends. Exits 0 when every merchant moved, 1 with the merchants that did not.
 * `--cancel` cancels a drain (the cell takes merchants again); `--status` only reports.
 */

interface DrainCommandOptions extends AdminOptions {
  parallelism?: number;
  cancel?: boolean;
  status?: boolean;
}

interface MerchantProgress {
  tenant: string;
  merchant: string;
  state: 'pending' | 'moving' | 'moved' | 'failed';
  to?: string;
  error?: { code: string; message: string };
}

interface DrainProgress {
  cellId: string;
  state: 'idle' | 'draining' | 'drained' | 'failed' | 'cancelled';
  counts: Record<MerchantProgress['state'], number>;
  merchants: MerchantProgress[];
}

const POLL_INTERVAL_MS = 250;

export async function runDrainCommand(options: DrainCommandOptions): Promise<void> {
  if (options.cancel === true) {
    report(options, (await adminCall(options, 'DELETE', '/v1/admin/drain')) as DrainProgress);
    return;
  }
  if (options.status === true) {
    report(options, (await adminCall(options, 'GET', '/v1/admin/drain')) as DrainProgress);
    return;
  }
  const started = (await adminCall(options, 'POST', '/v1/admin/drain', options.parallelism === undefined ? {} : { parallelism: options.parallelism })) as DrainProgress;
  if (options.json !== true) process.stderr.write(`draining ${started.cellId}: ${started.merchants.length} merchants to move\n`);
  const shown = new ProgressDisplay(started, options.json !== true);
  let progress = started;
  while (progress.state === 'draining') {
    await sleep(POLL_INTERVAL_MS);
    progress = (await adminCall(options, 'GET', '/v1/admin/drain')) as DrainProgress;
    shown.update(progress);
  }
  shown.stop();
  report(options, progress);
}

/** Prints the outcome; throws (exit 1) unless every merchant moved. */
function report(options: DrainCommandOptions, progress: DrainProgress): void {
  if (options.json === true) printJson(progress);
  else {
    const { counts } = progress;
    process.stdout.write(`${progress.cellId}: ${progress.state}; moved ${counts.moved}, failed ${counts.failed}, moving ${counts.moving}, pending ${counts.pending}\n`);
    for (const merchant of progress.merchants.filter((entry) => entry.state === 'failed')) {
      process.stdout.write(`  failed ${merchant.tenant}/${merchant.merchant}${merchant.to === undefined ? '' : ` (to ${merchant.to})`}: ${merchant.error?.code ?? ''} ${merchant.error?.message ?? ''}\n`);
    }
  }
  // --status and --cancel only report.
  if (options.status === true || options.cancel === true || progress.state === 'drained') return;
  if (progress.state === 'cancelled') throw new CliError('the drain was cancelled; the cell takes merchants again', ExitCode.Failed);
  throw new CliError(`${progress.counts.failed + progress.counts.pending} merchants did not move; run \`cellmesh drain\` again to retry them`, ExitCode.Failed);
}

/** A bar on a terminal; without one, a line each time a merchant moved or failed. */
class ProgressDisplay {
  private readonly bar: cliProgress.SingleBar | undefined;
  private readonly announced = new Set<string>();

  constructor(
    first: DrainProgress,
    private readonly enabled: boolean,
  ) {
    this.bar =
      enabled && process.stderr.isTTY === true
        ? new cliProgress.SingleBar({ format: 'drain {bar} {value}/{total} merchants | moving {moving} | failed {failed}', hideCursor: true, stream: process.stderr, barsize: 30 }, cliProgress.Presets.shades_classic)
        : undefined;
    this.bar?.start(first.merchants.length, 0, { moving: first.counts.moving, failed: first.counts.failed });
    this.update(first);
  }

  update(progress: DrainProgress): void {
    if (!this.enabled) return;
    if (this.bar !== undefined) {
      this.bar.update(progress.counts.moved + progress.counts.failed, { moving: progress.counts.moving, failed: progress.counts.failed });
      return;
    }
    for (const merchant of progress.merchants) {
      const key = `${merchant.tenant}/${merchant.merchant}`;
      if ((merchant.state !== 'moved' && merchant.state !== 'failed') || this.announced.has(key)) continue;
      this.announced.add(key);
      const done = progress.counts.moved + progress.counts.failed;
      process.stderr.write(`[${done}/${progress.merchants.length}] ${key} ${merchant.state === 'moved' ? `moved to ${merchant.to}` : `failed: ${merchant.error?.code ?? ''}`}\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
