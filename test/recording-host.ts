import type { OwnedMerchantsHost } from '../cell/processes/process-coordinator.js';

/** The host side of one process in the coordinator's tests: what it hosts now, and every drop in order. */
export class RecordingHost implements OwnedMerchantsHost {
  readonly hosted = new Set<string>();
  readonly dropped: string[] = [];
  async hostMerchant(tenant: string, merchant: string): Promise<void> {
    this.hosted.add(`${tenant}/${merchant}`);
  }
  dropMerchant(tenant: string, merchant: string): void {
    this.hosted.delete(`${tenant}/${merchant}`);
    this.dropped.push(`${tenant}/${merchant}`);
  }
  fence(): () => void {
    return () => {};
  }
  async whenMerchantIdle(): Promise<void> {}
  async cursorsFlushed(): Promise<void> {}
}
