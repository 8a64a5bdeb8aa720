/**
 * Lifeguard's local health multiplier: how much this cell suspects itself of being the slow one.
 * Every failure-detector timeout scales by it + 1.
 */
import type { Logger } from '../platform/logger.js';
import type { MeshMetrics } from './mesh-metrics.js';

/**
 * The multiplier, 0 (healthy) to `max`: raised when a probe gets no answer at all, at every
 * refutation and when the heartbeat timer fires late; lowered by every successful probe.
 */
export class LocalHealth {
  private health = 0;

  constructor(
    private readonly max: number,
    private readonly metrics: MeshMetrics,
    private readonly logger: Logger,
  ) {}

  /** The multiplier now (0 = healthy). */
  get value(): number {
    return this.health;
  }

  /** Reports the current value to the metrics (at start). */
  report(): void {
    this.metrics.localHealth(this.health);
  }

  raise(reason: string): void {
    if (this.health >= this.max) return;
    this.health++;
    this.metrics.localHealth(this.health);
    this.logger.debug({ health: this.health, reason }, 'local health multiplier raised');
  }

  lower(): void {
    if (this.health === 0) return;
    this.health--;
    this.metrics.localHealth(this.health);
  }
}
