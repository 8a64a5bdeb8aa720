/**
 * Backup and restore of a cell's store as an operator runs them (docs/operations.md, "Backup and
 * restore"): a cell with history is stopped, backed up with `cellmesh backup`, restored with
 * `cellmesh restore` into a fresh data directory, and a cell started there serves the whole
 * history and goes on numbering where it stopped. Files cut short or changed, stores that hold
 * data, a running cell's store and a mesh key that differs are refused with one clear line.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { KEY_LAYOUT_VERSION } from '../cell/messaging/key-layout.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { loadOrCreatePeerKey } from '../mesh/peer-key-file.js';
import { silentLogger } from '../platform/logger.js';
import { LevelStore } from '../platform/store/index.js';
import { runCli } from './cli-process.js';
import { CLUSTER_SECRET, Cleanup, SECRET, TENANT, sendMessage, tokenFor, type RawClient } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CELL = 'backup-cell';
const CONV = 'm1:alice';
const OTHER_CONV = 'm2:carol';

/** A standalone cell's config (LevelDB in `directory`): merchant m1 with agent bob at a desk, and m2. */
function cellConfig(directory: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cell: { id: CELL },
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'level', directory },
    tenants: [{ id: TENANT, secret: SECRET, merchants: [{ id: 'm1', agents: [{ id: 'bob', name: 'Bob' }] }, { id: 'm2' }] }],
    limits: { ratePerSecond: 10_000, rateBurst: 10_000 },
    log: { level: 'silent' },
    ...extra,
  };
}

async function writeConfig(file: string, config: Record<string, unknown>): Promise<string> {
  await writeFile(file, JSON.stringify(config));
  return file;
}

async function start(config: Record<string, unknown>): Promise<{ cell: RunningCell; url: string }> {
  const cell = await startCell({ config: parseCellConfig(config), logger: silentLogger });
  cleanup.add(() => cell.stop());
  return { cell, url: `ws://127.0.0.1:${cell.port}` };
}

/** What the parties see of the cell's state: alice's history and inbox, carol's history, bob's desk. */
async function observe(url: string): Promise<{ alice: RawClient; bob: RawClient; history: unknown; inbox: unknown; other: unknown; desk: unknown }> {
  const bob = await cleanup.client(url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
  const alice = await cleanup.client(url, await tokenFor({ user: 'alice', device: 'phone' }));
  const carol = await cleanup.client(url, await tokenFor({ user: 'carol', device: 'phone' }));
  const history = await alice.request({ op: 'history', id: 'h', conv: CONV });
  const inbox = await alice.request({ op: 'inbox', id: 'i' });
  const other = await carol.request({ op: 'history', id: 'h', conv: OTHER_CONV });
  const desk = await bob.request({ op: 'desk', id: 'd' });
  await carol.close();
  return { alice, bob, history, inbox, other, desk };
}

function bodies(history: unknown): Array<[number, string, string]> {
  return (history as { messages: Array<{ seq: number; role: string; body: string }> }).messages.map((message) => [message.seq, message.role, message.body]);
}

describe('cellmesh backup and restore', () => {
  test('a cell restored from a backup serves its whole history, cursors and desk, and numbers new messages on', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const original = cellConfig(join(root, 'original'));
    const restoredConfig = cellConfig(join(root, 'restored'));
    const originalFile = await writeConfig(join(root, 'original.json'), original);
    const restoredFile = await writeConfig(join(root, 'restored.json'), restoredConfig);
    const backup = join(root, 'cell.backup.gz');

    // History: a consultation of alice with bob, read cursors, and a conversation of another merchant.
    const first = await start(original);
    const bob = await cleanup.client(first.url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
    const alice = await cleanup.client(first.url, await tokenFor({ user: 'alice', device: 'phone' }));
    await sendMessage(alice, CONV, 'a-1', 'my order never came');
    await bob.until(() => bob.messages(CONV).some((message) => message.body === 'my order never came'), { what: 'bob to get the message' });
    await sendMessage(bob, CONV, 'b-1', 'let me look');
    const last = await sendMessage(alice, CONV, 'a-2', 'thanks');
    expect(await alice.request({ op: 'read', id: 'r', conv: CONV, seq: last.seq })).toMatchObject({ t: 'ok' });
    const carol = await cleanup.client(first.url, await tokenFor({ user: 'carol', device: 'phone' }));
    for (const [index, body] of ['one', 'two', 'three'].entries()) await sendMessage(carol, OTHER_CONV, `c-${index}`, body);
    const before = await observe(first.url);
    expect(bodies(before.history).map(([, , body]) => body)).toEqual(expect.arrayContaining(['my order never came', 'Bob is here to help.', 'let me look', 'thanks']));
    expect(before.desk).toMatchObject({ t: 'desk' });
    await first.cell.stop();

    const backedUp = await runCli(['backup', '--config', originalFile, '--out', backup]);
    expect(backedUp.stderr).toBe('');
    expect(backedUp.code).toBe(0);
    expect(backedUp.stdout).toMatch(new RegExp(`^backed up cell ${CELL}: \\d+ entries, [\\d.]+ KiB to ${backup} in [\\d.]+ s\\n$`));
    // Never overwritten.
    expect(await runCli(['backup', '--config', originalFile, '--out', backup])).toMatchObject({ code: 2, stderr: `cellmesh backup: ${backup} exists already; choose another file\n` });

    // A store that holds anything is refused (here: the original itself).
    const intoFull = await runCli(['restore', '--config', originalFile, '--from', backup]);
    expect(intoFull.code).toBe(1);
    expect(intoFull.stderr).toBe('cellmesh restore: the target store is not empty: restore into a fresh one, or pass --force to delete everything in it first (RESTORE_TARGET_NOT_EMPTY)\n');

    const restored = await runCli(['restore', '--config', restoredFile, '--from', backup]);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    expect(restored.stdout).toMatch(new RegExp(`^restored cell ${CELL} from ${backup} \\(backed up [^)]+\\): \\d+ entries into ${join(root, 'restored')} in [\\d.]+ s\\n$`));
    const entriesOf = (text: string): number => Number(/: (\d+) entries/.exec(text)?.[1]);
    expect(entriesOf(restored.stdout)).toBe(entriesOf(backedUp.stdout));

    const second = await start(restoredConfig);
    const after = await observe(second.url);
    expect(after.history).toEqual(before.history);
    expect(after.inbox).toEqual(before.inbox);
    expect(after.other).toEqual(before.other);
    expect(after.desk).toEqual(before.desk);

    // The restored cell refuses to be restored over while it runs: its directory is locked.
    const whileRunning = await runCli(['restore', '--config', restoredFile, '--from', backup, '--force']);
    expect(whileRunning.code).toBe(2);
    expect(whileRunning.stderr).toBe(
      `cellmesh restore: ${join(root, 'restored')} is locked by another process: the cell is running. Stop it first, or back it up while it runs with GET /v1/admin/backup (docs/operations.md, "Backup and restore")\n`,
    );

    // New messages take the next seqs, and reach the agent of the restored desk.
    const next = await sendMessage(after.alice, CONV, 'a-3', 'are you still there?');
    expect(next.seq).toBe(last.seq + 1);
    await after.bob.until(() => after.bob.messages(CONV).some((message) => message.body === 'are you still there?'), { what: 'bob to get the new message' });
    expect((await sendMessage(after.bob, CONV, 'b-2', 'yes')).seq).toBe(last.seq + 2);
    // A resend of a cmid from before the backup answers its original seq: the idempotency records came back too.
    expect((await sendMessage(after.alice, CONV, 'a-2', 'thanks')).seq).toBe(last.seq);
  });

  test('refuses a file cut short, a changed one, and a file that is not a backup, leaving the target store untouched', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const source = join(root, 'source');
    const store = new LevelStore({ directory: source });
    await store.open();
    // Enough entries for several gzip blocks, and a key and value that only JSON escaping keeps on one line.
    await store.write(Array.from({ length: 3000 }, (_, index) => ({ type: 'put' as const, key: `m/${TENANT}/m1:x/${String(index).padStart(16, '0')}`, value: JSON.stringify({ body: `line\n${index}\u2028` }) })));
    await store.write([{ type: 'put', key: 'odd\n\uD800key', value: 'a\r\nb' }]);
    await store.close();
    const sourceFile = await writeConfig(join(root, 'source.json'), cellConfig(source));
    const targetFile = await writeConfig(join(root, 'target.json'), cellConfig(join(root, 'target')));
    const backup = join(root, 'sound.gz');
    expect((await runCli(['backup', '--config', sourceFile, '--out', backup])).code).toBe(0);
    const bytes = await readFile(backup);

    const refusal = async (name: string, contents: Buffer): Promise<string> => {
      const file = join(root, name);
      await writeFile(file, contents);
      const run = await runCli(['restore', '--config', targetFile, '--from', file]);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr.split('\n')).toHaveLength(2);
      return run.stderr;
    };
    expect(await refusal('cut.gz', bytes.subarray(0, Math.floor(bytes.length / 2)))).toMatch(/^cellmesh restore: \S+cut\.gz is cut short \(its gzip stream ends early/);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    expect(await refusal('flipped.gz', flipped)).toMatch(/^cellmesh restore: \S+flipped\.gz is (corrupt|cut short)/);
    // A sound gzip stream whose contents were changed: only the checksum tells.
    const text = gunzipSync(bytes).toString('utf8');
    expect(await refusal('changed.gz', gzipSync(text.replace(`m1:x/${'17'.padStart(16, '0')}`, `m1:x/${'18'.padStart(16, '0')}`)))).toContain('changed.gz is corrupt: its checksum does not match its contents (BACKUP_INVALID)');
    const lines = text.split('\n');
    expect(await refusal('no-end.gz', gzipSync(lines.slice(0, -2).join('\n') + '\n'))).toContain('no-end.gz is cut short: it ends after 3001 entries without its closing line');
    expect(await refusal('other.gz', gzipSync('{"hello":"world"}\n'))).toContain('other.gz is not a cellmesh backup');
    expect(await refusal('plain.txt', Buffer.from('not gzip at all'))).toContain('plain.txt is corrupt');
    // A sound file of a later key layout than this cellmesh knows (checksum made anew).
    const newer = [lines[0]!.replace(/"keyLayout":\d+/, '"keyLayout":9'), ...lines.slice(1, -2)].map((line) => `${line}\n`).join('');
    const closing = JSON.stringify({ end: true, entries: 3001, sha256: createHash('sha256').update(newer).digest('hex') });
    expect(await refusal('newer.gz', gzipSync(`${newer}${closing}\n`))).toContain(`newer.gz holds key layout 9; this cellmesh reads layout ${KEY_LAYOUT_VERSION}: restore it with the cellmesh version that wrote it (or a newer one) (BACKUP_LAYOUT_NEWER)`);

    // None of them wrote anything: the sound file restores into the same target, every entry with it.
    const restored = await runCli(['restore', '--config', targetFile, '--from', backup]);
    expect(restored.code, restored.stderr).toBe(0);
    const target = new LevelStore({ directory: join(root, 'target') });
    await target.open();
    cleanup.add(() => target.close());
    expect(await target.get('odd\n\uD800key')).toBe('a\r\nb');
    expect(await target.get(`m/${TENANT}/m1:x/${String(17).padStart(16, '0')}`)).toBe(JSON.stringify({ body: 'line\n17\u2028' }));
    expect((await target.range({ gte: '', lt: '\uFFFF', limit: 10_000 })).length).toBe(3001);
  });

  test('the mesh key travels with the backup; another key at the target is replaced only with --force', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const mesh = { mesh: { clusterSecret: CLUSTER_SECRET } };
    const source = join(root, 'source');
    const store = new LevelStore({ directory: source });
    await store.open();
    await store.write([{ type: 'put', key: 'v/layout', value: '2' }]);
    await store.close();
    await loadOrCreatePeerKey(join(source, 'mesh-peer.key'));
    const sourceFile = await writeConfig(join(root, 'source.json'), cellConfig(source, mesh));
    const targetDirectory = join(root, 'target');
    const targetFile = await writeConfig(join(root, 'target.json'), cellConfig(targetDirectory, mesh));
    const backup = join(root, 'cell.gz');
    const backedUp = await runCli(['backup', '--config', sourceFile, '--out', backup]);
    expect(backedUp.code, backedUp.stderr).toBe(0);
    expect(backedUp.stdout).toContain('(with its mesh key: keep the file as secret as the key)');

    // Another key at the target: refused before anything is written.
    await loadOrCreatePeerKey(join(targetDirectory, 'mesh-peer.key'));
    const refused = await runCli(['restore', '--config', targetFile, '--from', backup]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('holds another mesh key than the backup\'s: the restored cell would join as another peer. Move it away, or pass --force to replace it');
    const forced = await runCli(['restore', '--config', targetFile, '--from', backup, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain(`mesh key written to ${join(targetDirectory, 'mesh-peer.key')}`);
    expect(await readFile(join(targetDirectory, 'mesh-peer.key'))).toEqual(await readFile(join(source, 'mesh-peer.key')));
  });
});
