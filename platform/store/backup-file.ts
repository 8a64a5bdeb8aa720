import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { z } from 'zod';

/**
 * The backup file of a store: every entry, in key order, in one gzip stream of JSON lines.
 *
 *   line 1      {"format":"cellmesh-backup","formatVersion":1,"cellId":…,"keyLayout":…,"createdAt":…,"source":…}
 *   lines 2…n   ["<key>","<value>"]                 one entry per line, ascending by key
 *   last line   {"end":true,"entries":n,"sha256":"<hex>"}
 *
 * The closing line counts the entries and holds the SHA-256 of every byte before it, so a file
 * cut short (no closing line), one with a line lost, or one changed anywhere is refused. The count
 * is at the end, not in the header, because the file is written in one pass over the store as
 * it is read (a cell may hold gigabytes; nothing holds all entries in memory). JSON escapes every
 * line break and lone surrogate, so any key and value round-trips on one line.
 */
export const BACKUP_FORMAT = 'cellmesh-backup';
export const BACKUP_FORMAT_VERSION = 1;

/** The longest line read back (a value of the store is far smaller: an attachment chunk is 256 KiB). */
const MAX_LINE_BYTES = 64 * 1024 * 1024;
/** Bytes of lines gathered before they go to gzip (fewer, larger writes). */
const WRITE_CHUNK_BYTES = 256 * 1024;

export const BackupHeader = z.object({
  format: z.literal(BACKUP_FORMAT),
  formatVersion: z.number().int().positive(),
  /** The cell whose store this is. */
  cellId: z.string().min(1),
  /** The layout version of the store's keys (cell/messaging/key-layout.ts). */
  keyLayout: z.number().int().positive(),
  /** When the backup began (ISO 8601). */
  createdAt: z.string(),
  /** The store adapter it was read from (`level`, `redis`): for the operator's information. */
  source: z.string(),
  /** The cell's mesh identity (its libp2p key file, base64), when it has one and it was included. */
  meshKey: z.string().optional(),
});
export type BackupHeader = z.infer<typeof BackupHeader>;

const BackupTrailer = z.object({ end: z.literal(true), entries: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });

const Entry = z.tuple([z.string(), z.string()]);

/** A backup file that cannot be restored: not a backup, of an unknown version, cut short or changed. */
export class BackupFileError extends Error {
  readonly code = 'BACKUP_INVALID';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackupFileError';
  }
}

export interface BackupWriteTotals {
  entries: number;
  /** Bytes of the file written (compressed). */
  bytes: number;
}

/**
 * Writes `header`, then every entry of `entries`, then the closing line, gzipped, to `output`
 * (which is ended). Resolves once everything is written; `onEntries` hears the running count.
 */
export async function writeBackup(
  output: Writable,
  header: Omit<BackupHeader, 'format' | 'formatVersion'>,
  entries: AsyncIterable<readonly [key: string, value: string]>,
  onEntries?: (entries: number, bytes: number) => void,
): Promise<BackupWriteTotals> {
  const totals: BackupWriteTotals = { entries: 0, bytes: 0 };
  const hash = createHash('sha256');
  async function* lines(): AsyncGenerator<Buffer> {
    const first = Buffer.from(`${JSON.stringify({ format: BACKUP_FORMAT, formatVersion: BACKUP_FORMAT_VERSION, ...header })}\n`);
    hash.update(first);
    yield first;
    let pending: string[] = [];
    let pendingChars = 0;
    const flush = (): Buffer => {
      const chunk = Buffer.from(pending.join(''));
      hash.update(chunk);
      pending = [];
      pendingChars = 0;
      return chunk;
    };
    for await (const [key, value] of entries) {
      const line = `${JSON.stringify([key, value])}\n`;
      pending.push(line);
      pendingChars += line.length;
      totals.entries += 1;
      if (pendingChars >= WRITE_CHUNK_BYTES) {
        yield flush();
        onEntries?.(totals.entries, totals.bytes);
      }
    }
    if (pending.length > 0) yield flush();
    yield Buffer.from(`${JSON.stringify({ end: true, entries: totals.entries, sha256: hash.digest('hex') })}\n`);
  }
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      totals.bytes += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(Readable.from(lines()), createGzip(), counter, output);
  onEntries?.(totals.entries, totals.bytes);
  return totals;
}

/** An open backup file: its header, then its entries, checked against the closing line at the end. */
export interface BackupReader {
  readonly header: BackupHeader;
  /**
   * Every entry in file order. Throws BackupFileError when the file turns out cut short or changed
   * (at the end at the latest: what was yielded before is then not to be trusted).
   */
  entries(): AsyncGenerator<[key: string, value: string], { entries: number }>;
  /** Stops reading and releases the input (when the entries are not read to their end). */
  close(): Promise<void>;
}

/**
 * Reads the header of the backup in `input` (a gzip stream as `writeBackup` wrote it) and returns
 * a reader of its entries. Refuses anything that is not a cellmesh backup of a known format version.
 */
export async function openBackup(input: Readable, name: string): Promise<BackupReader> {
  const hash = createHash('sha256');
  const gunzip = createGunzip();
  // An error of the input (a read error) destroys the gunzip with it, so the reading ends there.
  pipeline(input, gunzip).catch(() => undefined);
  const lines = splitLines(gunzip, name);
  const close = async (): Promise<void> => {
    await lines.return(undefined);
  };
  try {
    const first = await nextLine(lines, name);
    if (first === undefined) throw new BackupFileError(`${name} is empty: not a cellmesh backup`);
    hash.update(first);
    return { header: parseHeader(first, name), entries: () => readEntries(lines, hash, name), close };
  } catch (error) {
    await close();
    throw error;
  }
}

function parseHeader(line: Buffer, name: string): BackupHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(line.toString('utf8'));
  } catch {
    throw new BackupFileError(`${name} is not a cellmesh backup (its first line is not JSON)`);
  }
  const format = (raw as { format?: unknown } | null)?.format;
  if (format !== BACKUP_FORMAT) throw new BackupFileError(`${name} is not a cellmesh backup (no "format":"${BACKUP_FORMAT}" in its first line)`);
  const version = (raw as { formatVersion?: unknown }).formatVersion;
  if (version !== BACKUP_FORMAT_VERSION) {
    throw new BackupFileError(`${name} has backup format version ${String(version)}; this cellmesh reads version ${BACKUP_FORMAT_VERSION} (restore it with the cellmesh that wrote it)`);
  }
  const parsed = BackupHeader.safeParse(raw);
  if (!parsed.success) throw new BackupFileError(`${name} has an invalid header: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
  return parsed.data;
}

async function* readEntries(lines: AsyncGenerator<Buffer>, hash: Hash, name: string): AsyncGenerator<[string, string], { entries: number }> {
  let entries = 0;
  for (;;) {
    const line = await nextLine(lines, name);
    if (line === undefined) throw new BackupFileError(`${name} is cut short: it ends after ${entries} entries without its closing line (an interrupted copy or a full disk?)`);
    let raw: unknown;
    try {
      raw = JSON.parse(line.toString('utf8'));
    } catch {
      throw new BackupFileError(`${name} is corrupt: line ${entries + 2} is not JSON`);
    }
    if (Array.isArray(raw)) {
      const entry = Entry.safeParse(raw);
      if (!entry.success) throw new BackupFileError(`${name} is corrupt: line ${entries + 2} is not a [key, value] pair of strings`);
      hash.update(line);
      entries += 1;
      yield entry.data;
      continue;
    }
    const trailer = BackupTrailer.safeParse(raw);
    if (!trailer.success) throw new BackupFileError(`${name} is corrupt: line ${entries + 2} is neither an entry nor the closing line`);
    if (trailer.data.entries !== entries) throw new BackupFileError(`${name} is corrupt: it holds ${entries} entries where its closing line counts ${trailer.data.entries}`);
    if (trailer.data.sha256 !== hash.digest('hex')) throw new BackupFileError(`${name} is corrupt: its checksum does not match its contents`);
    if ((await nextLine(lines, name)) !== undefined) throw new BackupFileError(`${name} is corrupt: there are lines after its closing line`);
    return { entries };
  }
}

/** The next line (with its newline), or undefined at the end; gzip errors become BackupFileError. */
async function nextLine(lines: AsyncGenerator<Buffer>, name: string): Promise<Buffer | undefined> {
  try {
    const next = await lines.next();
    return next.done === true ? undefined : next.value;
  } catch (error) {
    if (error instanceof BackupFileError) throw error;
    const code = (error as { code?: unknown }).code;
    if (code === 'Z_BUF_ERROR') throw new BackupFileError(`${name} is cut short (its gzip stream ends early: an interrupted copy or a full disk?)`, { cause: error });
    if (typeof code === 'string' && code.startsWith('Z_')) throw new BackupFileError(`${name} is corrupt (${(error as Error).message}): not a gzip stream as cellmesh writes it`, { cause: error });
    throw error;
  }
}

/** The lines of a byte stream, each with its trailing newline; a last line without one is yielded as is. */
async function* splitLines(bytes: AsyncIterable<Buffer>, name: string): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of bytes) {
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, newline + 1);
      yield pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
      pending = [];
      pendingBytes = 0;
      start = newline + 1;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > MAX_LINE_BYTES) throw new BackupFileError(`${name} is corrupt: a line longer than ${MAX_LINE_BYTES} bytes`);
    }
  }
  if (pending.length > 0) yield Buffer.concat(pending);
}
