/** The serializer holds `maxTasks` tasks already; the new one was not started. */
export class SerializerFullError extends Error {
  readonly code = 'SERIALIZER_FULL';

  constructor(maxTasks: number) {
    super(`${maxTasks} tasks already wait`);
    this.name = 'SerializerFullError';
  }
}

interface Lane {
  tail: Promise<void>;
  tasks: number;
}

/**
 * Runs asynchronous tasks one at a time per key, in the order they were given; tasks of
 * different keys run concurrently. Cross-cell work uses one key per conversation, so a
 * conversation's mirror writes, backfills and forwards never interleave and keep their order.
 * At most `maxTasks` tasks wait or run over all keys; beyond, `run` rejects at once with
 * SerializerFullError, so a stalled key cannot grow memory without bound.
 */
export class KeyedSerializer {
  private readonly lanes = new Map<string, Lane>();
  private tasks = 0;

  constructor(private readonly maxTasks: number) {
    if (!Number.isInteger(maxTasks) || maxTasks < 1) throw new RangeError('maxTasks must be a positive integer');
  }

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    if (this.tasks >= this.maxTasks) return Promise.reject(new SerializerFullError(this.maxTasks));
    let lane = this.lanes.get(key);
    if (lane === undefined) {
      lane = { tail: Promise.resolve(), tasks: 0 };
      this.lanes.set(key, lane);
    }
    const current = lane;
    current.tasks++;
    this.tasks++;
    const result = current.tail.then(task);
    current.tail = result.then(
      () => this.finish(key, current),
      () => this.finish(key, current),
    );
    return result;
  }

  private finish(key: string, lane: Lane): void {
    lane.tasks--;
    this.tasks--;
    if (lane.tasks === 0 && this.lanes.get(key) === lane) this.lanes.delete(key);
  }
}
