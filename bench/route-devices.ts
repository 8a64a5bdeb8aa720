/**
 * Devices of the route benchmark: the client SDK (client/) in route mode, as an application runs
 * it, with tokens the benchmark mints with the tenant's secret. Agents count what they receive
 * per conversation; a customer opens one client per merchant it talks to (docs/routing.md,
 * "A customer who talks to merchants on two cells").
 */
import { connectNode, type CellmeshClient } from '../client/index.js';
import type { ChatMessage } from '../cell/protocol/frames.js';
import { mintDeviceToken } from './mesh-client.js';
import { BENCH_TENANT } from './mesh-cluster.js';

/** The bench keeps the backoff short so that an outage's return is noticed within a second. */
const BACKOFF = { initialDelayMs: 100, maxDelayMs: 1000 };
const CONNECT_TIMEOUT_MS = 20_000;

export interface RoutedClientOptions {
  secret: string;
  /** Any cell of the cluster: the client asks it for the merchant's home. */
  routeUrl: string;
  merchant: string;
  user: string;
  device: string;
  role: 'customer' | 'agent';
}

/** A client in route mode for `merchant`, resolved once a cell welcomed it. */
export async function openRoutedClient(options: RoutedClientOptions): Promise<CellmeshClient> {
  const token = await mintDeviceToken(options.secret, {
    user: options.user,
    device: options.device,
    role: options.role,
    ...(options.role === 'agent' ? { merchant: options.merchant } : {}),
  });
  return connectNode({
    route: { url: options.routeUrl, tenant: BENCH_TENANT, merchant: options.merchant },
    token,
    backoff: BACKOFF,
    signal: AbortSignal.timeout(CONNECT_TIMEOUT_MS),
  });
}

/** Which cell each client's session is on now, and since when (performance.now()). */
export class SessionWatch {
  private readonly where = new Map<CellmeshClient, { cell: string | undefined; sinceMs: number }>();
  private readonly stops: Array<() => void> = [];

  watch(client: CellmeshClient): void {
    this.where.set(client, { cell: client.session?.cell, sinceMs: performance.now() });
    this.stops.push(
      client.on('state', (change) => {
        this.where.set(client, { cell: change.state === 'open' ? change.session?.cell : undefined, sinceMs: performance.now() });
      }),
    );
  }

  /** Whether every watched client is open on `cell` now. */
  allOn(cell: string): boolean {
    return [...this.where.values()].every((where) => where.cell === cell);
  }

  /** When each client that is open on `cell` now got there. */
  arrivalsOn(cell: string): number[] {
    return [...this.where.values()].filter((where) => where.cell === cell).map((where) => where.sinceMs);
  }

  countOn(cell: string): number {
    return this.arrivalsOn(cell).length;
  }

  stop(): void {
    for (const stop of this.stops.splice(0)) stop();
  }
}

/**
 * The agents of every merchant, one routed client each. Every message received is counted;
 * those of the conversations under `record` are kept in arrival order (the outage phase checks
 * them message by message).
 */
export class BenchAgents {
  readonly clients = new Map<string, CellmeshClient>();
  private receivedCount = 0;
  private readonly recorded = new Map<string, ChatMessage[]>();

  get received(): number {
    return this.receivedCount;
  }

  async open(secret: string, merchant: string, routeUrl: string): Promise<void> {
    const client = await openRoutedClient({ secret, routeUrl, merchant, user: `agent-${merchant}`, device: 'desk', role: 'agent' });
    client.on('message', (message) => {
      if (message.role !== 'customer') return;
      this.receivedCount++;
      this.recorded.get(message.conv)?.push(message);
    });
    this.clients.set(merchant, client);
  }

  /** Keeps the customer messages of `conv` from now on. */
  record(conv: string): void {
    if (!this.recorded.has(conv)) this.recorded.set(conv, []);
  }

  recordedOf(conv: string): readonly ChatMessage[] {
    return this.recorded.get(conv) ?? [];
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.clients.values()].map((client) => client.close().catch(() => undefined)));
    this.clients.clear();
  }
}

/** Runs `task` over `items` with at most `concurrency` at once; resolves when all settled. */
export async function eachLimited<T>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await task(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
