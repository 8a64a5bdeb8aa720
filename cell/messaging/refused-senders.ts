/**
 * Devices whose send a failed write refused, per conversation. A write that fails refuses its
 * appends and those the same senders queued behind them (ConversationLog failBatch), so that a
 * client retrying its refused sends in order keeps their order. A later send that was not yet
 * queued (its conversation loading, say) or that crossed the refusal on the network would still
 * be stored ahead of the refused one: until the refused one comes again, the device's other
 * sends in the conversation are refused too, for at most REFUSAL_HOLD_MS (a client that gave it
 * up is not held for ever).
 */
export const REFUSAL_HOLD_MS = 60_000;

export class RefusedSenders {
  /** By `<party>/<device>`: the first send refused, and when. */
  private readonly refused = new Map<string, { cmid: string; atMs: number }>();

  /** `cmid` of `sender` was refused; a refusal already held (an earlier send of the same device) stays. */
  refuse(sender: string, cmid: string, nowMs: number): void {
    if (!this.refused.has(sender)) this.refused.set(sender, { cmid, atMs: nowMs });
  }

  /** Whether a send of `sender` must be refused; the refused send itself, coming again, ends the hold. */
  refuses(sender: string, cmid: string, nowMs: number): boolean {
    if (this.refused.size === 0) return false;
    const held = this.refused.get(sender);
    if (held === undefined) return false;
    if (held.cmid !== cmid && nowMs - held.atMs < REFUSAL_HOLD_MS) return true;
    this.refused.delete(sender);
    return false;
  }
}
