/**
 * Baseline 1: the relay a Node team would build instead of a cell. Socket.IO over its default
 * `ws` engine on a plain HTTP server, JWT auth in a middleware (the same tokens as the cell),
 * and each message persisted in LevelDB with one `await db.put(key, value, { sync })` before the
 * sender gets its ack with a sequence number; then the message is relayed to the room of the
 * merchant's agents, whose cumulative receipt acks (one event naming every conversation with
 * news, conversation to seq, as the cell's multi-conversation ack) move delivery cursors.
 *
 * It keeps what such a relay usually keeps and no more: a per-conversation sequence counter and
 * the agents' cursors in memory, no idempotency (a resend is stored twice), no offline sync. That
 * makes it lighter than the cell per message, so the comparison favours the baseline.
 *
 * Run as a child process by the benchmark:
 *   node --import tsx bench/baselines/socketio-relay.ts --config <file.json>
 * with `{ "port": 0, "directory": "...", "sync": true, "tenants": [{ "id", "secret" }] }`.
 * It prints one JSON line `{"event":"ready","port":N}` on stdout once it listens.
 */
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { Level } from 'level';
import { Server } from 'socket.io';
import { verifyToken, type Identity } from '../../cell/access/tokens.js';

interface RelayConfig {
  port: number;
  directory: string;
  sync: boolean;
  tenants: Array<{ id: string; secret: string }>;
}

interface SendPayload {
  conv?: unknown;
  cmid?: unknown;
  body?: unknown;
}

/** Conversation to the highest seq this device has, for every conversation with news. */
type AckPayload = Record<string, unknown>;

const MAX_FRAME_BYTES = 64 * 1024;
const MAX_BODY_CHARS = 16_384;
/** Bounds the in-memory maps: a relay that forgets nothing would grow without limit. */
const MAX_CONVERSATIONS = 1_000_000;

function configPathOf(argv: readonly string[]): string {
  const index = argv.indexOf('--config');
  const path = index >= 0 ? argv[index + 1] : undefined;
  if (path === undefined) throw new Error('usage: socketio-relay.ts --config <file.json>');
  return path;
}

async function main(): Promise<void> {
  const config = JSON.parse(readFileSync(configPathOf(process.argv), 'utf8')) as RelayConfig;
  const secrets = new Map(config.tenants.map((tenant) => [tenant.id, [{ secret: tenant.secret }]]));
  const db = new Level<string, string>(config.directory);
  await db.open();

  const sequences = new Map<string, number>();
  const cursors = new Map<string, number>();

  const httpServer = createServer((request, response) => {
    response.writeHead(request.url === '/readyz' ? 200 : 404).end();
  });
  const io = new Server(httpServer, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    maxHttpBufferSize: MAX_FRAME_BYTES,
  });

  io.use((socket, next) => {
    const token: unknown = (socket.handshake.auth as Record<string, unknown> | undefined)?.['token'];
    if (typeof token !== 'string') {
      next(new Error('UNAUTHENTICATED'));
      return;
    }
    try {
      socket.data.identity = verifyToken(token, (tenant) => secrets.get(tenant), Date.now());
      next();
    } catch (error) {
      next(new Error((error as { code?: string }).code ?? 'TOKEN_INVALID'));
    }
  });

  io.on('connection', (socket) => {
    const identity = socket.data.identity as Identity;
    if (identity.role === 'agent') void socket.join(`${identity.tenant}/merchant/${identity.merchant}`);

    socket.on('send', (payload: SendPayload, ack: unknown) => {
      if (typeof ack !== 'function') return;
      const reply = ack as (answer: unknown) => void;
      const { conv, cmid, body } = payload ?? {};
      if (typeof conv !== 'string' || typeof cmid !== 'string' || typeof body !== 'string' || body.length > MAX_BODY_CHARS) {
        reply({ error: 'BAD_FRAME' });
        return;
      }
      const separatorAt = conv.indexOf(':');
      const merchant = conv.slice(0, separatorAt);
      if (separatorAt < 0 || (identity.role === 'customer' && conv.slice(separatorAt + 1) !== identity.user)) {
        reply({ error: 'CONVERSATION_FORBIDDEN' });
        return;
      }
      const conversationKey = `${identity.tenant}/${conv}`;
      if (!sequences.has(conversationKey) && sequences.size >= MAX_CONVERSATIONS) {
        reply({ error: 'INTERNAL' });
        return;
      }
      const seq = (sequences.get(conversationKey) ?? 0) + 1;
      sequences.set(conversationKey, seq);
      const ts = Date.now();
      const message = { conv, seq, from: identity.user, role: identity.role, device: identity.device, cmid, body, ts };
      db.put(`m/${conversationKey}/${String(seq).padStart(12, '0')}`, JSON.stringify(message), { sync: config.sync })
        .then(() => {
          reply({ seq, ts });
          io.to(`${identity.tenant}/merchant/${merchant}`).emit('msg', message);
        })
        .catch(() => reply({ error: 'STORE_UNAVAILABLE' }));
    });

    socket.on('ack', (payload: AckPayload) => {
      if (typeof payload !== 'object' || payload === null) return;
      for (const [conv, seq] of Object.entries(payload)) {
        if (typeof seq !== 'number') continue;
        const cursorKey = `${identity.tenant}/${identity.device}/${conv}`;
        if (!cursors.has(cursorKey) && cursors.size >= MAX_CONVERSATIONS) continue;
        if (seq > (cursors.get(cursorKey) ?? 0)) cursors.set(cursorKey, seq);
      }
    });
  });

  httpServer.listen(config.port, '127.0.0.1', () => {
    const address = httpServer.address();
    const port = typeof address === 'object' && address !== null ? address.port : config.port;
    process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`);
  });

  const shutdown = (): void => {
    io.close();
    db.close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((error: unknown) => {
  process.stderr.write(`socketio-relay failed: ${String((error as Error)?.stack ?? error)}\n`);
  process.exit(1);
});
