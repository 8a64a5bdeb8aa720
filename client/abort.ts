// How the client's calls honour an AbortSignal: the error they reject with, and a listener that
// can be detached once the call settled (a long-lived signal must not collect one per call).
import { ClientError, ClientErrorCode } from './errors.js';

export function abortedError(): ClientError {
  return new ClientError(ClientErrorCode.Aborted, 'the operation was aborted');
}

/** Runs `handler` when `signal` aborts; returns a function that removes the listener. */
export function onAbort(signal: AbortSignal | undefined, handler: () => void): () => void {
  if (signal === undefined) return () => {};
  signal.addEventListener('abort', handler, { once: true });
  return () => signal.removeEventListener('abort', handler);
}
