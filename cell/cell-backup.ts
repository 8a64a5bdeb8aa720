import type { Readable, Writable } from 'node:stream';
import { openBackup, writeBackup, type BackupHeader, type BackupWriteTotals } from '../platform/store/backup-file.js';
import { deleteRange, scan } from '../platform/store/scan.js';
import type { Store, StoreOp } from '../platform/store/store.js';
import { KEY_LAYOUT_VERSION } from './messaging/key-layout.js';
import { keys } from './messaging/keys.js';

/**
 * Backup and restore of a cell's whole store, through the Store port (so one file serves LevelDB
 * and Redis alike): docs/operations.md, "Backup and restore".
 */

/**
 * Every key of a cell. The layout's keys are ASCII (keys.ts); the port allows any string, and
 * this range holds every key that does not begin with U+FFFF, which no part of the cell writes.
 */
export const WHOLE_STORE = { gte: '', lt: '\uFFFF' } as const;

/** Entries read per page of the store while backing up. */
const BACKUP_PAGE_ENTRIES = 1024;
/** Bounds of one store batch while restoring (an attachment chunk alone is about 350 KB). */
const RESTORE_BATCH_ENTRIES = 1024;
const RESTORE_BATCH_CHARS = 4 * 1024 * 1024;

export type CellBackupErrorCode = 'BACKUP_LAYOUT_NEWER' | 'BACKUP_OTHER_CELL' | 'RESTORE_TARGET_NOT_EMPTY' | 'SNAPSHOT_UNSUPPORTED';

/** A backup or a restore the operator asked for that cannot be done as asked; the message says what to do. */
export class CellBackupError extends Error {
  constructor(
    readonly code: CellBackupErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CellBackupError';
  }
}

export interface CellBackupInit {
  readonly cellId: string;
  /** The store adapter's name for the header (`level`, `redis`). */
  readonly source: string;
  /** When the backup begins (ISO 8601): the caller's clock. */
  readonly createdAt: string;
  /** The cell's mesh key file (base64), to come back with the same identity. */
  readonly meshKey?: string | undefined;
  /**
   * Read from one snapshot while the cell runs (the store's `snapshotScan`); otherwise page by
   * page, which is consistent only when nothing writes (a stopped cell).
   */
  readonly snapshot: boolean;
  readonly onProgress?: ((entries: number, bytes: number) => void) | undefined;
}

/** Whether `store` can be backed up while the cell writes to it. */
export function canSnapshot(store: Store): boolean {
  return store.snapshotScan !== undefined;
}

/** Writes the whole store to `output` as a backup file; resolves with what was written. */
export async function backupCellStore(store: Store, output: Writable, init: CellBackupInit): Promise<BackupWriteTotals> {
  let entries: AsyncIterable<[string, string]>;
  let keyLayout = KEY_LAYOUT_VERSION;
  if (init.snapshot) {
    if (store.snapshotScan === undefined) {
      throw new CellBackupError('SNAPSHOT_UNSUPPORTED', `the ${init.source} store cannot be read from a snapshot while the cell runs: back it up with the store's own tools, or stop the cell and run \`cellmesh backup\` (docs/operations.md, "Backup and restore")`);
    }
    // A running cell upgraded its store before it served: the layout is this code's.
    entries = store.snapshotScan(WHOLE_STORE, BACKUP_PAGE_ENTRIES);
  } else {
    // A stopped cell's store may be of an earlier layout (never opened by this version): say which.
    const stored = await store.get(keys.layoutVersion());
    keyLayout = stored === undefined ? 1 : Number(stored);
    entries = scan(store, WHOLE_STORE, BACKUP_PAGE_ENTRIES);
  }
  const header: Omit<BackupHeader, 'format' | 'formatVersion'> = {
    cellId: init.cellId,
    keyLayout,
    createdAt: init.createdAt,
    source: init.source,
    ...(init.meshKey === undefined ? {} : { meshKey: init.meshKey }),
  };
  return writeBackup(output, header, entries, init.onProgress);
}

export interface CellRestoreInit {
  /** The cell the store belongs to: a backup of another cell is refused. */
  readonly cellId: string;
  /** The file's name in messages. */
  readonly name: string;
  /** Deletes everything in the store first; without it a store that holds anything is refused. */
  readonly force: boolean;
  readonly onProgress?: ((entries: number) => void) | undefined;
}

/** What a backup file holds, checked to its end: its header and its entry count. */
export async function verifyBackup(input: Readable, name: string, onProgress?: (entries: number) => void): Promise<{ header: BackupHeader; entries: number }> {
  const reader = await openBackup(input, name);
  try {
    const entries = reader.entries();
    let count = 0;
    for (;;) {
      const next = await entries.next();
      if (next.done === true) return { header: reader.header, entries: next.value.entries };
      count += 1;
      if (count % RESTORE_BATCH_ENTRIES === 0) onProgress?.(count);
    }
  } finally {
    await reader.close();
  }
}

/** Refuses a header this cell cannot restore: another cell's, or a key layout newer than this code's. */
export function checkRestorable(header: BackupHeader, cellId: string, name: string): void {
  if (header.keyLayout > KEY_LAYOUT_VERSION) {
    throw new CellBackupError('BACKUP_LAYOUT_NEWER', `${name} holds key layout ${header.keyLayout}; this cellmesh reads layout ${KEY_LAYOUT_VERSION}: restore it with the cellmesh version that wrote it (or a newer one)`);
  }
  if (header.cellId !== cellId) {
    throw new CellBackupError('BACKUP_OTHER_CELL', `${name} is a backup of cell ${header.cellId}, and the config is of cell ${cellId}: restore it with that cell's config (two cells with one cell's data would claim the same merchants)`);
  }
}

/**
 * Writes every entry of the backup in `input` into `store`, batch by batch, after checking the
 * header and that the store is empty (or, with `force`, emptying it). An earlier key layout is
 * restored as it is: the cell upgrades it when it opens the store (key-layout.ts). If the file
 * turns out corrupt midway, the store holds part of it and the error says so.
 */
export async function restoreCellStore(store: Store, input: Readable, init: CellRestoreInit): Promise<{ header: BackupHeader; entries: number; deleted: number }> {
  const reader = await openBackup(input, init.name);
  try {
    checkRestorable(reader.header, init.cellId, init.name);
    const deleted = init.force ? await deleteRange(store, WHOLE_STORE) : 0;
    if (!init.force && (await store.range({ ...WHOLE_STORE, limit: 1 })).length > 0) {
      throw new CellBackupError('RESTORE_TARGET_NOT_EMPTY', 'the target store is not empty: restore into a fresh one, or pass --force to delete everything in it first');
    }
    let batch: StoreOp[] = [];
    let batchChars = 0;
    let written = 0;
    const entries = reader.entries();
    try {
      for (;;) {
        const next = await entries.next();
        if (next.done !== true) {
          const [key, value] = next.value;
          batch.push({ type: 'put', key, value });
          batchChars += key.length + value.length;
        }
        if (batch.length > 0 && (next.done === true || batch.length >= RESTORE_BATCH_ENTRIES || batchChars >= RESTORE_BATCH_CHARS)) {
          await store.write(batch);
          written += batch.length;
          init.onProgress?.(written);
          batch = [];
          batchChars = 0;
        }
        if (next.done === true) return { header: reader.header, entries: next.value.entries, deleted };
      }
    } catch (error) {
      if (written > 0 && error instanceof Error) {
        error.message += ` (the store now holds the first ${written} entries of the backup: restore a sound file with --force)`;
      }
      throw error;
    }
  } finally {
    await reader.close();
  }
}
