import type { ClusterForwardedEntry } from '../messaging/cluster-port.js';
import { HISTORY_PROTOCOL, HistoryRequest, decodeJson, parseCrossCellEntry } from '../messaging/cross-cell-wire.js';
import { parseConversationId } from '../protocol/frames.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { ProcessRecord } from './coordination-port.js';
import type { MerchantPlacement } from './process-coordinator.js';
import type { OwnerChannel } from './speaker-channel.js';

/** What the speaker's own process does with what is dispatched to it (its core, through its ProcessClusterPort). */
export interface LocalOwner {
  forward(sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void>;
  request(fromCellId: string, protocol: string, data: Uint8Array): Promise<Uint8Array>;
  localUsers(tenant: string, users: readonly string[], askerCellId: string): readonly string[];
}

export interface SpeakerDispatchInit {
  /** Where a merchant is served (ProcessCoordinator.placement): a merchant the cell does not have (a mirror's) is here. */
  readonly placement: (tenant: string, merchant: string) => MerchantPlacement | undefined;
  /** The other live processes of the cell. */
  readonly siblings: () => readonly ProcessRecord[];
  readonly owners: OwnerChannel;
  readonly local: LocalOwner;
}

/** Where one entry or request goes: this process, one owner, or every process (a user's `gone`). */
type Target = { readonly kind: 'here' } | { readonly kind: 'owner'; readonly owner: ProcessRecord } | { readonly kind: 'everyone' };

const HERE: Target = { kind: 'here' };

/**
 * The speaker's side of a cell of several processes in a mesh (docs/operations.md, "In a mesh:
 * owners spread, one speaker"): what other cells send the cell reaches the process that owns
 * the merchant it is about. A batch the inbox hands over is split by owner, each part in its
 * order, and the batch is answered only once every part was applied, so the inbox's guarantees
 * hold: a failed part fails the batch, which the source sends again, and the owners' apply is
 * idempotent (sends by cmid, mirrors by seq, cursors by maximum). Entries about a merchant the
 * cell does not have (mirrors of conversations homed elsewhere) stay here: the speaker owns them.
 */
export class SpeakerDispatch {
  constructor(private readonly init: SpeakerDispatchInit) {}

  /**
   * An entry about no conversation (an erasure) is applied here once every entry before it was,
   * wherever they went: the speaker runs an erasure in every process, and it must erase the
   * messages the other cell sent before it (customer-erasure.ts).
   */
  async forward(sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    let run: ClusterForwardedEntry[] = [];
    for (const entry of entries) {
      if (parseCrossCellEntry(entry.payload) !== undefined) {
        run.push(entry);
        continue;
      }
      if (run.length > 0) await this.forwardSplit(sourceCellId, run);
      run = [];
      await this.init.local.forward(sourceCellId, [entry]);
    }
    if (run.length > 0) await this.forwardSplit(sourceCellId, run);
  }

  /** Entries about conversations, split by owner and applied at once. */
  private async forwardSplit(sourceCellId: string, entries: readonly ClusterForwardedEntry[]): Promise<void> {
    const local: ClusterForwardedEntry[] = [];
    const remote = new Map<string, { owner: ProcessRecord; entries: ClusterForwardedEntry[] }>();
    const toOwner = (owner: ProcessRecord, entry: ClusterForwardedEntry): void => {
      const key = `${owner.id}/${owner.token}`;
      let part = remote.get(key);
      if (part === undefined) remote.set(key, (part = { owner, entries: [] }));
      part.entries.push(entry);
    };
    const siblings = this.init.siblings();
    for (const entry of entries) {
      const target = this.targetOfEntry(entry);
      if (target.kind === 'owner') toOwner(target.owner, entry);
      else local.push(entry);
      // Every process follows users for the merchants it owns: a user's `gone` reaches each.
      if (target.kind === 'everyone') for (const sibling of siblings) toOwner(sibling, entry);
    }
    const parts = [...remote.values()].map(({ owner, entries: owned }) => this.init.owners.forward(owner, sourceCellId, owned));
    if (local.length > 0) parts.push(this.init.local.forward(sourceCellId, local));
    const outcomes = await Promise.allSettled(parts);
    const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
  }

  request(fromCellId: string, protocol: string, data: Uint8Array): Promise<Uint8Array> {
    const target = this.targetOfRequest(protocol, data);
    return target.kind === 'owner' ? this.init.owners.serveAt(target.owner, fromCellId, protocol, data) : this.init.local.request(fromCellId, protocol, data);
  }

  /** Which of `users` hold devices in any process of the cell (a location question of another cell: rare). */
  async localUsers(tenant: string, users: readonly string[], askerCellId: string): Promise<string[]> {
    const found = new Set(this.init.local.localUsers(tenant, users, askerCellId));
    const answers = await Promise.allSettled(this.init.siblings().map((sibling) => this.init.owners.localUsers(sibling, tenant, users, askerCellId)));
    for (const answer of answers) if (answer.status === 'fulfilled') for (const user of answer.value) found.add(user);
    return [...found];
  }

  private targetOfEntry(entry: ClusterForwardedEntry): Target {
    const payload = parseCrossCellEntry(entry.payload);
    // Not a conversation's (an erasure, or malformed): the speaker's core applies or drops it.
    if (payload === undefined) return HERE;
    if (payload.kind === 'gone') return { kind: 'everyone' };
    const conv = payload.kind === 'message' ? payload.message.conv : payload.conv;
    return this.targetOfConversation(payload.tenant, conv);
  }

  private targetOfRequest(protocol: string, data: Uint8Array): Target {
    if (protocol !== HISTORY_PROTOCOL) return HERE;
    const parsed = decodeJson(HistoryRequest, data);
    // A malformed request is refused by the history server here, as by any.
    return parsed === undefined ? HERE : this.targetOfConversation(parsed.tenant, parsed.conv);
  }

  private targetOfConversation(tenant: string, conv: string): Target {
    const merchant = parseConversationId(conv)?.merchant;
    if (merchant === undefined) return HERE;
    const placement = this.init.placement(tenant, merchant);
    // No owner right now (one died, its lease has not run out): refused, so the source sends it again.
    if (placement === undefined) throw new CellError(ErrorCode.OwnerUnavailable, `no process of this cell owns merchant ${merchant} right now (failing over); the source retries`);
    return placement.here ? HERE : { kind: 'owner', owner: placement.owner };
  }
}
