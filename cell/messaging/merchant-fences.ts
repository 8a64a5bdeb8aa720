/**
 * Fences of merchants being moved out of this cell: while a merchant is fenced, writes to its
 * conversations wait, so the move copies a log that no longer changes (mesh/merchant-move.ts).
 */
export class MerchantFences {
  private readonly fences = new Map<string, Promise<void>>();

  /** Fences the merchant; writes wait until the returned release is called. */
  fence(tenant: string, merchant: string): () => void {
    const key = `${tenant}/${merchant}`;
    let lift!: () => void;
    this.fences.set(key, new Promise<void>((resolve) => (lift = resolve)));
    return () => {
      this.fences.delete(key);
      lift();
    };
  }

  /** The fence in force on the merchant, if any. */
  current(tenant: string, merchant: string): Promise<void> | undefined {
    return this.fences.get(`${tenant}/${merchant}`);
  }

  /** Resolves once no fence is in force on the merchant (one may follow another). */
  async whenSettled(tenant: string, merchant: string): Promise<void> {
    for (let fence = this.current(tenant, merchant); fence !== undefined; fence = this.current(tenant, merchant)) await fence;
  }
}
