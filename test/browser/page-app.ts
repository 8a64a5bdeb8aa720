/**
 * The page side of test/browser-sdk.test.ts: bundled with the browser SDK (client/browser.ts) by
 * esbuild and loaded by a test page in Chromium. It keeps named clients on `window.cellmeshTest`
 * and records every event they emit as plain JSON, so the Node side can drive the clients with
 * `page.evaluate` and inspect what the page saw.
 */
import { ClientError, connectBrowser, type CellmeshClient, type ChatMessage, type Receipt, type SendResult } from '../../client/browser.js';

export interface PageError {
  code: string;
  message: string;
  cause?: { code: string; message: string };
}

export interface PageConnectOptions {
  url: string;
  token: string;
  /** Bounds the attempts, so that a refused connection ends instead of retrying forever. */
  maxReconnectAttempts?: number;
  connectTimeoutMs?: number;
  /** Stops waiting for the first session after this long. */
  waitMs?: number;
  backoff?: { initialDelayMs?: number; maxDelayMs?: number; jitter?: number };
}

export interface PageSendOutcome {
  body: string;
  result?: SendResult;
  error?: PageError;
}

/** Everything one client did, as seen by the page. */
export interface PageLog {
  state: string;
  session?: { user: string; device: string; role: string; tenant: string };
  states: Array<{ state: string; previous: string; closeCode?: number; error?: string }>;
  messages: ChatMessage[];
  sent: SendResult[];
  receipts: Receipt[];
  synced: number;
  errors: PageError[];
  /** Outcomes of `sendLater` calls, in the order they settled. */
  sends: PageSendOutcome[];
}

export type PageConnectResult = { ok: true; session: NonNullable<PageLog['session']> } | { ok: false; error: PageError };

export interface CellmeshTestPage {
  connect(name: string, options: PageConnectOptions): Promise<PageConnectResult>;
  /** Sends all at once (one `send` call after the other, without waiting in between). */
  send(name: string, conv: string, bodies: string[]): Promise<SendResult[]>;
  /** Sends one after the other, each once the previous one was confirmed. */
  sendEach(name: string, conv: string, bodies: string[]): Promise<SendResult[]>;
  /** Starts a send without waiting; its outcome lands in `log(name).sends`. */
  sendLater(name: string, conv: string, body: string): void;
  read(name: string, conv: string, seq: number): Promise<void>;
  history(name: string, conv: string): Promise<ChatMessage[]>;
  log(name: string): PageLog;
  close(name: string): Promise<void>;
  closeAll(): Promise<void>;
}

function errorOf(error: unknown): PageError {
  if (error instanceof ClientError) {
    const cause = error.cause instanceof ClientError ? { code: String(error.cause.code), message: error.cause.message } : undefined;
    return { code: String(error.code), message: error.message, ...(cause === undefined ? {} : { cause }) };
  }
  return { code: 'UNEXPECTED', message: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
}

const clients = new Map<string, CellmeshClient>();
const logs = new Map<string, PageLog>();

function clientOf(name: string): CellmeshClient {
  const client = clients.get(name);
  if (client === undefined) throw new Error(`no connected client named ${name}`);
  return client;
}

function logOf(name: string): PageLog {
  const log = logs.get(name);
  if (log === undefined) throw new Error(`no client named ${name}`);
  return log;
}

const page: CellmeshTestPage = {
  async connect(name, options) {
    const log: PageLog = { state: 'idle', states: [], messages: [], sent: [], receipts: [], synced: 0, errors: [], sends: [] };
    logs.set(name, log);
    let client: CellmeshClient;
    try {
      client = await connectBrowser({
        url: options.url,
        token: options.token,
        ...(options.maxReconnectAttempts === undefined ? {} : { maxReconnectAttempts: options.maxReconnectAttempts }),
        ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
        ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
        signal: AbortSignal.timeout(options.waitMs ?? 10_000),
      });
    } catch (error) {
      log.state = 'failed';
      return { ok: false, error: errorOf(error) };
    }
    // Each WebSocket frame is a task of its own and this continuation a microtask of the task
    // that carried the welcome, so no event after the welcome is missed.
    clients.set(name, client);
    client.on('state', (change) => {
      log.state = change.state;
      log.states.push({
        state: change.state,
        previous: change.previous,
        ...(change.closeCode === undefined ? {} : { closeCode: change.closeCode }),
        ...(change.error === undefined ? {} : { error: String(change.error.code) }),
      });
    });
    client.on('message', (message) => log.messages.push(message));
    client.on('sent', (result) => log.sent.push(result));
    client.on('receipt', (receipt) => log.receipts.push(receipt));
    client.on('synced', () => log.synced++);
    client.on('error', (error) => log.errors.push(errorOf(error)));
    const session = client.session;
    log.state = client.state;
    if (session === undefined) return { ok: false, error: { code: 'NO_SESSION', message: `connected in state ${client.state} without a session` } };
    log.session = { user: session.user, device: session.device, role: session.role, tenant: session.tenant };
    return { ok: true, session: log.session };
  },

  send(name, conv, bodies) {
    const client = clientOf(name);
    return Promise.all(bodies.map((body) => client.send(conv, body)));
  },

  async sendEach(name, conv, bodies) {
    const client = clientOf(name);
    const results: SendResult[] = [];
    for (const body of bodies) results.push(await client.send(conv, body));
    return results;
  },

  sendLater(name, conv, body) {
    const log = logOf(name);
    clientOf(name)
      .send(conv, body)
      .then(
        (result) => log.sends.push({ body, result }),
        (error: unknown) => log.sends.push({ body, error: errorOf(error) }),
      );
  },

  read(name, conv, seq) {
    return clientOf(name).read(conv, seq);
  },

  async history(name, conv) {
    return (await clientOf(name).history(conv)).messages;
  },

  log(name) {
    return logOf(name);
  },

  async close(name) {
    await clients.get(name)?.close();
  },

  async closeAll() {
    await Promise.all([...clients.values()].map((client) => client.close()));
  },
};

declare global {
  interface Window {
    /** Set by this script once it ran; the test waits for it. */
    cellmeshTest: CellmeshTestPage;
  }
}

window.cellmeshTest = page;
