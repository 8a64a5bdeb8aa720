export type Listener<Payload> = (payload: Payload) => void;

/**
 * A minimal typed event emitter that runs in browsers and Node alike (Node's EventEmitter does
 * not exist in browsers, and EventTarget loses the payload types).
 *
 * A listener that throws is a bug in the application. Its exception is rethrown from a
 * microtask: it surfaces as an uncaught error (and crashes Node, as a programmer error should)
 * without leaving the client half-way through handling a frame.
 */
export class TypedEmitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds `listener`; returns a function that removes it. */
  on<Name extends keyof Events>(event: Name, listener: Listener<Events[Name]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /** Adds `listener` for the next event of that name only; remove it early with the returned function. */
  once<Name extends keyof Events>(event: Name, listener: Listener<Events[Name]>): () => void {
    const remove = this.on(event, (payload) => {
      remove();
      listener(payload);
    });
    return remove;
  }

  off<Name extends keyof Events>(event: Name, listener: Listener<Events[Name]>): void {
    this.listeners.get(event)?.delete(listener as Listener<never>);
  }

  emit<Name extends keyof Events>(event: Name, payload: Events[Name]): void {
    const set = this.listeners.get(event);
    if (set === undefined || set.size === 0) return;
    // A copy, so listeners that add or remove listeners do not disturb this round.
    for (const listener of [...set] as Array<Listener<Events[Name]>>) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
