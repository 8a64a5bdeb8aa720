/**
 * The failover figure of the scaled-cell benchmark: SIGKILL of one process of a two-process cell,
 * and the time until every device that was connected to it is resynced on the other process:
 * reconnected (what a balancer does: its next connection reaches the survivor), `synced`, and
 * able to send with the message acknowledged. Until the dead process's lease runs out and the
 * survivor claims its merchants, the survivor refuses their devices (503 OWNER_UNAVAILABLE): a
 * device retries every RETRY_MS, as the SDK does with a short backoff.
 *
 * The devices speak the cell's protocol over `ws` directly, so that the figure holds nothing but
 * the cell's own work (no client library's backoff policy).
 */
import WebSocket from 'ws';
import { TENANT, merchantIdOf, type Fixture } from './in-cell.js';
import { mintToken } from '../cell/access/tokens.js';
import { killProcess, type RedisCell } from './scaled-cell-processes.js';

const RETRY_MS = 50;
const TOKEN_TTL_SECONDS = 3600;

export interface FailoverTrial {
  killed: string;
  survivor: string;
  /** Devices connected to the killed process, of merchants it owned and of merchants it relayed. */
  devicesOnKilled: number;
  /** SIGKILL to the last of them resynced and its send acknowledged, ms. */
  failoverMs: number;
  /** SIGKILL to the first of them done, ms. */
  firstResyncedMs: number;
  /** Devices on the survivor relayed to the killed process (closed with 1001 by the survivor), and the time until the last was resynced. */
  relayedOnSurvivor: number;
  relayedOnSurvivorResyncedMs: number | null;
  /** Connection attempts the devices needed, all together (each refused one is a retry). */
  connectAttempts: number;
}

/** One device: connects with the cell's `merchant` parameter, waits for `synced`, sends and waits for `sent`. */
class FailoverDevice {
  private socket: WebSocket | undefined;
  /** Resolves when the current connection closes. */
  closed: Promise<void> = Promise.resolve();
  attempts = 0;
  private sends = 0;

  constructor(
    readonly name: string,
    private readonly token: string,
    private readonly merchant: string,
  ) {}

  private get conv(): string {
    return `${this.merchant}:${this.name}`;
  }

  /** One attempt: open, `synced`, one send acknowledged. Rejects on refusal, close or an error frame. */
  private attempt(baseUrl: string, timeoutMs: number): Promise<void> {
    this.attempts++;
    const url = `${baseUrl}/v1/ws?token=${encodeURIComponent(this.token)}&merchant=${encodeURIComponent(this.merchant)}`;
    const socket = new WebSocket(url, ['cellmesh.v1'], { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    return new Promise((resolve, reject) => {
      const cmid = `${this.name}-${++this.sends}`;
      const timer = setTimeout(() => fail(`no ack within ${timeoutMs} ms`), timeoutMs);
      const fail = (reason: string): void => {
        clearTimeout(timer);
        socket.terminate();
        reject(new Error(reason));
      };
      socket.on('error', (error) => fail(error.message));
      socket.on('close', (code) => fail(`closed ${code}`));
      socket.on('message', (data: Buffer) => {
        const frame = JSON.parse(data.toString()) as { t?: string; cmid?: string; code?: string };
        if (frame.t === 'synced') socket.send(JSON.stringify({ op: 'send', id: cmid, conv: this.conv, cmid, body: 'after failover' }));
        else if (frame.t === 'sent' && frame.cmid === cmid) {
          clearTimeout(timer);
          resolve();
        } else if (frame.t === 'error') fail(`error ${frame.code ?? '?'}`);
      });
    });
  }

  /** Attempts until one succeeds or `deadlineMs` (performance.now()) passes. */
  async resync(baseUrl: string, deadlineMs: number): Promise<void> {
    let lastError = '';
    while (performance.now() < deadlineMs) {
      try {
        await this.attempt(baseUrl, Math.max(1, deadlineMs - performance.now()));
        return;
      } catch (error) {
        lastError = (error as Error).message;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
    throw new Error(`device ${this.name} was not resynced in time (last: ${lastError})`);
  }

  close(): void {
    this.socket?.terminate();
  }
}

/**
 * One trial: every merchant gets a customer device on each process; `killed` is SIGKILLed; the
 * devices that were on it, and those on the survivor that were relayed to it, resync on the
 * survivor. The killed process is started again under its id afterwards and the merchants spread.
 */
export async function runFailoverTrial(
  cell: RedisCell,
  fixture: Fixture,
  merchants: number,
  killed: string,
  survivor: string,
  trial: number,
  boundMs: number,
): Promise<FailoverTrial> {
  const owners = await cell.waitForSpread([killed, survivor], boundMs);
  const killedServer = cell.process(killed);
  const survivorUrl = cell.process(survivor).baseUrl;
  const nowMs = Date.now();
  const device = async (name: string, merchant: string): Promise<FailoverDevice> =>
    new FailoverDevice(
      name,
      await mintToken({ secret: fixture.secret, tenant: TENANT, user: name, role: 'customer', device: 'd0', ttlSeconds: TOKEN_TTL_SECONDS, nowMs }),
      merchant,
    );
  const onKilled: FailoverDevice[] = [];
  const onSurvivor: FailoverDevice[] = [];
  try {
    const setupDeadlineMs = performance.now() + boundMs;
    for (let index = 0; index < merchants; index++) {
      const merchant = merchantIdOf(index);
      const there = await device(`f${trial}k${index}`, merchant);
      const here = await device(`f${trial}s${index}`, merchant);
      await there.resync(killedServer.baseUrl, setupDeadlineMs);
      await here.resync(survivorUrl, setupDeadlineMs);
      onKilled.push(there);
      onSurvivor.push(here);
    }
    const relayed = onSurvivor.filter((_, index) => owners.get(merchantIdOf(index)) === killed);
    const attemptsBefore = [...onKilled, ...relayed].reduce((total, each) => total + each.attempts, 0);
    const killedAtMs = performance.now();
    await killProcess(killedServer);
    const deadlineMs = killedAtMs + boundMs;
    const resyncedAfter = (devices: FailoverDevice[]): Promise<number[]> =>
      Promise.all(
        devices.map(async (each) => {
          await each.closed;
          await each.resync(survivorUrl, deadlineMs);
          return performance.now() - killedAtMs;
        }),
      );
    const [killedTimes, relayedTimes] = await Promise.all([resyncedAfter(onKilled), resyncedAfter(relayed)]);
    const trialResult: FailoverTrial = {
      killed,
      survivor,
      devicesOnKilled: onKilled.length,
      failoverMs: Math.max(...killedTimes),
      firstResyncedMs: Math.min(...killedTimes),
      relayedOnSurvivor: relayed.length,
      relayedOnSurvivorResyncedMs: relayedTimes.length === 0 ? null : Math.max(...relayedTimes),
      connectAttempts: [...onKilled, ...relayed].reduce((total, each) => total + each.attempts, 0) - attemptsBefore,
    };
    // Back under the same id and port, as a restarted pod: the next trial starts from two processes.
    await cell.startProcess(killed, killedServer.port);
    return trialResult;
  } finally {
    for (const each of [...onKilled, ...onSurvivor]) each.close();
  }
}
