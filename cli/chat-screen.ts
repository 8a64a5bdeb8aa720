import { CloseCode, type CellmeshClient, type ChatMessage, type ConsultationView } from '../client/index.js';

/**
 * What `cellmesh chat` prints of the client's events, and what it remembers for the commands:
 * the conversation being written to, each conversation's open consultation, the display names
 * of agents, the last seq seen. A customer sees its own conversation; an agent sees every
 * conversation assigned to it (each line names it), and writes to the current one.
 */
export class ChatScreen {
  /** The conversation lines go to; an agent's follows its newest assignment until it picks one. */
  current: string | undefined;
  private readonly consultations = new Map<string, string>();
  private readonly names = new Map<string, string>();
  private readonly lastSeqs = new Map<string, number>();
  /** Conversations whose consultation is assigned to this agent. */
  private readonly mine = new Set<string>();
  /** The last consultation line printed per conversation, so a repeat is not printed again. */
  private readonly shown = new Map<string, string>();
  private readonly typingShownAtMs = new Map<string, number>();
  /** A session was open before: the next `open` is a reconnect. */
  private openedBefore = false;

  /**
   * Attach it before the client connects: an agent's first assignments, and the history they
   * bring, arrive right after the welcome.
   */
  constructor(
    private readonly client: CellmeshClient,
    private readonly me: { user: string; role: 'customer' | 'agent' },
    conv: string | undefined,
    private readonly say: (line: string) => void,
  ) {
    this.current = conv;
    this.attach(client);
  }

  get isAgent(): boolean {
    return this.me.role === 'agent';
  }

  private attach(client: CellmeshClient): void {
    client.on('message', (message) => this.onMessage(message));
    client.on('consultation', (view) => this.onConsultation(view));
    client.on('typing', (typing) => {
      if (!this.concerns(typing.conv)) return;
      // The cell relays a typing hint up to once a second; one line per burst of typing is enough.
      const key = `${typing.conv} ${typing.user}`;
      const nowMs = Date.now();
      if (nowMs - (this.typingShownAtMs.get(key) ?? 0) < TYPING_QUIET_MS) return;
      this.typingShownAtMs.set(key, nowMs);
      this.say(`${this.prefix(typing.conv)}   (${this.names.get(typing.user) ?? typing.user} is typing…)`);
    });
    client.on('receipt', (receipt) => {
      if (this.concerns(receipt.conv) && receipt.user !== this.me.user) this.say(`${this.prefix(receipt.conv)}   (${this.nameOf(receipt.user)} read up to #${receipt.seq})`);
    });
    client.on('state', (change) => {
      // A fallback cell sends its customers home (4307) once the home that was down serves again.
      if (change.state === 'reconnecting' && change.closeCode === CloseCode.MerchantElsewhere) this.say(client.homeDown === undefined ? '   (the merchant moved to another cell; following it)' : "   (the merchant's home cell is back; going there)");
      else if (change.state === 'reconnecting') this.say(`   (connection lost; reconnecting in ${change.delayMs ?? 0} ms)`);
      // Every attempt begins with `connecting`, so a reconnect is an `open` after an earlier one.
      if (change.state === 'open' && this.openedBefore) this.say(`   (reconnected to cell ${change.session?.cell ?? '?'})`);
      const down = client.homeDown;
      if (change.state === 'open' && down !== undefined) {
        this.say(`   (the merchant's home cell ${down.cellId} is down: your messages are kept here and delivered when it is back; agents will answer then)`);
      }
      if (change.state === 'open') this.openedBefore = true;
      if (change.state === 'replaced') this.say('   (this device connected elsewhere; closing)');
    });
  }

  /** Prints a stored message (also the pages of `/history`). */
  show(message: ChatMessage): void {
    this.lastSeqs.set(message.conv, Math.max(this.lastSeqs.get(message.conv) ?? 0, message.seq));
    const prefix = this.prefix(message.conv);
    if (message.role === 'system') {
      this.say(`${prefix}— ${message.body}`);
      return;
    }
    const mine = message.from === this.me.user && message.role === this.me.role;
    const device = this.client.session?.device;
    const where = mine && device !== undefined && message.device !== device ? ` [from ${message.device}]` : '';
    this.say(`${prefix}#${message.seq} ${mine ? 'you' : this.nameOf(message.from)}${where}: ${message.body}`);
  }

  lastSeqOf(conv: string): number {
    return this.lastSeqs.get(conv) ?? 0;
  }

  /** The open (or last) consultation of `conv`, so that a `/close` sent again cannot close the next one. */
  consultationOf(conv: string): string | undefined {
    return this.consultations.get(conv);
  }

  private onMessage(message: ChatMessage): void {
    if (!this.concerns(message.conv)) return;
    this.typingShownAtMs.delete(`${message.conv} ${message.from}`);
    const notice = message.event;
    if (notice !== undefined) {
      this.consultations.set(message.conv, notice.consultation);
      if ((notice.type === 'assigned' || notice.type === 'transferred') && notice.agent !== undefined && notice.name !== undefined) this.names.set(notice.agent, notice.name);
    }
    this.show(message);
  }

  private onConsultation(view: ConsultationView): void {
    this.consultations.set(view.conv, view.consultation);
    if (view.agent !== undefined && view.agentName !== undefined) this.names.set(view.agent, view.agentName);
    if (this.isAgent) {
      this.onDeskChange(view);
      return;
    }
    if (view.conv !== this.current) return;
    const line = consultationLine(view);
    if (line === undefined || this.shown.get(view.conv) === line) return;
    this.shown.set(view.conv, line);
    this.say(`   (${line})`);
  }

  /** An agent's consultations that were open before it connected (from `desk`): they are its own from the start. */
  adopt(views: readonly ConsultationView[]): void {
    for (const view of views) if (view.state === 'assigned' && view.agent === this.me.user) this.onDeskChange(view);
  }

  /** An agent hears of every consultation of its merchant: it is told of its own, and of new waiting customers. */
  private onDeskChange(view: ConsultationView): void {
    const assignedToMe = view.state === 'assigned' && view.agent === this.me.user;
    if (assignedToMe && !this.mine.has(view.conv)) {
      this.mine.add(view.conv);
      if (this.current === undefined || !this.mine.has(this.current)) {
        this.current = view.conv;
        this.say(`   (${view.conv} is yours; you now write to it, /conv <id> to switch)`);
      } else {
        this.say(`   (${view.conv} is yours too; /conv ${view.conv} to write to it)`);
      }
      return;
    }
    if (!assignedToMe) this.mine.delete(view.conv);
    if (view.state === 'waiting' && this.shown.get(view.conv) !== 'waiting') this.say(`   (${view.conv} waits in ${view.group}${view.position === undefined ? '' : `, ${ordinal(view.position)} in line`})`);
    this.shown.set(view.conv, view.state);
  }

  /** Whether this chat shows `conv`: a customer its own conversation, an agent every one it gets. */
  private concerns(conv: string): boolean {
    return this.isAgent || conv === this.current;
  }

  /** An agent's lines name their conversation; a customer has only one. */
  private prefix(conv: string): string {
    return this.isAgent ? `[${conv}] ` : '';
  }

  private nameOf(user: string): string {
    return this.names.get(user) ?? user;
  }
}

/** One "is typing" line per this long of typing. */
const TYPING_QUIET_MS = 5_000;

/** What a customer reads of its consultation: "waiting: 2nd in line, about 3 min", "assigned to Ann". */
export function consultationLine(view: ConsultationView): string | undefined {
  switch (view.state) {
    case 'waiting': {
      const position = view.position === undefined ? 'in line' : `${ordinal(view.position)} in line`;
      return view.estimatedWaitMs === undefined ? `waiting: ${position}` : `waiting: ${position}, ${aboutMinutes(view.estimatedWaitMs)}`;
    }
    case 'assigned':
      return `assigned to ${view.agentName ?? view.agent ?? 'an agent'}`;
    case 'closed':
      return 'closed; /rate 1-5 to rate it, or write again to start anew';
  }
}

export function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' } as Record<number, string>)[n % 10] ?? 'th';
  return `${n}${suffix}`;
}

function aboutMinutes(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  return minutes < 1 ? 'under a minute' : `about ${minutes} min`;
}
