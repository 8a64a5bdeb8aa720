/**
 * The customers of one group waiting for an agent, first come first served. Consultations leave
 * from the head when assigned, or from anywhere when closed or transferred while waiting. A
 * consultation put back because its agent was released goes ahead of everyone waiting: its
 * customer was being served already and should not start over at the back.
 */
export class GroupQueue {
  /** Waiting consultation ids in order from `head`; left ones are holes until the head passes. */
  private slots: Array<string | undefined> = [];
  private head = 0;
  private readonly indexOf = new Map<string, number>();
  /** Consultations put back, served before `slots`, in the order they first arrived. */
  private readonly front: Array<{ readonly consultation: string; readonly arrivedAtMs: number }> = [];

  get length(): number {
    return this.indexOf.size + this.front.length;
  }

  has(consultation: string): boolean {
    return this.indexOf.has(consultation) || this.frontIndexOf(consultation) >= 0;
  }

  enqueue(consultation: string): void {
    this.indexOf.set(consultation, this.slots.length);
    this.slots.push(consultation);
  }

  /** Puts a consultation back ahead of every one waiting, among those put back in the order they first arrived. */
  requeueAtHead(consultation: string, arrivedAtMs: number): void {
    let at = this.front.length;
    while (at > 0 && (this.front[at - 1] as { arrivedAtMs: number }).arrivedAtMs > arrivedAtMs) at--;
    this.front.splice(at, 0, { consultation, arrivedAtMs });
  }

  peek(): string | undefined {
    if (this.front.length > 0) return this.front[0]?.consultation;
    this.skipHoles();
    return this.slots[this.head];
  }

  shift(): string | undefined {
    if (this.front.length > 0) return this.front.shift()?.consultation;
    this.skipHoles();
    const consultation = this.slots[this.head];
    if (consultation === undefined) return undefined;
    this.slots[this.head++] = undefined;
    this.indexOf.delete(consultation);
    this.compact();
    return consultation;
  }

  remove(consultation: string): boolean {
    const atFront = this.frontIndexOf(consultation);
    if (atFront >= 0) {
      this.front.splice(atFront, 1);
      return true;
    }
    const index = this.indexOf.get(consultation);
    if (index === undefined) return false;
    this.slots[index] = undefined;
    this.indexOf.delete(consultation);
    return true;
  }

  /** 1 for the next to be served; undefined when not waiting here. Linear in the queue ahead. */
  position(consultation: string): number | undefined {
    const atFront = this.frontIndexOf(consultation);
    if (atFront >= 0) return atFront + 1;
    const index = this.indexOf.get(consultation);
    if (index === undefined) return undefined;
    let ahead = this.front.length;
    for (let at = this.head; at < index; at++) if (this.slots[at] !== undefined) ahead++;
    return ahead + 1;
  }

  /** Every waiting consultation, next first: one pass to tell a whole queue its positions. */
  *inOrder(): Generator<string> {
    for (const entry of this.front) yield entry.consultation;
    for (let at = this.head; at < this.slots.length; at++) {
      const consultation = this.slots[at];
      if (consultation !== undefined) yield consultation;
    }
  }

  private frontIndexOf(consultation: string): number {
    return this.front.findIndex((entry) => entry.consultation === consultation);
  }

  private skipHoles(): void {
    while (this.head < this.slots.length && this.slots[this.head] === undefined) this.head++;
  }

  /** Drops the served prefix once it is half the array, keeping shifts amortised O(1). */
  private compact(): void {
    if (this.head < 1024 || this.head * 2 < this.slots.length) return;
    this.slots = this.slots.slice(this.head);
    this.head = 0;
    this.indexOf.clear();
    this.slots.forEach((consultation, index) => {
      if (consultation !== undefined) this.indexOf.set(consultation, index);
    });
  }
}
