/** What a move needs from the cell core. */
export interface MoveHost {
  hosts(tenant: string, merchant: string): boolean;
  /** New writes to the merchant's conversations wait until the returned release is called. */
  fence(tenant: string, merchant: string): () => void;
  /** Resolves once the writes under way to the merchant's conversations are durable. */
  whenMerchantIdle(tenant: string, merchant: string): Promise<void>;
  /** Writes the delivery cursors acked so far. */
  cursorsFlushed(): Promise<void>;
  /** Starts hosting the merchant whose keys were copied in; the claim is gossiped once it resolves. */
  hostMerchant(tenant: string, merchant: string): void | Promise<void>;
  /**
   * Stops hosting: the move committed at `newHome` (its epoch). The merchant's agents connected
   * here, and customers routed for it, are redirected there (MERCHANT_ELSEWHERE, then 4307).
   * Without `newHome` the merchant was removed (tenant-catalogue.ts): there is nowhere to send them.
   */
  releaseMerchant(tenant: string, merchant: string, newHome: { cellId: string; epoch: number } | undefined): void;
}
