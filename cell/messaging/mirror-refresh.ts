/**
 * Keeping an access cell's mirrors fresh: refreshed from their home cells when a customer's first
 * device connects (or an HTTP read needs them), and caught up by a periodic repair pass while a
 * device of the customer is here.
 */
import type { TimerHandle } from '../../platform/clock.js';
import type { Identity } from '../access/tokens.js';
import { parseConversationId, type ChatMessage } from '../protocol/frames.js';
import { clusterErrorCode } from './cluster-port.js';
import type { ConversationMirror } from './conversation-mirror.js';
import type { CrossCellContext } from './cross-cell-context.js';
import { MAX_CONVERSATIONS_PER_DEVICE } from './delivery.js';
import type { GoneHints } from './gone-hints.js';
import { keys, lastField } from './keys.js';
import { merchantConversations } from './merchant-conversations.js';

/** Most users whose wanted copies (below) are remembered; the least recently wanted are forgotten beyond. */
const MAX_USERS_WANTING_COPIES = 10_000;

export class MirrorRefresh {
  /** Customers whose mirrors are known fresh: refreshed while a device of theirs was connected here since. */
  private readonly freshUsers = new Set<string>();
  /** Customers with a device here and mirrors: what the repair pass catches up, as [tenant, user] by `tenant/user`. */
  private readonly mirroredUsers = new Map<string, readonly [string, string]>();
  /**
   * By `tenant/user`, least recently wanted first: conversations a device here asked about that
   * this cell holds no copy of, whose home could not be reached then. Nothing lists them in the
   * store, so the repair pass and the user's next connect here fetch them from this list until
   * one attempt succeeds. Kept when the user's devices leave: a device that drops and comes back
   * to this cell does not ask again.
   */
  private readonly wantedCopies = new Map<string, Set<string>>();
  private repairTimer: TimerHandle | undefined;

  constructor(
    private readonly context: CrossCellContext,
    private readonly mirror: ConversationMirror,
    private readonly goneHints: GoneHints,
    /** Delivers newly mirrored messages (CrossCellAccess.deliverMirrored). */
    private readonly deliverMirrored: (tenant: string, messages: readonly ChatMessage[]) => void,
  ) {}

  /**
   * Before a device of a customer is caught up: when no device of the user was connected here
   * since the last refresh, the user's mirrors may lack what the home cells wrote meanwhile (they
   * stop sending to a cell that said `gone`), so each is refreshed first, with `follow` so that
   * the home cell finds this cell again. Failures are logged; the device syncs from the mirror.
   */
  async prepareDevice(identity: Identity): Promise<void> {
    if (identity.role !== 'customer') return;
    const userKey = `${identity.tenant}/${identity.user}`;
    this.goneHints.userReturned(identity.tenant, identity.user);
    // Home cells that asked where the customer is lately may hold an answer without this cell.
    this.context.cluster.userArrived(identity.tenant, identity.user);
    if (this.freshUsers.has(userKey)) return;
    // A refresh that failed (a home cell out of reach) leaves the user stale: the repair pass and the next device try again.
    const { complete, mirrors } = await this.refreshUser(identity.tenant, identity.user, true);
    if (!this.context.host.customerHasDevices(identity.tenant, identity.user)) return;
    if (complete) this.freshUsers.add(userKey);
    if (mirrors > 0) this.watch(identity.tenant, identity.user);
  }

  /** The user's last device here disconnected: their mirrors may fall behind from now on. */
  userLeft(tenant: string, user: string): void {
    this.freshUsers.delete(`${tenant}/${user}`);
    this.mirroredUsers.delete(`${tenant}/${user}`);
  }

  /**
   * A merchant hosted here moved to another cell: its conversations here became mirrors (the
   * copy left behind is complete), and the customers connected here now depend on pushes from a
   * home cell that does not know them yet. They go under the repair pass.
   */
  async merchantMovedAway(tenant: string, merchant: string): Promise<void> {
    const { store, host, logger } = this.context;
    try {
      for await (const { customer } of merchantConversations(store, tenant, merchant)) {
        if (host.customerHasDevices(tenant, customer)) this.watch(tenant, customer);
      }
    } catch (error) {
      // Their next connect, send or forwarded entry puts them under the repair pass all the same.
      logger.warn({ err: error, merchant }, 'could not list the conversations of a merchant that moved away');
    }
  }

  /** Puts the user's mirrors under the repair pass while a device of theirs is here (until `userLeft`). */
  watch(tenant: string, user: string): void {
    this.mirroredUsers.set(`${tenant}/${user}`, [tenant, user]);
    this.repairTimer ??= this.context.clock.setTimer(this.context.settings.mirrorRepairIntervalMs, () => void this.repairMirrors());
  }

  /**
   * The repair pass: catches up the mirrors of every customer with a device here, one customer
   * at a time, asking the home cells to follow this cell again. Usually each history request
   * finds nothing new; otherwise the devices get what was missing, in order.
   */
  private async repairMirrors(): Promise<void> {
    const { host, logger } = this.context;
    let repaired = 0;
    for (const [key, [tenant, user]] of [...this.mirroredUsers]) {
      if (host.isDraining()) break;
      if (!host.customerHasDevices(tenant, user)) {
        this.mirroredUsers.delete(key);
        continue;
      }
      const before = this.context.counts.mirroredMessages;
      await this.refreshUser(tenant, user, true);
      repaired += this.context.counts.mirroredMessages - before;
    }
    if (repaired > 0) {
      this.context.counts.repairedMessages += repaired;
      logger.info({ messages: repaired }, 'mirror repair found messages the home cells had not pushed here');
    }
    this.repairTimer = undefined;
    if (this.mirroredUsers.size > 0 && !host.isDraining()) {
      this.repairTimer = this.context.clock.setTimer(this.context.settings.mirrorRepairIntervalMs, () => void this.repairMirrors());
    }
  }

  /**
   * Before a read of `conv` (or of all the user's conversations). For a user with no device here
   * (HTTP reads): brings the mirrors up to date first, as far as the home cells answer in time.
   * For a device here asking about a conversation this cell holds no copy of: fetches it, and
   * makes this cell a follower of the customer at its home.
   */
  async freshen(identity: Identity, conv?: { conv: string; home: string }): Promise<void> {
    if (identity.role !== 'customer') return;
    if (this.freshUsers.has(`${identity.tenant}/${identity.user}`)) {
      // A device here asks about a conversation this cell holds no copy of: the customer came
      // from another cell (it followed a move, or was sent back home), and the home cell may not
      // know yet that it is here. The copy is fetched, and the home told to send the rest here.
      if (conv !== undefined && (await this.context.store.get(keys.customerConversation(identity.tenant, identity.user, conv.conv))) === undefined) {
        // Its home out of reach, the copy is fetched later: without it the home, which may not
        // locate the customer here (her device is routed for another merchant, or its location
        // answer predates her), would send nothing here, and the device asked only once.
        if (!(await this.refreshConversation(identity.tenant, conv.conv, conv.home, true))) this.wantCopy(identity.tenant, identity.user, conv.conv);
        // Fetched, the copy goes under the repair pass all the same: the home follows this cell
        // now, but forgets that when it restarts, and then, not locating her here, would send
        // nothing more (desk.yaml seed 36). Her connect found no mirror here, so nothing else watches it.
        else if (this.context.host.customerHasDevices(identity.tenant, identity.user)) this.watch(identity.tenant, identity.user);
      }
      return;
    }
    if (conv === undefined) {
      await this.refreshUser(identity.tenant, identity.user, false);
      return;
    }
    await this.refreshConversation(identity.tenant, conv.conv, conv.home, false);
  }

  /** Refreshes the user's mirrors (the first `maxRefreshConversations`); resolves whether all succeeded, and how many there are. */
  private async refreshUser(tenant: string, user: string, follow: boolean): Promise<{ complete: boolean; mirrors: number }> {
    let entries: Array<[string, string]>;
    try {
      entries = await this.context.store.range({ ...keys.customerConversations(tenant, user), limit: MAX_CONVERSATIONS_PER_DEVICE });
    } catch (error) {
      this.context.counts.refreshFailures++;
      this.context.logger.warn({ err: error, user }, 'could not list the mirrors of a user');
      return { complete: false, mirrors: 0 };
    }
    const mirrors: Array<{ conv: string; home: string }> = [];
    const wanted = this.wantedCopies.get(`${tenant}/${user}`);
    const convs = new Set(entries.map(([key]) => lastField(key)));
    for (const conv of wanted ?? []) convs.add(conv);
    for (const conv of convs) {
      const merchant = parseConversationId(conv)?.merchant;
      const home = merchant === undefined ? undefined : this.context.remoteHomeOf(tenant, merchant);
      if (home !== undefined) mirrors.push({ conv, home });
      else wanted?.delete(conv);
      if (mirrors.length >= this.context.settings.maxRefreshConversations) break;
    }
    let next = 0;
    let complete = true;
    const worker = async (): Promise<void> => {
      while (next < mirrors.length) {
        const { conv, home } = mirrors[next++]!;
        if (!(await this.refreshConversation(tenant, conv, home, follow))) complete = false;
        else wanted?.delete(conv);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.context.settings.refreshParallelism, mirrors.length) }, worker));
    if (wanted?.size === 0) this.wantedCopies.delete(`${tenant}/${user}`);
    return { complete, mirrors: mirrors.length };
  }

  /** Puts a conversation this cell holds no copy of under the repair pass, for the user's devices here. */
  private wantCopy(tenant: string, user: string, conv: string): void {
    if (!this.context.host.customerHasDevices(tenant, user)) return;
    const key = `${tenant}/${user}`;
    const wanted = this.wantedCopies.get(key) ?? new Set<string>();
    this.wantedCopies.delete(key);
    this.wantedCopies.set(key, wanted);
    while (this.wantedCopies.size > MAX_USERS_WANTING_COPIES) this.wantedCopies.delete(this.wantedCopies.keys().next().value as string);
    // Bounded like the conversations refreshed per user; beyond, one waits for its next message.
    if (wanted.size < this.context.settings.maxRefreshConversations) wanted.add(conv);
    this.watch(tenant, user);
  }

  /** Catches one mirror up with its home cell; resolves false (logged) when that failed. */
  private async refreshConversation(tenant: string, conv: string, home: string, follow: boolean): Promise<boolean> {
    try {
      const written = await this.mirror.catchUp(tenant, conv, home, follow);
      this.context.counts.mirroredMessages += written.length;
      this.deliverMirrored(tenant, written);
      return true;
    } catch (error) {
      this.context.counts.refreshFailures++;
      this.context.logger.warn({ err: error, code: clusterErrorCode(error), conv, home }, 'could not refresh a mirror; serving what it holds');
      return false;
    }
  }
}
