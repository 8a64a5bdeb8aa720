import type { TimerHandle } from '../../platform/clock.js';
import type { AgentStatus } from '../protocol/frames.js';
import type { ConsultationRecord } from './desk-records.js';
import { MerchantDesk, type DeskSettings as RuleSettings } from './merchant-desk.js';

/** One merchant's desk as the cell runs it: the rules in memory, the records, the timers. */
export class OpenDesk {
  readonly rules: MerchantDesk;
  /** Open consultations by customer, as last decided (the store follows with each system message). */
  readonly records = new Map<string, ConsultationRecord & { opening?: boolean }>();
  readonly customerOf = new Map<string, string>();
  readonly graceTimers = new Map<string, TimerHandle>();
  /** Last message time of each assigned consultation, by customer. */
  readonly lastActivityMs = new Map<string, number>();
  /** Statuses the agents chose, applied when they connect. */
  readonly chosen = new Map<string, AgentStatus>();
  /** The merchant's supervisors, and every group one of its agents is in (kept with the people). */
  readonly supervisors = new Set<string>();
  readonly groups = new Set<string>();
  /** The system message being written per customer, which the next one waits for. */
  readonly announcing = new Map<string, Promise<void>>();
  /** Groups whose waiting customers are due a position update, and its timer. */
  readonly queuesToTell = new Set<string>();
  queueTellTimer: TimerHandle | undefined;
  sweep: TimerHandle | undefined;

  constructor(
    readonly tenant: string,
    readonly merchant: string,
    settings: RuleSettings,
  ) {
    this.rules = new MerchantDesk(settings);
  }
}
