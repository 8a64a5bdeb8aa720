import { CELL_OPTIONS } from '../assembly/cell-options.js';
import { givenValues } from './config-environment.js';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import cliProgress from 'cli-progress';
import { storeFromConfig } from '../assembly/cell-store.js';
import { keyFileOf } from '../assembly/process-cell.js';
import { redisKeyPrefixOf, type CellConfig } from '../assembly/config.js';
import { backupCellStore, checkRestorable, restoreCellStore, verifyBackup } from '../cell/cell-backup.js';
import { outboxKeys } from '../mesh/forward-store.js';
import { isLockedByAnotherProcess, type Store } from '../platform/store/index.js';
import { CliError, ExitCode, messageWithCauses } from './cli-errors.js';
import { readConfigFile, resolveCellConfig } from './load-config.js';
import { errorText } from './move-command.js';

/**
 * `cellmesh backup` and `cellmesh restore`: a stopped cell's store to a backup file and back
 * (docs/operations.md, "Backup and restore"). A running cell is backed up through its admin API.
 */

interface BackupOptions {
  config?: string;
  /** A running cell's URL: back it up through its admin API instead of opening its store. */
  cell?: string;
  adminToken?: string;
  out: string;
}

interface RestoreOptions {
  config?: string;
  from: string;
  force?: boolean;
}

export async function runBackupCommand(options: BackupOptions): Promise<void> {
  // --cell wins over a config (CELLMESH_CONFIG may be set in a pod, where the cell runs).
  if (options.cell !== undefined) {
    await backupRunningCell(options.cell, options.adminToken, options.out);
    return;
  }
  const config = await cellConfig(options.config);
  const where = storeName(config);
  // Opening a missing directory would create an empty store and back that up.
  if (config.store.kind === 'level' && !existsSync(join(config.store.directory, 'CURRENT'))) {
    throw new CliError(`there is no LevelDB store at ${config.store.directory} (store.directory of the config)`, ExitCode.Usage);
  }
  if (existsSync(options.out)) throw new CliError(`${options.out} exists already; choose another file`, ExitCode.Usage);
  const meshKey = await meshKeyOf(config);
  const store = await openStopped(config);
  const startedMs = performance.now(); // real-clock-ok: the summary's duration
  const progress = progressBar('backup | {entries} entries | {size}', 0);
  // Written beside the target and renamed at the end: a failed backup leaves no file that looks whole.
  const partial = `${options.out}.partial`;
  let totals;
  try {
    totals = await backupCellStore(store, createWriteStream(partial, { mode: 0o600 }), {
      cellId: config.cell.id,
      source: config.store.kind,
      createdAt: new Date().toISOString(),
      meshKey,
      snapshot: false,
      onProgress: (entries, bytes) => progress.update(entries, { entries, size: sizeText(bytes) }),
    });
    await rename(partial, options.out);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  } finally {
    progress.stop();
    await store.close();
  }
  const seconds = (performance.now() - startedMs) / 1000; // real-clock-ok
  process.stdout.write(
    `backed up cell ${config.cell.id} from ${where}: ${totals.entries} entries, ${sizeText(totals.bytes)} to ${options.out} in ${seconds.toFixed(1)} s` +
      `${meshKey === undefined ? '' : ' (with its mesh key: keep the file as secret as the key)'}\n`,
  );
}

/**
 * Downloads `GET /v1/admin/backup` of a running cell to `out`, then reads the file through to
 * check that it is whole (a connection cut midway leaves no file behind).
 */
async function backupRunningCell(cell: string, adminToken: string | undefined, out: string): Promise<void> {
  if (adminToken === undefined || adminToken === '') throw new CliError('pass --admin-token or set CELLMESH_ADMIN_TOKEN', ExitCode.Usage);
  if (existsSync(out)) throw new CliError(`${out} exists already; choose another file`, ExitCode.Usage);
  const base = cell.replace(/\/$/, '');
  const startedMs = performance.now(); // real-clock-ok: the summary's duration
  // The answer must begin within a minute; the download itself takes as long as the store is large.
  const answered = new AbortController();
  const timer = setTimeout(() => answered.abort(new Error('no answer within 60 s')), 60_000);
  const response = await fetch(`${base}/v1/admin/backup`, { headers: { authorization: `Bearer ${adminToken}` }, signal: answered.signal })
    .catch((error: unknown) => {
      throw new CliError(`cannot reach ${base}: ${messageWithCauses(error)}`, ExitCode.Unreachable);
    })
    .finally(() => clearTimeout(timer));
  if (!response.ok || response.body === null) {
    throw new CliError(`${base} refused the backup: ${errorText(await response.json().catch(() => `HTTP ${response.status}`))}`, ExitCode.Failed);
  }
  const partial = `${out}.partial`;
  const progress = progressBar('download | {size}', 0);
  let bytes = 0;
  try {
    const counted = Readable.fromWeb(response.body as Parameters<typeof Readable.fromWeb>[0]).on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      progress.update(bytes, { size: sizeText(bytes) });
    });
    await pipeline(counted, createWriteStream(partial, { mode: 0o600 }));
    progress.stop();
    const verified = await verifyBackup(createReadStream(partial), `the backup of ${base}`);
    await rename(partial, out);
    const seconds = (performance.now() - startedMs) / 1000; // real-clock-ok
    process.stdout.write(
      `backed up running cell ${verified.header.cellId}: ${verified.entries} entries, ${sizeText(bytes)} to ${out} in ${seconds.toFixed(1)} s` +
        `${verified.header.meshKey === undefined ? '' : ' (with its mesh key: keep the file as secret as the key)'}\n`,
    );
  } catch (error) {
    progress.stop();
    await rm(partial, { force: true });
    throw error;
  }
}

export async function runRestoreCommand(options: RestoreOptions): Promise<void> {
  const config = await cellConfig(options.config);
  const where = storeName(config);
  const force = options.force === true;
  if (!existsSync(options.from)) throw new CliError(`there is no file ${options.from}`, ExitCode.Usage);
  const startedMs = performance.now(); // real-clock-ok: the summary's duration
  // The whole file is checked before the store is touched: a file cut short or changed is refused
  // with the store as it was.
  const verifying = progressBar('verify | {entries} entries', 0);
  const verified = await verifyBackup(createReadStream(options.from), options.from, (entries) => verifying.update(entries, { entries })).finally(() => verifying.stop());
  checkRestorable(verified.header, config.cell.id, options.from);
  const keyPlan = await meshKeyPlan(config, verified.header.meshKey, force);
  const store = await openStopped(config);
  const restoring = progressBar('restore {bar} {percentage}% | {value}/{total} entries', verified.entries);
  let restored;
  try {
    restored = await restoreCellStore(store, createReadStream(options.from), {
      cellId: config.cell.id,
      name: options.from,
      force,
      onProgress: (entries) => restoring.update(entries),
    });
    // The restored outbox numbers its entries from where the backup left off, and the other
    // cells' marks may be above that already (what the cell sent after the backup): they would
    // drop its next entries as duplicates. Without its epoch the outbox makes a new one at start,
    // which the others take as a new incarnation: entries it still holds are delivered again,
    // which forwarded entries tolerate (applied idempotently, cell/messaging/cross-cell.ts).
    await store.write([{ type: 'del', key: outboxKeys.epoch }]);
  } finally {
    restoring.stop();
    await store.close();
  }
  const keyNote = await keyPlan();
  const seconds = (performance.now() - startedMs) / 1000; // real-clock-ok
  const wiped = restored.deleted > 0 ? `, after deleting the ${restored.deleted} entries it held (--force)` : '';
  process.stdout.write(
    `restored cell ${config.cell.id} from ${options.from} (backed up ${restored.header.createdAt}): ${restored.entries} entries into ${where}${wiped} in ${seconds.toFixed(1)} s${keyNote}\n`,
  );
}

async function cellConfig(file: string | undefined): Promise<CellConfig> {
  if (file === undefined) throw new CliError('the cell\'s config file is needed: pass --config <file> or set CELLMESH_CONFIG', ExitCode.Usage);
  // The cell's own variables apply as they do to `cellmesh cell`: a pod's CELLMESH_DATA_DIR or
  // CELLMESH_REDIS_URL names the same store for its backup.
  return resolveCellConfig(await readConfigFile(file), givenValues(CELL_OPTIONS, {}, process.env));
}

/** The config's store in words (`/var/lib/cellmesh`, `redis 10.0.0.5:6379 cellmesh:cell-a:`); a memory store has nothing to back up. */
function storeName(config: CellConfig): string {
  const store = config.store;
  switch (store.kind) {
    case 'level':
      return store.directory;
    case 'redis': {
      const url = new URL(store.redis.url);
      return `redis ${url.hostname}:${url.port || '6379'}${url.pathname.length > 1 ? url.pathname : ''} ${redisKeyPrefixOf(config, store.redis)}`;
    }
    case 'memory':
      throw new CliError('a memory store keeps nothing across a restart: there is nothing to back up or restore', ExitCode.Usage);
  }
}

/**
 * Opens the config's store; a LevelDB store held by a running cell is refused in words, not a
 * stack trace. (Redis has no such lock: the operator stops the cell's processes first.)
 */
async function openStopped(config: CellConfig): Promise<Store> {
  const store = storeFromConfig(config);
  try {
    await store.open();
  } catch (error) {
    const where = storeName(config);
    if (isLockedByAnotherProcess(error)) {
      throw new CliError(`${where} is locked by another process: the cell is running. Stop it first, or back it up while it runs with GET /v1/admin/backup (docs/operations.md, "Backup and restore")`, ExitCode.Usage);
    }
    throw new CliError(`cannot open the store at ${where}: ${messageWithCauses(error)}`, ExitCode.Failed);
  }
  return store;
}

/** The cell's mesh key file (base64), if it is in a mesh and has one. */
async function meshKeyOf(config: CellConfig): Promise<string | undefined> {
  if (config.mesh === undefined) return undefined;
  const file = keyFileOf(config, config.mesh);
  try {
    return (await readFile(file)).toString('base64');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError(`cannot read the mesh key file ${file}: ${(error as Error).message}`, ExitCode.Failed);
  }
}

/**
 * What the restore does with the mesh key, decided before the store is touched: writes the
 * backup's key where the config keeps it (a restored cell comes back as the same peer), keeps a
 * key already there that is the same, and refuses to replace another one without --force.
 * Resolves with a function that does it after the data is restored, answering a note for the summary.
 */
async function meshKeyPlan(config: CellConfig, meshKey: string | undefined, force: boolean): Promise<() => Promise<string>> {
  if (config.mesh === undefined) {
    return async () => (meshKey === undefined ? '' : '; the backup holds a mesh key, which this config (no mesh section) does not use');
  }
  const file = keyFileOf(config, config.mesh);
  if (meshKey === undefined) {
    return async () => `; the backup holds no mesh key: the cell keeps ${existsSync(file) ? `the key in ${file}` : 'no key and makes a new one'} and joins as that peer under its cell id`;
  }
  const existing = await readFile(file).catch(() => undefined);
  const wanted = Buffer.from(meshKey, 'base64');
  if (existing !== undefined && existing.equals(wanted)) return async () => `; mesh key ${file} already the backup's`;
  if (existing !== undefined && !force) {
    throw new CliError(`${file} holds another mesh key than the backup's: the restored cell would join as another peer. Move it away, or pass --force to replace it`, ExitCode.Usage);
  }
  return async () => {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, wanted, { mode: 0o600 });
    return `; mesh key written to ${file}`;
  };
}

interface Progress {
  update(value: number, payload?: Record<string, unknown>): void;
  stop(): void;
}

/**
 * A progress bar on stderr when it is a terminal; nothing otherwise (the summary line says the
 * rest). A backup's total is unknown until its end (total 0): its format counts, with no bar.
 */
function progressBar(format: string, total: number): Progress {
  if (process.stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true, clearOnComplete: true, barsize: 24 }, cliProgress.Presets.shades_classic);
  bar.start(total, 0, { entries: 0, size: sizeText(0) });
  return {
    update: (value, payload) => bar.update(value, payload ?? {}),
    stop: () => bar.stop(),
  };
}

function sizeText(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}
