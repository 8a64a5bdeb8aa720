import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connectNode, conversationIdOf, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { eventually, killChildCell, startChildCell, tokenFor, type ChildCell } from './harness.js';

const CONV = conversationIdOf('m1', 'alice');
const FAST_BACKOFF = { initialDelayMs: 50, maxDelayMs: 400 };

describe('the client SDK against a cell process that dies and comes back', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });

  async function setUp(): Promise<{ start: (port?: number) => Promise<ChildCell>; cell: ChildCell }> {
    const root = await mkdtemp(join(tmpdir(), 'cellmesh-sdk-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const start = (port?: number): Promise<ChildCell> =>
      startChildCell({ directory: join(root, 'data'), configDir: root, ...(port === undefined ? {} : { port }) });
    return { start, cell: await start() };
  }

  /** Signals the cell and waits for its exit. */
  async function stop(cell: ChildCell, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    cell.kill(signal);
    return cell.exited;
  }

  async function client(url: string, user: string, device: string, merchant?: string): Promise<CellmeshClient> {
    const token = await tokenFor({ user, device, ...(merchant === undefined ? {} : { merchant }) });
    const connected = await connectNode({ url, token, backoff: FAST_BACKOFF, signal: AbortSignal.timeout(10_000) });
    cleanups.push(() => connected.close());
    return connected;
  }

  it('loses and duplicates nothing when the cell is killed -9 mid-stream and restarted', async () => {
    const { start, cell } = await setUp();
    let current = cell;
    cleanups.push(() => killChildCell(current));
    const customer = await client(cell.url, 'alice', 'phone');
    const agent = await client(cell.url, 'bob', 'desk', 'm1');
    const agentSaw: ChatMessage[] = [];
    agent.on('message', (message) => agentSaw.push(message));

    const total = 300;
    let acked = 0;
    const sends = Array.from({ length: total }, (_, index) =>
      customer.send(CONV, `message ${index}`).then((result) => {
        acked++;
        return result;
      }),
    );
    await eventually(() => acked >= 60, 'the first acks', 30_000);
    await stop(current, 'SIGKILL');
    const ackedBeforeKill = acked;
    expect(ackedBeforeKill).toBeLessThan(total);
    current = await start(cell.port);

    const results = await Promise.all(sends);
    // The SDK resends in order with the original cmids, so seqs follow the calls exactly.
    expect(results.map((result) => result.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
    await eventually(() => agentSaw.length >= total, 'the agent to see every message', 30_000);
    expect(agentSaw.map((message) => message.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
    expect(agentSaw.map((message) => message.body)).toEqual(Array.from({ length: total }, (_, index) => `message ${index}`));

    const stored: ChatMessage[] = [];
    let before: number | undefined;
    for (let page = 0; page < 10; page++) {
      const history = await customer.history(CONV, { limit: 200, ...(before === undefined ? {} : { before }) });
      stored.unshift(...history.messages);
      if (!history.hasMore) break;
      before = history.messages[0]!.seq;
    }
    expect(stored.map((message) => message.seq)).toEqual(Array.from({ length: total }, (_, index) => index + 1));
    expect(new Set(stored.map((message) => message.cmid)).size).toBe(total);
  });

  it('reconnects after a graceful restart (1001) and keeps each device in order', async () => {
    const { start, cell } = await setUp();
    let current = cell;
    cleanups.push(() => killChildCell(current));
    const phone = await client(cell.url, 'alice', 'phone');
    const laptop = await client(cell.url, 'alice', 'laptop');
    const laptopSaw: ChatMessage[] = [];
    laptop.on('message', (message) => laptopSaw.push(message));
    const closeCodes: number[] = [];
    laptop.on('state', (change) => {
      if (change.closeCode !== undefined) closeCodes.push(change.closeCode);
    });

    for (let index = 0; index < 20; index++) await phone.send(CONV, `before ${index}`);
    const exit = await stop(current, 'SIGTERM');
    expect(exit.code).toBe(0);
    current = await start(cell.port);
    for (let index = 0; index < 20; index++) await phone.send(CONV, `after ${index}`);

    await eventually(() => laptopSaw.length >= 40, 'the laptop to see all 40 messages', 20_000);
    expect(closeCodes).toContain(1001);
    expect(laptopSaw.map((message) => message.seq)).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
    expect(laptopSaw.every((message) => message.device === 'phone')).toBe(true);
  });
});
