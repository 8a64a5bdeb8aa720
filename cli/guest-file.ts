import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { GuestStorage } from '../client/index.js';

/**
 * Where `cellmesh chat --guest` keeps its guests' refresh tokens, as a page keeps them in
 * `localStorage`: the same guest (and so the same conversation) comes back at the next start.
 * One file for every guest of this user, `$CELLMESH_HOME/guests.json` (`~/.cellmesh` by default),
 * readable by the user alone. A guest name ("guest", "second", ...) lets one terminal user be
 * several guests of one merchant.
 */
export function guestFilePath(): string {
  return join(process.env['CELLMESH_HOME'] ?? join(homedir(), '.cellmesh'), 'guests.json');
}

type GuestFile = Record<string, Record<string, string>>;

/** The storage of one named guest, backed by the file (read at every call: another terminal may have rotated a token). */
export function guestFileStorage(path: string, guestName: string): GuestStorage {
  const change = (edit: (entries: Record<string, string>) => void): void => {
    const file = readGuestFile(path);
    const entries = { ...file[guestName] };
    edit(entries);
    writeGuestFile(path, { ...file, [guestName]: entries });
  };
  return {
    getItem: (key) => readGuestFile(path)[guestName]?.[key] ?? null,
    setItem: (key, value) => change((entries) => void (entries[key] = value)),
    removeItem: (key) => change((entries) => void delete entries[key]),
  };
}

function readGuestFile(path: string): GuestFile {
  if (!existsSync(path)) return {};
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as GuestFile) : {};
  } catch {
    // A damaged file only costs the guests kept in it: they become new guests.
    return {};
  }
}

function writeGuestFile(path: string, file: GuestFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Written aside and renamed, so a terminal that reads at the same moment sees the old or the new file.
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
}
