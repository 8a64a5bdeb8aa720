/**
 * A device of the mesh benchmark: one WebSocket to one cell (`/v1/ws`, subprotocol
 * `cellmesh.v1`), authenticated by a token the benchmark mints with the tenant's secret. It
 * acknowledges every pushed message cumulatively (the cell's delivery window needs acks), and
 * hands every frame, with its arrival time, to the listeners.
 */
import WebSocket from 'ws';
import { mintToken } from '../cell/access/tokens.js';
import { BENCH_TENANT } from './mesh-cluster.js';

/** The server frames the benchmark reads (docs/protocol.md); anything else passes through untyped. */
export interface BenchFrame {
  t: string;
  id?: string;
  conv?: string;
  cmid?: string;
  seq?: number;
  code?: string;
  message?: string;
  [field: string]: unknown;
}

const CONNECT_TIMEOUT_MS = 10_000;
const ACK_DELAY_MS = 5;
const TOKEN_TTL_SECONDS = 3600;

export function mintDeviceToken(
  secret: string,
  identity: { user: string; device: string; role: 'customer' | 'agent'; merchant?: string },
): Promise<string> {
  return mintToken({
    secret,
    tenant: BENCH_TENANT,
    user: identity.user,
    role: identity.role,
    ...(identity.merchant === undefined ? {} : { merchant: identity.merchant }),
    device: identity.device,
    ttlSeconds: TOKEN_TTL_SECONDS,
    nowMs: Date.now(),
  });
}

export class BenchDevice {
  private readonly listeners = new Set<(frame: BenchFrame, atMs: number) => void>();
  private readonly toAck = new Map<string, number>();
  private ackTimer: NodeJS.Timeout | undefined;
  private closedFlag = false;
  /** Waiters of `next`, resolved with null when the device closes (so no timer outlives it). */
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly label: string,
    private readonly socket: WebSocket,
  ) {
    socket.on('message', (data) => {
      const atMs = performance.now();
      let frame: BenchFrame;
      try {
        frame = JSON.parse(data.toString()) as BenchFrame;
      } catch {
        return;
      }
      if (frame.t === 'msg' && typeof frame.conv === 'string' && typeof frame.seq === 'number') {
        this.toAck.set(frame.conv, Math.max(this.toAck.get(frame.conv) ?? 0, frame.seq));
        this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
      }
      for (const listener of this.listeners) listener(frame, atMs);
    });
    socket.on('close', () => {
      this.closedFlag = true;
      if (this.ackTimer !== undefined) clearTimeout(this.ackTimer);
    });
    // After open, errors end in 'close'; without a listener they would throw.
    socket.on('error', () => undefined);
  }

  /** Opens the connection and resolves once the cell said `welcome` (rejects on an error frame or a refusal). */
  static async connect(label: string, wsUrl: string, token: string): Promise<BenchDevice> {
    const socket = new WebSocket(`${wsUrl}/v1/ws?token=${encodeURIComponent(token)}`, ['cellmesh.v1'], { perMessageDeflate: false });
    const device = new BenchDevice(label, socket);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.terminate();
        reject(new Error(`${label}: no welcome within ${CONNECT_TIMEOUT_MS} ms`));
      }, CONNECT_TIMEOUT_MS);
      const done = (error?: Error): void => {
        clearTimeout(timer);
        device.listeners.delete(onFrame);
        if (error === undefined) resolve();
        else reject(error);
      };
      const onFrame = (frame: BenchFrame): void => {
        if (frame.t === 'welcome') done();
        else if (frame.t === 'error') done(new Error(`${label}: refused with ${frame.code ?? '?'}: ${frame.message ?? ''}`));
      };
      device.listeners.add(onFrame);
      socket.once('unexpected-response', (_request, response) => done(new Error(`${label}: upgrade refused with HTTP ${response.statusCode ?? 0}`)));
      socket.once('error', (error) => done(error));
      socket.once('close', (code) => done(new Error(`${label}: closed with ${code} before welcome`)));
    });
    return device;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  onFrame(listener: (frame: BenchFrame, atMs: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(frame: Record<string, unknown>): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** The first frame matching `match` from now on, or null after `timeoutMs`. */
  next(match: (frame: BenchFrame) => boolean, timeoutMs: number): Promise<{ frame: BenchFrame; atMs: number } | null> {
    return new Promise((resolve) => {
      const finish = (value: { frame: BenchFrame; atMs: number } | null): void => {
        clearTimeout(timer);
        stop();
        this.waiters.delete(cancel);
        resolve(value);
      };
      const cancel = (): void => finish(null);
      const timer = setTimeout(cancel, timeoutMs);
      const stop = this.onFrame((frame, atMs) => {
        if (match(frame)) finish({ frame, atMs });
      });
      this.waiters.add(cancel);
    });
  }

  private flushAcks(): void {
    this.ackTimer = undefined;
    for (const [conv, seq] of this.toAck) this.send({ op: 'ack', conv, seq });
    this.toAck.clear();
  }

  /** Closes the connection; resets it when the close handshake does not finish within a second. */
  async close(): Promise<void> {
    if (this.ackTimer !== undefined) clearTimeout(this.ackTimer);
    for (const cancel of [...this.waiters]) cancel();
    if (this.closedFlag) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.socket.terminate();
        resolve();
      }, 1000);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.close(1000);
    });
  }
}
