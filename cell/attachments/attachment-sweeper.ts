import type { Clock, TimerHandle } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { scan } from '../../platform/store/scan.js';
import type { Store } from '../../platform/store/store.js';
import { prefixRange } from '../messaging/keys.js';
import type { TenantConfig } from '../settings.js';
import type { AttachmentReference, AttachmentStore } from './attachment-store.js';

const DAY_MS = 24 * 60 * 60 * 1000;

export interface AttachmentSweeperInit {
  /** The cell's attachments: the same instance its routes use, whose changes it takes turns with. */
  attachments: AttachmentStore;
  store: Store;
  clock: Clock;
  logger: Logger;
  tenants: readonly TenantConfig[];
  /** The first sweep this long after `start` (default: a minute)... */
  firstSweepAfterMs?: number;
  /** ...then one every this often (default: an hour). */
  intervalMs?: number;
  /** References read per store request (default 512). */
  pageKeys?: number;
}

export interface SweepResult {
  /** References deleted: those attachments are no longer served through their conversations. */
  references: number;
  /** Contents deleted: no conversation referenced them any more. */
  contents: number;
}

/**
 * Deletes what a tenant's `retention.attachmentsDays` no longer keeps: each conversation's
 * reference to an attachment uploaded longer ago than that, then the attachment's content once
 * no conversation references it. Messages keep the attachments' metadata; downloading one after
 * it expired answers ATTACHMENT_UNKNOWN. It sweeps at start (after `firstSweepAfterMs`) and
 * every `intervalMs`, on the injected clock; a failed sweep is logged and tried again at the next.
 */
export class AttachmentSweeper {
  private timer: TimerHandle | undefined;
  private sweeping: Promise<SweepResult> | undefined;
  private stopped = false;

  constructor(private readonly init: AttachmentSweeperInit) {}

  start(): void {
    this.schedule(this.init.firstSweepAfterMs ?? 60_000);
  }

  /** Stops sweeping; resolves once a sweep under way finished its page. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.sweeping?.catch(() => undefined);
  }

  /** One sweep over every tenant that limits how long attachments are kept. */
  sweep(): Promise<SweepResult> {
    this.sweeping ??= this.sweepTenants().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = this.init.clock.setTimer(delayMs, () => {
      this.sweep().then(
        (result) => {
          if (result.references > 0) this.init.logger.info({ ...result }, 'deleted attachments past their retention');
        },
        (error: unknown) => this.init.logger.warn({ err: error }, 'sweeping expired attachments failed; trying again at the next sweep'),
      ).finally(() => this.schedule(this.init.intervalMs ?? 60 * 60 * 1000));
    });
  }

  private async sweepTenants(): Promise<SweepResult> {
    const result: SweepResult = { references: 0, contents: 0 };
    for (const tenant of this.init.tenants) {
      const days = tenant.retention?.attachmentsDays;
      if (days !== undefined) await this.sweepTenant(tenant.id, this.init.clock.now() - days * DAY_MS, result);
    }
    return result;
  }

  private async sweepTenant(tenant: string, uploadedBeforeMs: number, result: SweepResult): Promise<void> {
    const { store, attachments } = this.init;
    const pageKeys = this.init.pageKeys ?? 512;
    for await (const [key, value] of scan(store, prefixRange(`fa/${tenant}/`), pageKeys)) {
      if (this.stopped) return;
      if ((JSON.parse(value) as AttachmentReference).createdAtMs >= uploadedBeforeMs) continue;
      // fa/<tenant>/<conv>/<id>: neither a conversation id nor an attachment id holds '/'.
      const [, , conv, id] = key.split('/');
      result.references++;
      if (await attachments.forget(tenant, conv!, id!)) result.contents++;
    }
  }
}
