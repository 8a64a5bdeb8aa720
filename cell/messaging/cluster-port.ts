/**
 * The cluster port: what a cell's core needs from the mesh to serve cross-cell conversations
 * (docs/architecture.md, "Cross-cell conversations"). The core never imports the mesh; a cell
 * without this port is standalone and behaves as before. Production builds it from the mesh
 * services (`mesh/cluster-port-adapter.ts`); tests may wire the same services over a
 * MemoryNetwork, or a fake.
 */

/** A JSON value, as cross-cell entries and their payloads carry them. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** An entry for another cell: `key` names it for the receiver (logs, metrics), `payload` is the content. */
export interface ClusterEntry {
  readonly key: string;
  readonly payload: JsonValue;
}

/** An entry as the receiving cell gets it: with the sequence number its source gave it. */
export interface ClusterForwardedEntry {
  readonly seq: number;
  readonly key: string;
  readonly payload: JsonValue;
}

/**
 * Applies the entries another cell forwarded, in their order; each batch is offered until the
 * handler resolves, so it must be idempotent (a crash after applying and before the source
 * learnt it makes the source send the batch again). Rejecting refuses the batch, which the
 * source retries with backoff, forever: reject only for transient reasons, and accept (and log)
 * an entry that can never be applied.
 */
export type ClusterForwardHandler = (sourceCellId: string, entries: readonly ClusterForwardedEntry[]) => Promise<void>;

/** Answers one request of another cell; a rejection reaches the asker as a failed request. */
export type ClusterRequestHandler = (fromCellId: string, data: Uint8Array) => Promise<Uint8Array>;

export interface ClusterRequestOptions {
  /** The request rejects after this long. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface ClusterPort {
  /** This cell's id, as the other cells know it. */
  readonly selfCellId: string;
  /**
   * The home cell of a merchant, from the cluster's directory; undefined when no cell hosts it.
   * Must be quick (called for every operation on a conversation this cell does not host).
   */
  homeCellOf(tenant: string, merchant: string): string | undefined;
  /**
   * The other cells that hold devices of the user now (possibly none), cached by the mesh.
   * Rejects when the mesh cannot ask (overloaded, stopped); callers treat that as "none".
   */
  locate(tenant: string, user: string, options?: { signal?: AbortSignal }): Promise<string[]>;
  /** A delivery to `cellId` found the user gone: drop that cell from the cached location. */
  forget(tenant: string, user: string, cellId: string): void;
  /** The user is known to hold devices on `cellId`: add it to the cached location. */
  remember(tenant: string, user: string, cellId: string): void;
  /** Drop the cached location of the user, so the next `locate` asks the mesh again. */
  invalidate(tenant: string, user: string): void;
  /** A device of the user connected to this cell: cells that asked where the user is lately are told. */
  userArrived(tenant: string, user: string): void;
  /**
   * Appends entries for `destinationCellId` durably (resolves once they survive a crash); they
   * reach that cell's forward handler once each, in enqueue order, retried across partitions
   * and restarts. Rejects with an error whose `code` says why (for example `OUTBOX_FULL`,
   * `OUTBOX_INVALID_ENTRY`, `OUTBOX_STORE_FAILED`); nothing was stored then.
   */
  enqueue(destinationCellId: string, entries: readonly ClusterEntry[]): Promise<void>;
  /** Calls `listener` with each cell that leaves the cluster for good (gracefully: `left`). */
  onCellGone(listener: (cellId: string) => void): void;
  /** Sets the handler of entries forwarded to this cell (one handler; set it before the mesh starts serving). */
  onForward(handler: ClusterForwardHandler): void;
  /** One request to another cell over a versioned protocol; rejects on timeout, unreachable cell or a failed handler. */
  request(cellId: string, protocol: string, data: Uint8Array, options: ClusterRequestOptions): Promise<Uint8Array>;
  /** Serves `protocol` for the other cells (one handler per protocol). */
  handle(protocol: string, handler: ClusterRequestHandler): void;
}

/** The code of an error a port call failed with, when it has one (mesh errors do). */
export function clusterErrorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
