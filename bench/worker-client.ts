/**
 * The main thread's handle on one load-generator worker: one command at a time, each answered
 * by one reply within a bound, with progress and window events passed to callbacks.
 */
import { Worker } from 'node:worker_threads';
import type { WorkerCommand, WorkerReply } from './load-protocol.js';

export interface WorkerEvents {
  onProgress?: (acked: number) => void;
  onWindowStart?: () => void;
  onWindowEnd?: () => void;
}

type FinalReply = Exclude<WorkerReply, { type: 'progress' | 'window-start' | 'window-end' | 'failed' }>;

export class LoadWorker {
  private readonly worker: Worker;
  private pending:
    | { resolve: (reply: FinalReply) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }
    | undefined;
  private events: WorkerEvents = {};
  private exited = false;

  constructor(workerIndex: number, seed: number) {
    this.worker = new Worker(new URL('./load-worker-entry.mjs', import.meta.url), { workerData: { workerIndex, seed } });
    this.worker.on('message', (reply: WorkerReply) => this.onReply(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', (code) => {
      this.exited = true;
      this.fail(new Error(`load worker ${workerIndex} exited with code ${code}`));
    });
  }

  private onReply(reply: WorkerReply): void {
    switch (reply.type) {
      case 'progress':
        this.events.onProgress?.(reply.acked);
        return;
      case 'window-start':
        this.events.onWindowStart?.();
        return;
      case 'window-end':
        this.events.onWindowEnd?.();
        return;
      case 'failed':
        this.fail(new Error(`load worker failed: ${reply.message}`));
        return;
      default: {
        const pending = this.pending;
        this.pending = undefined;
        if (pending === undefined) return;
        clearTimeout(pending.timer);
        pending.resolve(reply);
      }
    }
  }

  private fail(error: Error): void {
    const pending = this.pending;
    this.pending = undefined;
    if (pending === undefined) return;
    clearTimeout(pending.timer);
    pending.reject(error);
  }

  /** Sends one command and waits for its reply of type `expected`, at most `timeoutMs`. */
  request<Type extends FinalReply['type']>(
    command: WorkerCommand,
    expected: Type,
    timeoutMs: number,
    events: WorkerEvents = {},
  ): Promise<Extract<FinalReply, { type: Type }>> {
    if (this.pending !== undefined) throw new Error('one command at a time per load worker');
    if (this.exited) return Promise.reject(new Error('load worker has exited'));
    this.events = events;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`load worker: no '${expected}' within ${timeoutMs} ms`)), timeoutMs);
      this.pending = {
        resolve: (reply) => {
          if (reply.type === expected) resolve(reply as Extract<FinalReply, { type: Type }>);
          else reject(new Error(`load worker answered '${reply.type}', expected '${expected}'`));
        },
        reject,
        timer,
      };
      this.worker.postMessage(command);
    });
  }

  /** Closes the worker's sockets (bounded) and ends the thread. */
  async close(): Promise<void> {
    if (this.exited) return;
    try {
      await this.request({ type: 'close' }, 'closed', 10_000);
    } catch {
      // Terminating below is the fallback.
    }
    this.events = {};
    await this.worker.terminate();
  }
}
