/**
 * Settles as `promise` does, or rejects with `abortError()` as soon as `signal` aborts, whichever
 * comes first (the promise itself runs on; only the wait is cut short). The listener is removed
 * once the promise settles, so a long-lived signal does not collect one per call.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, abortError: () => unknown = () => signal.reason): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
