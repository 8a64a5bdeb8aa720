/**
 * The agents of one group who can take a consultation now, cheapest first: the lowest load
 * (open consultations divided by capacity), then the longest idle (earliest last assignment),
 * then the id, so every cell decides alike. A binary heap with lazy deletion: a change to an
 * agent pushes a fresh entry and leaves the old one to be skipped when it surfaces, so an
 * assignment costs O(log n) instead of a scan of the group.
 */

/** What the pool reads of an agent; the desk owns and changes it. */
export interface PooledAgent {
  readonly id: string;
  /** Bumped at every change that moves the agent in the pools; older entries are stale. */
  readonly version: number;
  readonly open: number;
  readonly capacity: number;
  readonly lastAssignedAtMs: number;
  /** Online with free capacity. */
  readonly available: boolean;
}

interface Entry {
  readonly agent: PooledAgent;
  readonly version: number;
  readonly load: number;
  readonly idleSinceMs: number;
}

function before(a: Entry, b: Entry): boolean {
  if (a.load !== b.load) return a.load < b.load;
  if (a.idleSinceMs !== b.idleSinceMs) return a.idleSinceMs < b.idleSinceMs;
  return a.agent.id < b.agent.id;
}

export class AgentPool {
  private heap: Entry[] = [];
  private readonly members = new Set<PooledAgent>();

  /** The agents of the group, available or not. */
  get size(): number {
    return this.members.size;
  }

  join(agent: PooledAgent): void {
    this.members.add(agent);
    this.offer(agent);
  }

  leave(agent: PooledAgent): void {
    // Its entries go stale: `best` skips entries of agents that are no longer members.
    this.members.delete(agent);
  }

  /** Records the agent's current state (call after every change of it). */
  offer(agent: PooledAgent): void {
    if (!agent.available || !this.members.has(agent)) return;
    this.push({ agent, version: agent.version, load: agent.open / agent.capacity, idleSinceMs: agent.lastAssignedAtMs });
    // Stale entries pile up between assignments; rebuild once they outnumber the live ones.
    if (this.heap.length > 4 * this.members.size + 64) this.rebuild();
  }

  /** The agent to assign next, or undefined when nobody of the group can take one now. */
  best(): PooledAgent | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0] as Entry;
      if (this.isCurrent(top)) return top.agent;
      this.pop();
    }
    return undefined;
  }

  private isCurrent(entry: Entry): boolean {
    return entry.version === entry.agent.version && entry.agent.available && this.members.has(entry.agent);
  }

  private rebuild(): void {
    const entries = this.heap.filter((entry) => this.isCurrent(entry));
    this.heap = [];
    for (const entry of entries) this.push(entry);
  }

  private push(entry: Entry): void {
    const heap = this.heap;
    heap.push(entry);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(entry, heap[parent] as Entry)) break;
      heap[index] = heap[parent] as Entry;
      index = parent;
    }
    heap[index] = entry;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop() as Entry;
    if (heap.length === 0) return;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right] as Entry, heap[left] as Entry) ? right : left;
      if (!before(heap[child] as Entry, last)) break;
      heap[index] = heap[child] as Entry;
      index = child;
    }
    heap[index] = last;
  }
}
