/**
 * Bounding and classifying one libp2p call: the abort signals it listens to, real-time deadlines,
 * and the mapping of a failure to the port's typed error by its cause.
 */
import { MeshTransportError, type MeshTransportErrorCode } from './transport.js';

/** The signals one call listens to; kept together so a failure is classified by its cause. */
export interface CallSignals {
  /** This transport's stop signal as it was when the call began. */
  readonly stop: AbortSignal;
  readonly caller?: AbortSignal | undefined;
  readonly timeout?: AbortSignal | undefined;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Thrown inside a request's exchange when the peer answered with a handler failure. */
export class RemoteFailure extends Error {}

/** An abort signal that fires after `delayMs` of real time, with a timer that can be released early. */
export class Deadline {
  private controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly delayMs: number) {
    this.restart();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Starts the delay again with a fresh signal (the old one never fires). */
  restart(): void {
    this.clear();
    const controller = new AbortController();
    this.controller = controller;
    this.timer = setTimeout(() => controller.abort(), this.delayMs); // real-clock-ok: adapter
    this.timer.unref();
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer); // real-clock-ok: adapter
    this.timer = undefined;
  }
}

export function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

export function combine(signals: CallSignals): AbortSignal {
  const list = [signals.stop];
  if (signals.caller !== undefined) list.push(signals.caller);
  if (signals.timeout !== undefined) list.push(signals.timeout);
  return AbortSignal.any(list);
}

/** Maps a libp2p or stream failure to the port's typed error, deciding by cause, not by text. */
export function failure(error: unknown, signals: CallSignals, what: string): MeshTransportError {
  const detail = error instanceof RemoteFailure ? `remote handler failed: ${error.message}` : errorMessage(error);
  return new MeshTransportError(failureCode(error, signals), `${what}: ${detail}`, { cause: error });
}

function failureCode(error: unknown, signals: CallSignals): MeshTransportErrorCode {
  if (signals.stop.aborted) return 'NOT_STARTED';
  if (signals.caller?.aborted === true) return 'ABORTED';
  if (signals.timeout?.aborted === true) return 'REQUEST_TIMEOUT';
  if (error instanceof RemoteFailure) return 'REMOTE_HANDLER_FAILED';
  const name = error instanceof Error ? error.name : '';
  if (name === 'UnsupportedProtocolError') return 'PROTOCOL_UNSUPPORTED';
  // The peer answered with more than maxResponseBytes: its handler's answer is unusable here.
  if (name === 'InvalidDataLengthError') return 'REMOTE_HANDLER_FAILED';
  return 'PEER_UNREACHABLE';
}
