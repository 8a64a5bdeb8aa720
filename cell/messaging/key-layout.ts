import { parseConversationId, type ChatMessage } from '../protocol/frames.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import { keys, prefixRange } from './keys.js';
import { conversationParty } from './principal.js';

/**
 * The layout of a cell's store keys (keys.ts) has a version, kept under `v/layout`.
 *
 * Layout 1 (no `v/layout` key) named users by id alone in read cursors (`r/`), delivery cursors
 * (`d/`) and idempotency records (`i/`), so a customer and an agent of the same id shared them.
 * Layout 2 names them by party id (principal.ts: `c:<user>`, `a:<merchant>:<user>`). A cell
 * opening a layout-1 store rewrites those keys once, before it serves (docs/operations.md,
 * "Upgrading"); a store of a later layout than this code knows is refused.
 *
 * Layout 3 no longer writes a sender's read cursor with each message: its own newest messages
 * imply it (read-cursors.ts). Layout-2 data already holds every such cursor, so the upgrade from
 * 2 writes only the version; a layout-2 binary refuses layout-3 data, whose cursors it would
 * read as lower.
 */
export const KEY_LAYOUT_VERSION = 3;

/** Keys read and rewritten per store batch while upgrading. */
const UPGRADE_PAGE_KEYS = 512;

export class KeyLayoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyLayoutError';
  }
}

/**
 * Brings the store to KEY_LAYOUT_VERSION; resolves with the number of keys rewritten. Safe to
 * run again after a crash midway (each page moves its keys atomically, and the version is
 * written last) and by several processes of one store at once (cursors merge by maximum).
 */
export async function upgradeKeyLayout(store: Store): Promise<number> {
  const stored = await store.get(keys.layoutVersion());
  const version = stored === undefined ? 1 : Number(stored);
  if (version === KEY_LAYOUT_VERSION) return 0;
  if (!Number.isInteger(version) || version > KEY_LAYOUT_VERSION) {
    throw new KeyLayoutError(`the store has key layout ${stored}; this cellmesh reads layout ${KEY_LAYOUT_VERSION} (a newer version wrote it)`);
  }
  let rewritten = 0;
  if (version === 1) for (const table of ['r', 'd', 'i'] as const) rewritten += await upgradeTable(store, table);
  await store.write([{ type: 'put', key: keys.layoutVersion(), value: String(KEY_LAYOUT_VERSION) }]);
  return rewritten;
}

/** Where the user id is among a key's '/'-separated fields, and where its conversation is. */
const FIELDS = {
  r: { user: 3, conv: 2, count: 4 }, // r/<tenant>/<conv>/<user>
  d: { user: 2, conv: 4, count: 5 }, // d/<tenant>/<user>/<device>/<conv>
  i: { user: 3, conv: 2, count: 5 }, // i/<tenant>/<conv>/<sender>/<cmid>
} as const;

async function upgradeTable(store: Store, table: keyof typeof FIELDS): Promise<number> {
  const range = prefixRange(`${table}/`);
  const fields = FIELDS[table];
  let rewritten = 0;
  let gte = range.gte;
  for (;;) {
    const page = await store.range({ gte, lt: range.lt, limit: UPGRADE_PAGE_KEYS });
    const moves: Array<{ from: string; to: string; value: string }> = [];
    for (const [key, value] of page) {
      const parts = key.split('/');
      const user = parts[fields.user];
      const conv = parts[fields.conv];
      // A party id has a ':'; a user id never has one. Keys of another shape are not ours to touch.
      if (parts.length !== fields.count || user === undefined || user.includes(':') || conv === undefined) continue;
      const parsed = parseConversationId(conv);
      if (parsed === undefined) continue;
      const role = table === 'i' ? await senderRole(store, parts[1]!, conv, value) : undefined;
      // Layout 1 kept one entry per id: the conversation's customer's unless the id is another.
      const party = conversationParty(conv, role ?? (user === parsed.customer ? 'customer' : 'agent'), user);
      parts[fields.user] = party;
      moves.push({ from: key, to: parts.join('/'), value });
    }
    if (moves.length > 0) {
      const existing = await store.getMany(moves.map((move) => move.to));
      const ops: StoreOp[] = [];
      moves.forEach((move, index) => {
        const current = existing[index];
        // Cursors only move forward; an idempotency record, once written, stays as it is.
        const value = current === undefined ? move.value : table === 'i' ? current : String(Math.max(Number(current), Number(move.value)));
        ops.push({ type: 'put', key: move.to, value }, { type: 'del', key: move.from });
      });
      await store.write(ops);
      rewritten += moves.length;
    }
    if (page.length < UPGRADE_PAGE_KEYS) return rewritten;
    gte = `${page[page.length - 1]![0]}\u0000`;
  }
}

/** The role of the sender of the message an idempotency record points at, when it is stored. */
async function senderRole(store: Store, tenant: string, conv: string, seq: string): Promise<ChatMessage['role'] | undefined> {
  const stored = await store.get(keys.message(tenant, conv, Number(seq)));
  if (stored === undefined) return undefined;
  const role = (JSON.parse(stored) as Partial<ChatMessage>).role;
  return role === 'customer' || role === 'agent' ? role : undefined;
}
