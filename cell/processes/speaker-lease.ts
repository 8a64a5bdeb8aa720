import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { ProcessRecord } from './coordination-port.js';

/**
 * The speaker of a cell of several processes in a mesh (docs/operations.md, "A cell of several
 * processes"): the one process that holds the cell in the mesh (its libp2p node, its outbox,
 * inbox and location service), while every process owns its share of the merchants. The speaker
 * lease names a process and the token of its process lease; the Redis adapter is
 * assembly/redis-speaker-coordination.ts, every operation atomic there.
 */
export interface SpeakerCoordination {
  /**
   * Makes this process the speaker if no live process is (the speaker lease is gone, or names a
   * process whose lease is gone or holds another token), and only while this process's lease
   * holds `token`. True when it speaks now.
   */
  takeSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean>;
  /** Extends the speaker lease while it names this process and `token`, and this process's lease holds `token`; false otherwise. */
  renewSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean>;
  /** Deletes the speaker lease if it names this process and `token`. */
  releaseSpeaker(processId: string, token: number): Promise<void>;
  /** The speaker and where it is reached, when it is live and published its address. */
  speaker(): Promise<ProcessRecord | undefined>;
}

/** The process lease the speaker lease stands on (ProcessCoordinator's). */
export interface ProcessLease {
  readonly processId: string;
  /** The token of the lease held now; undefined between leases. */
  leaseToken(): number | undefined;
}

export interface SpeakerLeaseInit {
  readonly lease: ProcessLease;
  readonly coordination: SpeakerCoordination;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly leaseTtlMs: number;
  readonly renewIntervalMs: number;
}

/**
 * One process's bid for the speaker lease, every round: a process that does not speak learns
 * where the speaker is (its channel to the mesh goes there) and tries to take the lease, which it
 * gets once the speaker left (released it) or died (its process lease ran out, so the store's
 * fence refuses its writes already).
 *
 * A speaker that loses the lease (or its process lease, or a renewal within the TTL) never takes
 * it again: another process may speak already, under the same mesh identity, so it reports the
 * loss (`onLost`) and the process ends.
 */
export class SpeakerLease {
  /** The process token the speaker lease was taken with; undefined while this process does not speak. */
  private speakingAs: number | undefined;
  private renewedAtMs = 0;
  private lost = false;
  private speakerRecord: ProcessRecord | undefined;
  private timer: TimerHandle | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly becameSpeaker: Promise<void>;
  private resolveSpeaker: () => void = () => undefined;
  private lostHandler: (reason: string) => void = () => undefined;
  private speakerHandler: (speaker: ProcessRecord | undefined) => void = () => undefined;

  constructor(private readonly init: SpeakerLeaseInit) {
    this.becameSpeaker = new Promise((resolve) => (this.resolveSpeaker = resolve));
  }

  get processId(): string {
    return this.init.lease.processId;
  }

  /** True while this process holds the speaker lease. */
  isSpeaker(): boolean {
    return this.speakingAs !== undefined && !this.lost;
  }

  /** True once this process spoke for the cell: it ends rather than take a new process lease. */
  hasSpoken(): boolean {
    return this.speakingAs !== undefined;
  }

  /** Where the speaker is reached, as of the last round; undefined when none is known, or when this process speaks. */
  speaker(): ProcessRecord | undefined {
    return this.speakerRecord;
  }

  /** Resolves when this process takes the speaker lease. */
  whenSpeaker(): Promise<void> {
    return this.becameSpeaker;
  }

  /** Called once, when the speaker lease is lost: the process must end (see the class comment). */
  onLost(handler: (reason: string) => void): void {
    this.lostHandler = handler;
  }

  /** Called when a process that does not speak learns that the speaker changed (or that there is none). */
  onSpeakerChange(handler: (speaker: ProcessRecord | undefined) => void): void {
    this.speakerHandler = handler;
  }

  /** Runs a first round now (the first process of a cell speaks at once), then one every `renewIntervalMs`. Once the process serves. */
  async start(): Promise<void> {
    await this.runRound();
    this.schedule();
  }

  /** Releases the speaker lease: another process takes it at its next round. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    await this.ticking;
    const token = this.speakingAs;
    if (token !== undefined && !this.lost) {
      await this.init.coordination.releaseSpeaker(this.processId, token).catch((error: unknown) => this.init.logger.warn({ err: error }, 'could not release the speaker lease; it expires'));
    }
  }

  private schedule(): void {
    if (this.stopped || this.lost) return;
    this.timer = this.init.clock.setTimer(this.init.renewIntervalMs, () => {
      void this.runRound().finally(() => this.schedule());
    });
  }

  private runRound(): Promise<void> {
    this.ticking = this.ticking.then(() => this.round()).catch((error: unknown) => this.init.logger.warn({ err: error, process: this.processId }, 'a round of the speaker lease failed; retrying'));
    return this.ticking;
  }

  private async round(): Promise<void> {
    if (this.stopped || this.lost) return;
    if (this.speakingAs !== undefined) {
      await this.renew(this.speakingAs);
      return;
    }
    const { coordination, leaseTtlMs, clock } = this.init;
    const token = this.init.lease.leaseToken();
    if (token === undefined) return;
    const sentAtMs = clock.now();
    if (await coordination.takeSpeaker(this.processId, token, leaseTtlMs)) {
      this.speakingAs = token;
      this.renewedAtMs = sentAtMs;
      this.speakerRecord = undefined;
      this.init.logger.info({ process: this.processId, token }, 'speaker lease taken: this process speaks for the cell');
      this.resolveSpeaker();
      return;
    }
    const speaker = await coordination.speaker();
    const before = this.speakerRecord;
    this.speakerRecord = speaker;
    if (before?.id !== speaker?.id || before?.token !== speaker?.token || before?.http !== speaker?.http) this.speakerHandler(speaker);
  }

  private async renew(token: number): Promise<void> {
    const { coordination, clock, leaseTtlMs } = this.init;
    const sentAtMs = clock.now();
    // Past the TTL (the process was paused, say) another process may speak already.
    if (sentAtMs - this.renewedAtMs >= leaseTtlMs) return this.leaseLost('the speaker lease ran out before it was renewed');
    if (this.init.lease.leaseToken() !== token) return this.leaseLost('the process lease it stood on was lost');
    let renewed: boolean;
    try {
      renewed = await coordination.renewSpeaker(this.processId, token, leaseTtlMs);
    } catch (error) {
      this.init.logger.warn({ err: error, process: this.processId }, 'could not renew the speaker lease');
      if (clock.now() - this.renewedAtMs >= leaseTtlMs) this.leaseLost('the speaker lease could not be renewed within its TTL');
      return;
    }
    if (!renewed) return this.leaseLost('the speaker lease expired or was taken');
    // A renewal that came back after the TTL may have come back after another process took over.
    if (clock.now() - sentAtMs >= leaseTtlMs) return this.leaseLost('the renewal came back after the TTL');
    this.renewedAtMs = sentAtMs;
  }

  private leaseLost(reason: string): void {
    if (this.lost) return;
    this.lost = true;
    this.init.logger.error({ process: this.processId, reason }, 'speaker lease lost: another process may speak for the cell now');
    this.lostHandler(reason);
  }
}
