/**
 * Backup and restore of a cell's store as an operator runs them (docs/operations.md, "Backup and
 * restore"): a cell with history is stopped, backed up with `cellmesh backup`, restored with
 * `cellmesh restore` into a fresh data directory, and a cell started there serves the whole
 * history and goes on numbering where it stopped. Files cut short or changed, stores that hold
 * data, a running cell's store and a mesh key that differs are refused with one clear line.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, test } from 'vitest';
import { parseCellConfig } from '../assembly/config.js';
import { KEY_LAYOUT_VERSION } from '../cell/messaging/key-layout.js';
import { startCell, type RunningCell } from '../assembly/process-cell.js';
import { outboxKeys } from '../mesh/forward-store.js';
import { loadOrCreatePeerKey } from '../mesh/peer-key-file.js';
import { silentLogger } from '../platform/logger.js';
import { LevelStore } from '../platform/store/index.js';
import { runCli, startCliTestCell } from './cli-process.js';
import { redisServerMissing, startRedisServer } from '../testing/redis-server.js';
import { ADMIN_TOKEN, CLUSTER_SECRET, Cleanup, SECRET, TENANT, errorCodeOf, eventually, httpRequest, sendMessage, tokenFor, type RawClient, type SentFrame } from './harness.js';

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

/** Every message of carol's conversation, oldest first, through `history` pages. */
async function allMessages(client: RawClient): Promise<unknown[]> {
  const messages: Array<{ seq: number }> = [];
  for (let before: number | undefined; ; ) {
    const page = (await client.request({ op: 'history', id: `h-${before ?? 'end'}`, conv: OTHER_CONV, limit: 200, ...(before === undefined ? {} : { before }) })) as unknown as { messages: Array<{ seq: number }>; hasMore: boolean };
    messages.unshift(...page.messages);
    if (!page.hasMore || page.messages.length === 0) return messages;
    before = page.messages[0]!.seq;
  }
}

/** History: a consultation of alice with bob, read cursors, and a conversation of another merchant; then what the parties see. */
async function makeHistory(url: string): Promise<{ last: SentFrame; before: Awaited<ReturnType<typeof observe>> }> {
  const bob = await cleanup.client(url, await tokenFor({ user: 'bob', merchant: 'm1', device: 'desk' }));
  const alice = await cleanup.client(url, await tokenFor({ user: 'alice', device: 'phone' }));
  await sendMessage(alice, CONV, 'a-1', 'my order never came');
  await bob.until(() => bob.messages(CONV).some((message) => message.body === 'my order never came'), { what: 'bob to get the message' });
  await sendMessage(bob, CONV, 'b-1', 'let me look');
  const last = await sendMessage(alice, CONV, 'a-2', 'thanks');
  expect(await alice.request({ op: 'read', id: 'r', conv: CONV, seq: last.seq })).toMatchObject({ t: 'ok' });
  const carol = await cleanup.client(url, await tokenFor({ user: 'carol', device: 'phone' }));
  for (const [index, body] of ['one', 'two', 'three'].entries()) await sendMessage(carol, OTHER_CONV, `c-${index}`, body);
  const before = await observe(url);
  expect(bodies(before.history).map(([, , body]) => body)).toEqual(expect.arrayContaining(['my order never came', 'Bob is here to help.', 'let me look', 'thanks']));
  expect(before.desk).toMatchObject({ t: 'desk' });
  return { last, before };
}

/** New messages take the next seqs after `last` and reach the agent of the restored desk; an old cmid answers its seq. */
async function expectToGoOn(after: Awaited<ReturnType<typeof observe>>, last: SentFrame): Promise<void> {
  const next = await sendMessage(after.alice, CONV, 'a-3', 'are you still there?');
  expect(next.seq).toBe(last.seq + 1);
  await after.bob.until(() => after.bob.messages(CONV).some((message) => message.body === 'are you still there?'), { what: 'bob to get the new message' });
  expect((await sendMessage(after.bob, CONV, 'b-2', 'yes')).seq).toBe(last.seq + 2);
  // A resend of a cmid from before the backup answers its original seq: the idempotency records came back too.
  expect((await sendMessage(after.alice, CONV, 'a-2', 'thanks')).seq).toBe(last.seq);
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

    const first = await start(original);
    const { last, before } = await makeHistory(first.url);
    await first.cell.stop();

    const backedUp = await runCli(['backup', '--config', originalFile, '--out', backup]);
    expect(backedUp.stderr).toBe('');
    expect(backedUp.code).toBe(0);
    expect(backedUp.stdout).toMatch(new RegExp(`^backed up cell ${CELL} from ${join(root, 'original')}: \\d+ entries, [\\d.]+ KiB to ${backup} in [\\d.]+ s\\n$`));
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

    await expectToGoOn(after, last);
  });

  test('a running cell is backed up from one snapshot of its store while it goes on writing', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const original = cellConfig(join(root, 'original'), { admin: { token: ADMIN_TOKEN } });
    const restoredConfig = cellConfig(join(root, 'restored'));
    const restoredFile = await writeConfig(join(root, 'restored.json'), restoredConfig);
    const backup = join(root, 'running.backup.gz');
    const first = await start(original);
    const httpUrl = first.url.replace('ws://', 'http://');
    const carol = await cleanup.client(first.url, await tokenFor({ user: 'carol', device: 'phone' }));
    for (let index = 1; index <= 100; index++) await sendMessage(carol, OTHER_CONV, `c-${index}`, `message ${index}`);

    expect(errorCodeOf(await httpRequest('GET', `${httpUrl}/v1/admin/backup`, { token: 'wrong' }))).toBe('ADMIN_FORBIDDEN');
    // Carol keeps writing while the backup streams.
    let sending = true;
    let sent = 100;
    const writer = (async () => {
      while (sending) await sendMessage(carol, OTHER_CONV, `c-${++sent}`, `message ${sent}`);
    })();
    const backedUp = await runCli(['backup', '--cell', httpUrl, '--admin-token', ADMIN_TOKEN, '--out', backup]);
    sending = false;
    await writer;
    expect(backedUp.stderr).toBe('');
    expect(backedUp.stdout).toMatch(new RegExp(`^backed up running cell ${CELL}: \\d+ entries, [\\d.]+ KiB to ${backup} in [\\d.]+ s\\n$`));
    const originalHistory = await allMessages(carol);

    expect((await runCli(['restore', '--config', restoredFile, '--from', backup])).code).toBe(0);
    const second = await start(restoredConfig);
    const restoredCarol = await cleanup.client(second.url, await tokenFor({ user: 'carol', device: 'phone' }));
    const restoredHistory = await allMessages(restoredCarol);
    // A snapshot: every message up to some point, none missing, each as it was written.
    expect(restoredHistory.length).toBeGreaterThanOrEqual(100);
    expect(restoredHistory).toEqual(originalHistory.slice(0, restoredHistory.length));
    expect((await sendMessage(restoredCarol, OTHER_CONV, 'after', 'after the restore')).seq).toBe(restoredHistory.length + 1);
  });

  test('one backup streams at a time; a client that goes away ends its stream and frees the next', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const directory = join(root, 'cell');
    const store = new LevelStore({ directory });
    await store.open();
    // More than the sockets' buffers hold (random values do not compress): the first download stalls on backpressure.
    for (let page = 0; page < 16; page++) {
      await store.write(Array.from({ length: 500 }, (_, index) => ({ type: 'put' as const, key: `fill/${page}/${index}`, value: randomBytes(768).toString('base64') })));
    }
    await store.close();
    const { cell, url } = await start(cellConfig(directory, { admin: { token: ADMIN_TOKEN } }));
    const httpUrl = url.replace('ws://', 'http://');
    const backupUrl = `${httpUrl}/v1/admin/backup`;
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };

    const stalled = new AbortController();
    const first = await fetch(backupUrl, { headers, signal: stalled.signal });
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toBe('application/gzip');
    const second = await httpRequest('GET', backupUrl, { token: ADMIN_TOKEN });
    expect(second.status).toBe(409);
    expect(errorCodeOf(second)).toBe('BACKUP_IN_PROGRESS');
    stalled.abort();
    // The next backup runs whole once the first one's client is gone.
    let answer: Response | undefined;
    await eventually(async () => {
      answer = await fetch(backupUrl, { headers });
      if (answer.status === 200) return true;
      await answer.body?.cancel();
      return false;
    }, 'the stalled backup to end');
    const file = join(root, 'second.gz');
    await writeFile(file, Buffer.from(await answer!.arrayBuffer()));
    const check = await runCli(['restore', '--config', await writeConfig(join(root, 'restored.json'), cellConfig(join(root, 'restored'))), '--from', file]);
    expect(check.stderr).toBe('');
    // The 8,000 filler entries and what the cell itself keeps (the key layout, its agents).
    expect(Number(/: (\d+) entries into/.exec(check.stdout)?.[1])).toBeGreaterThan(8_000);
    await cell.stop();
  });

  test('a store without snapshots (memory, Redis) refuses a backup while the cell runs', async () => {
    const { cell, url } = await startCliTestCell('memory-cell');
    cleanup.add(() => cell.stop());
    const answer = await httpRequest('GET', `${url}/v1/admin/backup`, { token: ADMIN_TOKEN });
    expect(answer.status).toBe(501);
    expect(errorCodeOf(answer)).toBe('BACKUP_UNSUPPORTED');
  });

  test('refuses a file cut short, a changed one, one that is not a backup, and another cell\'s, leaving the target store untouched', async () => {
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

    // A sound file of another cell.
    const otherCell = await writeConfig(join(root, 'other-cell.json'), { ...cellConfig(join(root, 'target')), cell: { id: 'another-cell' } });
    const intoOther = await runCli(['restore', '--config', otherCell, '--from', backup]);
    expect(intoOther.code).toBe(1);
    expect(intoOther.stderr).toContain(`is a backup of cell ${CELL}, and the config is of cell another-cell: restore it with that cell's config`);

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

  test('the mesh key travels with the backup (another key at the target is replaced only with --force), and the outbox gets a new epoch', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const mesh = { mesh: { clusterSecret: CLUSTER_SECRET } };
    const source = join(root, 'source');
    const store = new LevelStore({ directory: source });
    await store.open();
    await store.write([
      { type: 'put', key: 'v/layout', value: '2' },
      { type: 'put', key: outboxKeys.epoch, value: JSON.stringify({ id: 'old-outbox', generation: 3 }) },
      { type: 'put', key: outboxKeys.entry('cell-b', 7), value: JSON.stringify({ key: 'k', payload: {}, enqueuedAtMs: 1 }) },
    ]);
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
    // The outbox gets a new epoch at start (the other cells may have seen numbers above the backup's); its entries stay.
    const target = new LevelStore({ directory: targetDirectory });
    await target.open();
    cleanup.add(() => target.close());
    expect(await target.get(outboxKeys.epoch)).toBeUndefined();
    expect(await target.get(outboxKeys.entry('cell-b', 7))).toBeDefined();
    expect(await target.get('v/layout')).toBe('2');
  });
});

const redisMissing = redisServerMissing();

describe.skipIf(redisMissing !== undefined)(`cellmesh backup and restore of a Redis cell${redisMissing === undefined ? '' : ` (skipped: ${redisMissing})`}`, () => {
  test('a Redis cell restored under a fresh key prefix, and into LevelDB, serves its history and numbers on', async () => {
    const root = await cleanup.tempDir('cellmesh-backup-');
    const redis = await startRedisServer();
    cleanup.add(() => redis.stop());
    const onRedis = (keyPrefix: string): Record<string, unknown> => cellConfig('', { store: { kind: 'redis', redis: { url: redis.url, keyPrefix } }, admin: { token: ADMIN_TOKEN } });
    const original = onRedis('cell-a:');
    const restoredConfig = onRedis('restored:');
    const originalFile = await writeConfig(join(root, 'original.json'), original);
    const restoredFile = await writeConfig(join(root, 'restored.json'), restoredConfig);
    const onLevel = cellConfig(join(root, 'level'));
    const levelFile = await writeConfig(join(root, 'level.json'), onLevel);
    const backup = join(root, 'redis.backup.gz');

    const first = await start(original);
    const { last, before } = await makeHistory(first.url);
    // No snapshot through the port: a running Redis cell is backed up with Redis's own tools.
    const running = await httpRequest('GET', `${first.url.replace('ws://', 'http://')}/v1/admin/backup`, { token: ADMIN_TOKEN });
    expect(running.status).toBe(501);
    expect(errorCodeOf(running)).toBe('BACKUP_UNSUPPORTED');
    await first.cell.stop();

    const backedUp = await runCli(['backup', '--config', originalFile, '--out', backup]);
    expect(backedUp.stderr).toBe('');
    expect(backedUp.stdout).toMatch(new RegExp(`^backed up cell ${CELL} from redis 127\\.0\\.0\\.1:${redis.port} cell-a:: \\d+ entries`));
    // The original's keys are not a fresh store.
    expect((await runCli(['restore', '--config', originalFile, '--from', backup])).stderr).toContain('the target store is not empty');
    const restored = await runCli(['restore', '--config', restoredFile, '--from', backup]);
    expect(restored.stderr).toBe('');
    expect(restored.stdout).toContain(`entries into redis 127.0.0.1:${redis.port} restored: in`);
    // One format for every store: the same file makes a LevelDB cell of it too.
    expect((await runCli(['restore', '--config', levelFile, '--from', backup])).code).toBe(0);

    for (const config of [restoredConfig, onLevel]) {
      const cell = await start(config);
      const after = await observe(cell.url);
      expect(after.history).toEqual(before.history);
      expect(after.inbox).toEqual(before.inbox);
      expect(after.other).toEqual(before.other);
      expect(after.desk).toEqual(before.desk);
      await expectToGoOn(after, last);
      await cell.cell.stop();
    }
  });
});
