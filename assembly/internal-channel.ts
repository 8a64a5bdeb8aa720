import type { ClusterEntry, ClusterForwardedEntry } from '../cell/messaging/cluster-port.js';
import { CELL_SECRET_HEADER, INTERNAL_PATHS, PROCESS_HEADER } from '../cell/access/internal-routes.js';
import { ShareAnswer } from '../cell/access/sibling-erasure.js';
import type { LocalErasure } from '../cell/customer-data.js';
import type { ProcessRecord } from '../cell/processes/coordination-port.js';
import { HomesSnapshot, type LocationHint, type OwnerChannel, type SpeakerChannel } from '../cell/processes/speaker-channel.js';
import { CodedError } from '../platform/coded-error.js';

/** How long an internal call may take, beyond a request's own timeout. */
const CALL_TIMEOUT_MS = 10_000;
/** A share of an erasure waits for the owner's merchants to be idle and deletes a customer's history: as long as over the admin API. */
const ERASE_TIMEOUT_MS = 30_000;

export interface InternalChannelInit {
  /** The cell's secret (assembly/cell-secret.ts). */
  readonly secret: string;
  readonly processId: string;
  /** This process's fencing token now; undefined between leases (every call is refused then). */
  readonly token: () => number | undefined;
  /** Where the speaker is, as of the last round of the speaker lease. */
  readonly speaker: () => ProcessRecord | undefined;
}

/**
 * An internal call that failed: `code` is the one the other process answered (OUTBOX_FULL,
 * OWNER_UNAVAILABLE, PROCESS_FENCED...), or NO_SPEAKER / NO_LEASE / INTERNAL_CALL_FAILED here.
 */
export class InternalCallError extends CodedError<string> {}

/**
 * The HTTP side of the channel between a cell's processes (cell/processes/speaker-channel.ts,
 * routes in cell/access/internal-routes.ts): Node's fetch, JSON bodies, binary as base64, the
 * cell's secret and this process's lease on every call.
 */
export class InternalChannel implements SpeakerChannel, OwnerChannel {
  constructor(private readonly init: InternalChannelInit) {}

  async locate(tenant: string, user: string): Promise<string[]> {
    return ((await this.toSpeaker(INTERNAL_PATHS.locate, { tenant, user })) as { cells: string[] }).cells;
  }

  async tell(hint: LocationHint): Promise<void> {
    await this.toSpeaker(INTERNAL_PATHS.hint, hint);
  }

  async enqueue(destination: string, entries: readonly ClusterEntry[]): Promise<void> {
    await this.toSpeaker(INTERNAL_PATHS.enqueue, { destination, entries });
  }

  async request(cellId: string, protocol: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const answer = (await this.toSpeaker(INTERNAL_PATHS.request, { cellId, protocol, data: Buffer.from(data).toString('base64'), timeoutMs }, timeoutMs + CALL_TIMEOUT_MS)) as { data: string };
    return new Uint8Array(Buffer.from(answer.data, 'base64'));
  }

  async homes(have: string | undefined): Promise<{ digest: string; snapshot?: HomesSnapshot | undefined }> {
    const speaker = this.speaker();
    const query = have === undefined ? '' : `?have=${encodeURIComponent(have)}`;
    const answer = (await this.call('GET', `${speaker.http}${INTERNAL_PATHS.homes}${query}`, undefined, CALL_TIMEOUT_MS)) as { digest: string; snapshot?: unknown };
    return { digest: answer.digest, snapshot: answer.snapshot === undefined ? undefined : HomesSnapshot.parse(answer.snapshot) };
  }

  async forward(owner: ProcessRecord, source: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    await this.call('POST', `${owner.http}${INTERNAL_PATHS.forward}`, { source, entries }, CALL_TIMEOUT_MS);
  }

  async localUsers(owner: ProcessRecord, tenant: string, users: readonly string[], asker: string): Promise<string[]> {
    return ((await this.call('POST', `${owner.http}${INTERNAL_PATHS.localUsers}`, { tenant, users, asker }, CALL_TIMEOUT_MS)) as { users: string[] }).users;
  }

  async eraseShare(http: string, tenant: string, customer: string, merchants: readonly string[]): Promise<LocalErasure> {
    const answer = ShareAnswer.safeParse(await this.call('POST', `${http}${INTERNAL_PATHS.eraseShare}`, { tenant, customer, merchants }, ERASE_TIMEOUT_MS));
    if (!answer.success) throw new InternalCallError('INTERNAL_CALL_FAILED', `POST ${http}${INTERNAL_PATHS.eraseShare}: its answer is not a share of an erasure`);
    return answer.data;
  }

  async serveAt(owner: ProcessRecord, from: string, protocol: string, data: Uint8Array): Promise<Uint8Array> {
    const answer = (await this.call('POST', `${owner.http}${INTERNAL_PATHS.serve}`, { from, protocol, data: Buffer.from(data).toString('base64') }, CALL_TIMEOUT_MS)) as { data: string };
    return new Uint8Array(Buffer.from(answer.data, 'base64'));
  }

  private speaker(): ProcessRecord {
    const speaker = this.init.speaker();
    if (speaker === undefined) throw new InternalCallError('NO_SPEAKER', 'no process speaks for the cell right now (failing over); retry');
    return speaker;
  }

  private toSpeaker(path: string, body: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<unknown> {
    return this.call('POST', `${this.speaker().http}${path}`, body, timeoutMs);
  }

  private async call(method: 'GET' | 'POST', url: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const token = this.init.token();
    if (token === undefined) throw new InternalCallError('NO_LEASE', 'this process holds no lease right now; retry');
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: { 'content-type': 'application/json', [CELL_SECRET_HEADER]: this.init.secret, [PROCESS_HEADER]: `${this.init.processId} ${token}` },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw new InternalCallError('INTERNAL_CALL_FAILED', `${method} ${url}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      parsed = {};
    }
    if (!response.ok) {
      const answer = (parsed as { error?: { code?: unknown; message?: unknown } }).error ?? {};
      throw new InternalCallError(typeof answer.code === 'string' ? answer.code : 'INTERNAL_CALL_FAILED', `${method} ${url}: HTTP ${response.status} ${typeof answer.message === 'string' ? answer.message : text.slice(0, 200)}`);
    }
    return parsed;
  }
}
