// The outage invariant (issue 18, "A home cell that is down"): every message a customer sends to
// a merchant while the merchant's home cell is down is taken by some cell (queued or acknowledged)
// within a bound, and delivered once and in order after the heal. Judged once the run settled.
import type { SendView, Violation } from './history.js';

export interface OutageFigures {
  /** Customers' sends made while their conversation's home cell was down. */
  readonly sends: number;
  /** Of those, answered `queued` by the cell the device was connected to. */
  readonly queued: number;
  /** Of those, queued or acknowledged within the bound (all of them when no bound is judged). */
  readonly servedWithinBound: number;
  /** Of those, acknowledged with a seq by the end of the run. */
  readonly acknowledged: number;
}

/** Violations carry the virtual time of the send (absolute ms, as History.violation takes it). */
export interface OutageVerdict {
  readonly figures: OutageFigures;
  readonly violations: Violation[];
}

/**
 * Judges the sends made during outages (`outageOf` set: the merchant's home cell had crashed and
 * not restarted yet when the customer called send):
 *
 * - `outage-unserved` (only with `acceptWithinMs`): queued or acknowledged within that long of
 *   the call. A home that is down is no excuse: a live cell takes the message (leave-a-message
 *   mode) and answers `queued`, or the home came back within the bound and acknowledged it.
 * - `outage-lost`: acknowledged with a seq by the end (after the final heal and the settle). A
 *   send that was queued, failed or is still pending is lost. (That every device of both parties
 *   then got it once is the `lost` and `duplicate` checks' business, as for every acknowledged
 *   message; that one send is stored under one seq is `double-stored`'s.)
 * - `outage-order`: for every device and conversation with an outage send, the seqs of all that
 *   device's acknowledged sends there, outage or not, rise in the order the device made them:
 *   the customer's messages keep their order across the outage and the return.
 */
export function checkOutageSends(sends: Iterable<SendView>, acceptWithinMs: number | undefined, startMs: number): OutageVerdict {
  const violations: Violation[] = [];
  let count = 0;
  let queued = 0;
  let served = 0;
  let acknowledged = 0;
  const byDeviceConv = new Map<string, SendView[]>();
  const judged = new Set<string>();
  for (const send of sends) {
    const key = `${send.device}\u0000${send.conv}`;
    const list = byDeviceConv.get(key);
    if (list === undefined) byDeviceConv.set(key, [send]);
    else list.push(send);
    if (send.outageOf === undefined) continue;
    judged.add(key);
    count++;
    const what = `${send.conv} message ${send.cmid} from ${send.device}, sent at ${Math.round(send.atMs - startMs)} ms while ${send.outageOf} was down`;
    if (send.queuedAtMs !== undefined) queued++;
    const takenAtMs = Math.min(send.queuedAtMs ?? Infinity, send.ackedAtMs ?? Infinity);
    if (acceptWithinMs === undefined || takenAtMs - send.atMs <= acceptWithinMs) served++;
    else {
      const answer = takenAtMs === Infinity ? 'never queued nor acknowledged' : `first taken after ${Math.round(takenAtMs - send.atMs)} ms`;
      violations.push({ kind: 'outage-unserved', message: `${what}: ${answer} (bound ${acceptWithinMs} ms)`, atMs: send.atMs });
    }
    if (send.ackedSeq !== undefined) acknowledged++;
    else {
      const state = send.failedCode !== undefined ? `refused with ${send.failedCode}` : send.queuedAtMs !== undefined ? 'queued but never acknowledged' : 'never acknowledged';
      violations.push({ kind: 'outage-lost', message: `${what}: ${state}`, atMs: send.atMs });
    }
  }
  for (const key of judged) {
    let previous: SendView | undefined;
    for (const send of byDeviceConv.get(key)!) {
      if (send.ackedSeq === undefined) continue;
      if (previous !== undefined && send.ackedSeq <= previous.ackedSeq!) {
        violations.push({
          kind: 'outage-order',
          message: `${send.device} sent ${send.conv} ${previous.cmid} before ${send.cmid}, stored as seq ${previous.ackedSeq} and seq ${send.ackedSeq}`,
          atMs: send.atMs,
        });
      }
      previous = send;
    }
  }
  return { figures: { sends: count, queued, servedWithinBound: served, acknowledged }, violations };
}
