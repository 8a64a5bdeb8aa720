import { z } from 'zod';
import type { ClusterEntry, ClusterForwardedEntry } from '../messaging/cluster-port.js';
import type { LocalErasure } from '../customer-data.js';
import type { MerchantHome } from '../protocol/frames.js';
import type { HomeDirectory } from '../routing/merchant-redirects.js';
import type { ProcessRecord } from './coordination-port.js';

/**
 * The channel between the processes of a cell of several processes in a mesh
 * (docs/operations.md, "In a mesh: owners spread, one speaker"): HTTP under `/v1/internal/` at
 * each process's `processes.advertise.http`, every call carrying the cell's secret (in its
 * Redis) and the caller's process lease with its fencing token, so that a process whose lease
 * is gone is refused (PROCESS_FENCED). The HTTP adapter is assembly/internal-channel.ts; the
 * routes are cell/access/internal-routes.ts.
 */

/** What a process that does not speak asks of the speaker: its core's way to the other cells. */
export interface SpeakerChannel {
  locate(tenant: string, user: string): Promise<string[]>;
  /** The location cache's hints (remember, forget, invalidate, userArrived): best effort. */
  tell(hint: LocationHint): Promise<void>;
  /** Resolves once the speaker's outbox holds the entries durably; rejects with the outbox's `code` otherwise. */
  enqueue(destinationCellId: string, entries: readonly ClusterEntry[]): Promise<void>;
  request(cellId: string, protocol: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** The cluster's homes as the speaker's directory has them; `unchanged` when their digest is `have`. */
  homes(have: string | undefined): Promise<{ readonly digest: string; readonly snapshot?: HomesSnapshot | undefined }>;
}

/** What the speaker asks of the process that owns a merchant. */
export interface OwnerChannel {
  /** Applies entries another cell forwarded, in their order (the owner's forward handler). */
  forward(owner: ProcessRecord, sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void>;
  /** Answers a request of another cell (the owner's handler of `protocol`). */
  serveAt(owner: ProcessRecord, fromCellId: string, protocol: string, data: Uint8Array): Promise<Uint8Array>;
  /** Which of `users` hold devices at the process. */
  localUsers(owner: ProcessRecord, tenant: string, users: readonly string[], askerCellId: string): Promise<string[]>;
  /**
   * The share of an erasure the process at `http` holds (cell/customer-erasure.ts): the customer's
   * conversations with `merchants`, which it must own, and its devices. Any process of the cell
   * may ask: the cell's secret authorizes it where no admin token travels (another cell asked).
   */
  eraseShare(http: string, tenant: string, customer: string, merchants: readonly string[]): Promise<LocalErasure>;
}

export const LocationHint = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('remember'), tenant: z.string(), user: z.string(), cellId: z.string() }),
  z.object({ kind: z.literal('forget'), tenant: z.string(), user: z.string(), cellId: z.string() }),
  z.object({ kind: z.literal('invalidate'), tenant: z.string(), user: z.string() }),
  z.object({ kind: z.literal('userArrived'), tenant: z.string(), user: z.string() }),
]);
export type LocationHint = z.infer<typeof LocationHint>;

const merchantHome = z.object({ cellId: z.string(), ws: z.string(), http: z.string(), epoch: z.number() });

/**
 * The homes of the merchants the speaker's directory names, and the cells' endpoints: what a
 * process that does not speak answers `homeCellOf` and redirects from, a round stale at most.
 */
export const HomesSnapshot = z.object({
  cells: z.array(z.object({ cellId: z.string(), ws: z.string(), http: z.string(), left: z.boolean() })),
  merchants: z.array(
    z.object({
      tenant: z.string(),
      merchant: z.string(),
      /** The cluster port's home (a home that left still claiming it stays the home: leave-a-message mode). */
      relayHome: z.string().optional(),
      /** The serving home, as redirects name it. */
      home: merchantHome.optional(),
      homeDown: z.boolean(),
    }),
  ),
});
export type HomesSnapshot = z.infer<typeof HomesSnapshot>;

/** Where the merchants of the cluster live, as a cell's process reads it. */
export interface HomesView extends HomeDirectory {
  /** The cluster port's home of a merchant (ClusterPort.homeCellOf). */
  relayHomeOf(tenant: string, merchant: string): string | undefined;
  /** The other cells of the cluster that have not left for good. */
  otherCells(): string[];
}

/** A HomesView of a snapshot. */
export function homesViewOf(snapshot: HomesSnapshot, selfCellId: string): HomesView {
  const merchants = new Map(snapshot.merchants.map((entry) => [`${entry.tenant}/${entry.merchant}`, entry]));
  const cells = new Map(snapshot.cells.map((cell) => [cell.cellId, cell]));
  return {
    relayHomeOf: (tenant, merchant) => merchants.get(`${tenant}/${merchant}`)?.relayHome,
    homeOf: (tenant, merchant): MerchantHome | undefined => merchants.get(`${tenant}/${merchant}`)?.home,
    homeIsDown: (tenant, merchant) => merchants.get(`${tenant}/${merchant}`)?.homeDown ?? false,
    endpointsOf: (cellId) => {
      const cell = cells.get(cellId);
      return cell === undefined ? undefined : { ws: cell.ws, http: cell.http };
    },
    otherCells: () => snapshot.cells.filter((cell) => !cell.left && cell.cellId !== selfCellId).map((cell) => cell.cellId),
  };
}

/** The snapshot of no cluster: before a process heard from the speaker. */
export const EMPTY_HOMES: HomesSnapshot = { cells: [], merchants: [] };
