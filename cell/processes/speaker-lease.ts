import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { ProcessAddress, ProcessRecord } from './coordination-port.js';

/**
 * The speaker of a cell of several processes in a mesh (docs/operations.md, "A cell of several
 * processes"): the one process that holds the cell in the mesh, owns every merchant and writes
 * to the store. Its lease lives beside the process leases in the cell's Redis; the Redis adapter
 * is assembly/redis-speaker-coordination.ts, every operation atomic there.
 */
export interface SpeakerCoordination {
  /** Takes a new fencing token and this process's lease holding it (as ProcessCoordination.register). */
  register(processId: string, ttlMs: number): Promise<number>;
  /**
   * Extends this process's lease if it still holds `token`, publishes `address` with it (none
   * before the process listens), and when `speaking` the speaker lease too, in one step: false
   * when either is no longer this process's.
   */
  renew(processId: string, token: number, speaking: boolean, address: ProcessAddress | undefined, ttlMs: number): Promise<boolean>;
  /**
   * Makes this process the speaker if no live process is (the speaker lease is gone, or names a
   * process whose lease is gone or holds another token), and only while this process's lease
   * holds `token`. True when it speaks now.
   */
  takeSpeaker(processId: string, token: number, ttlMs: number): Promise<boolean>;
  /** Deletes the speaker lease if it is this process's, then this process's lease if it holds `token`. */
  release(processId: string, token: number): Promise<void>;
  /** The speaker and where it is reached, when it is live and published its address. */
  speaker(): Promise<ProcessRecord | undefined>;
}

export interface SpeakerLeaseInit {
  readonly processId: string;
  readonly coordination: SpeakerCoordination;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly leaseTtlMs: number;
  readonly renewIntervalMs: number;
}

/**
 * One process's leases in a cell in a mesh: its own (whose fencing token the store checks on
 * every write) and, when it wins it, the speaker's, renewed together every round. A process that
 * does not speak is a standby: each round it learns where the speaker is and tries to take the
 * speaker lease, which it gets once the speaker left (released it) or died (its lease ran out).
 *
 * A speaker that loses its lease never takes a new one: another process may speak already, with
 * the same mesh identity, so it reports the loss (`onLost`) and the process ends; its writes
 * are refused by the fence from the moment its lease is gone. A standby that loses its lease
 * (it writes nothing) simply registers again.
 */
export class SpeakerLease {
  private token: number | undefined;
  private renewedAtMs = 0;
  private speaking = false;
  private lost = false;
  private address: ProcessAddress | undefined;
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
    return this.init.processId;
  }

  /** True while this process holds the speaker lease. */
  isSpeaker(): boolean {
    return this.speaking && !this.lost;
  }

  /** The fencing token of this process's lease, as the store compares it; undefined once lost. */
  fencingToken(): string | undefined {
    return this.token === undefined ? undefined : String(this.token);
  }

  /** Where the speaker is reached, as of the last round of a standby; undefined when none is known, or once this process speaks. */
  speaker(): ProcessRecord | undefined {
    return this.speakerRecord;
  }

  /** Resolves when this process takes the speaker lease (at once if it did at registration). */
  whenSpeaker(): Promise<void> {
    return this.becameSpeaker;
  }

  /** Called once, when the speaker lease is lost: the process must end (see the class comment). */
  onLost(handler: (reason: string) => void): void {
    this.lostHandler = handler;
  }

  /** Called when a standby learns that the speaker changed (or that there is none). */
  onSpeakerChange(handler: (speaker: ProcessRecord | undefined) => void): void {
    this.speakerHandler = handler;
  }

  /** Takes this process's lease, tries once for the speaker's, and keeps renewing. */
  async register(): Promise<void> {
    await this.registerLease();
    await this.round();
    this.schedule();
  }

  /** The process listens at `address`: publishes it now (standbys relay to the speaker there). */
  async publish(address: ProcessAddress): Promise<void> {
    this.address = address;
    await this.runRound();
  }

  /** Releases the speaker lease (a standby takes over at its next round) and this process's lease. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    await this.ticking;
    const token = this.token;
    this.token = undefined;
    if (token !== undefined && !this.lost) {
      await this.init.coordination.release(this.init.processId, token).catch((error: unknown) => this.init.logger.warn({ err: error }, 'could not release the leases; they expire'));
    }
  }

  private schedule(): void {
    if (this.stopped || this.lost) return;
    this.timer = this.init.clock.setTimer(this.init.renewIntervalMs, () => {
      void this.runRound().finally(() => this.schedule());
    });
  }

  private runRound(): Promise<void> {
    this.ticking = this.ticking.then(() => this.round()).catch((error: unknown) => this.init.logger.warn({ err: error, process: this.init.processId }, 'a round of the speaker lease failed; retrying'));
    return this.ticking;
  }

  private async round(): Promise<void> {
    if (this.stopped || this.lost) return;
    if (this.token === undefined) await this.registerLease();
    else if (!(await this.renew())) return;
    if (this.speaking) return;
    const { coordination, processId, leaseTtlMs } = this.init;
    if (await coordination.takeSpeaker(processId, this.token!, leaseTtlMs)) {
      this.speaking = true;
      this.speakerRecord = undefined;
      this.init.logger.info({ process: processId, token: this.token }, 'speaker lease taken: this process speaks for the cell');
      this.resolveSpeaker();
      return;
    }
    const speaker = await coordination.speaker();
    const before = this.speakerRecord;
    this.speakerRecord = speaker;
    if (before?.id !== speaker?.id || before?.token !== speaker?.token || before?.ws !== speaker?.ws) this.speakerHandler(speaker);
  }

  private async registerLease(): Promise<void> {
    const sentAtMs = this.init.clock.now();
    this.token = await this.init.coordination.register(this.init.processId, this.init.leaseTtlMs);
    this.renewedAtMs = sentAtMs;
  }

  /** False when the lease is lost (a speaker then reports it; a standby registers again next round). */
  private async renew(): Promise<boolean> {
    const { coordination, clock, leaseTtlMs, processId } = this.init;
    const sentAtMs = clock.now();
    // Past the TTL (the process was paused, say) another process may speak already.
    if (sentAtMs - this.renewedAtMs >= leaseTtlMs) return this.leaseLost('the lease ran out before it was renewed');
    let renewed: boolean;
    try {
      renewed = await coordination.renew(processId, this.token!, this.speaking, this.address, leaseTtlMs);
    } catch (error) {
      this.init.logger.warn({ err: error, process: processId }, 'could not renew the leases');
      return clock.now() - this.renewedAtMs >= leaseTtlMs ? this.leaseLost('the lease could not be renewed within its TTL') : false;
    }
    if (!renewed) return this.leaseLost('the lease expired or was replaced');
    // A renewal that came back after the TTL may have come back after another process took over.
    if (clock.now() - sentAtMs >= leaseTtlMs) return this.leaseLost('the renewal came back after the TTL');
    this.renewedAtMs = sentAtMs;
    return true;
  }

  private leaseLost(reason: string): false {
    if (!this.speaking) {
      this.token = undefined;
      return false;
    }
    this.lost = true;
    this.token = undefined;
    this.init.logger.error({ process: this.init.processId, reason }, 'speaker lease lost: another process may speak for the cell now');
    this.lostHandler(reason);
    return false;
  }
}
