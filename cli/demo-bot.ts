import { connectNode, ErrorCode, loginTokenSource, type CellmeshClient, type ChatMessage } from '../client/index.js';
import { DEMO_TENANT, merchantHomeOf, type DemoCell, type DemoMerchant } from './demo-cluster.js';

/** The bot closes a consultation after answering this many messages of it... */
const ANSWERS_BEFORE_CLOSE = 3;
/** ...or once the customer has been quiet this long after its last answer, so the queue moves. */
const QUIET_CLOSE_MS = 60_000;
/** Messages older than this (a catch-up after a restart of the demo) are not answered any more. */
const STALE_MESSAGE_MS = 2 * 60_000;
/** A customer who writes one of these words is handed to a person, when the merchant has people. */
const WANTS_PERSON = /\b(human|person|someone|agent)\b/i;
/** How long the bot's first connection may take (its login included). */
const CONNECT_TIMEOUT_MS = 15_000;

/** A consultation the bot serves: its id, how many messages it answered, the timer of its quiet close. */
interface Served {
  consultation: string;
  answered: number;
  quietTimer?: NodeJS.Timeout | undefined;
}

/**
 * A demo merchant's bot agent. It logs in like any agent (`loginTokenSource`, with the password
 * the demo set through the admin API), answers the consultations the desk assigns to it (it is
 * sent nothing else), and closes each after a few answers or a quiet minute, so the customers
 * waiting behind move up. A customer who asks for a person is transferred to the merchant's
 * people. When the merchant moves (its old cell closes the bot and then refuses it), the bot asks
 * the cluster where the merchant lives now and logs in there.
 */
export class DemoBot {
  private client: CellmeshClient | undefined;
  private stopped = false;
  private readonly served = new Map<string, Served>();
  /** Per conversation, the customer's last message before the bot was assigned: the one to answer first. */
  private readonly unanswered = new Map<string, ChatMessage>();

  constructor(
    private readonly merchant: DemoMerchant,
    private readonly password: string,
    private readonly cells: readonly DemoCell[],
  ) {}

  /** Logs in at the merchant's home cell (`url`, ws://host:port) and starts answering. */
  async start(url: string): Promise<void> {
    const bot = this.merchant.bot;
    const token = loginTokenSource({ url, tenant: DEMO_TENANT, merchant: this.merchant.id, agent: bot.id, password: this.password, device: 'demo-bot' });
    const client = await connectNode({ url, token, signal: AbortSignal.timeout(CONNECT_TIMEOUT_MS) });
    this.client = client;
    client.on('message', (message) => this.onMessage(client, message));
    client.on('state', (change) => {
      const moved = change.error?.code === ErrorCode.MerchantNotHosted || change.error?.code === ErrorCode.MerchantElsewhere;
      if (change.state !== 'closed' || !moved || this.stopped) return;
      this.forgetAll();
      void this.follow();
    });
    // Consultations it held before (the demo restarted): the bot closes them after a quiet minute.
    for (const view of (await client.desk()).consultations) {
      if (view.state === 'assigned' && view.agent === bot.id) this.serve(client, view.conv, view.consultation);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.forgetAll();
    await this.client?.close();
  }

  private onMessage(client: CellmeshClient, message: ChatMessage): void {
    const conv = message.conv;
    const notice = message.event;
    if (notice === undefined) {
      if (message.role !== 'customer' || Date.now() - message.ts > STALE_MESSAGE_MS) return;
      if (this.served.has(conv)) this.answer(client, message);
      else this.unanswered.set(conv, message);
      return;
    }
    const me = this.merchant.bot.id;
    const mine = (notice.type === 'assigned' || notice.type === 'transferred') && notice.agent === me;
    if (mine) {
      this.serve(client, conv, notice.consultation);
      const first = this.unanswered.get(conv);
      this.unanswered.delete(conv);
      if (first !== undefined && Date.now() - first.ts <= STALE_MESSAGE_MS) this.answer(client, first);
    } else if (this.served.get(conv)?.consultation === notice.consultation && notice.type !== 'rated') {
      // Closed, released, or transferred to someone else: no longer the bot's.
      this.forget(conv);
    }
  }

  private serve(client: CellmeshClient, conv: string, consultation: string): void {
    this.forget(conv);
    const served: Served = { consultation, answered: 0 };
    this.served.set(conv, served);
    this.armQuietClose(client, conv, served);
  }

  private answer(client: CellmeshClient, message: ChatMessage): void {
    const conv = message.conv;
    const served = this.served.get(conv)!;
    served.answered++;
    const excerpt = message.body.length > 80 ? `${message.body.slice(0, 79)}…` : message.body;
    // Each reply's cmid derives from the message it answers, so a redelivery never answers twice.
    const cmid = `reply-${message.seq}`;
    client.read(conv, message.seq).catch(() => {});
    const group = this.merchant.handoverGroup;
    if (group !== undefined && WANTS_PERSON.test(message.body)) {
      this.forget(conv);
      void this.say(client, conv, 'Of course: let me hand you to a colleague.', cmid).then(() =>
        client.transfer(conv, { group }, { note: `asks for a person: “${excerpt}”`, consultation: served.consultation }).catch(() => {}),
      );
      return;
    }
    if (served.answered >= ANSWERS_BEFORE_CLOSE) {
      this.forget(conv);
      void this.say(client, conv, `Thanks for chatting with ${this.merchant.name}! I'm closing this chat now; write again any time.`, cmid).then(() =>
        client.closeConsultation(conv, served.consultation).catch(() => {}),
      );
      return;
    }
    const reply =
      served.answered === 1
        ? `Hi! I'm ${possessive(this.merchant.name)} bot. About “${excerpt}”: let me check that for you.${group === undefined ? '' : ' (Write "human" to talk to a person.)'}`
        : `Noted: “${excerpt}”. Anything else I can help with?`;
    void this.say(client, conv, reply, cmid);
    this.armQuietClose(client, conv, served);
  }

  private armQuietClose(client: CellmeshClient, conv: string, served: Served): void {
    clearTimeout(served.quietTimer);
    served.quietTimer = setTimeout(() => {
      if (this.served.get(conv) !== served) return;
      this.forget(conv);
      void this.say(client, conv, "It's been quiet for a while, so I'm closing this chat; write again any time.", `bye-${served.consultation}`).then(() =>
        client.closeConsultation(conv, served.consultation).catch(() => {}),
      );
    }, QUIET_CLOSE_MS);
    // The bot never keeps the demo running by itself.
    served.quietTimer.unref();
  }

  /** Sends, and swallows a refusal: the consultation may have closed or moved meanwhile. */
  private async say(client: CellmeshClient, conv: string, body: string, cmid: string): Promise<void> {
    await client.send(conv, body, { cmid }).catch(() => {});
  }

  private forget(conv: string): void {
    clearTimeout(this.served.get(conv)?.quietTimer);
    this.served.delete(conv);
  }

  private forgetAll(): void {
    for (const conv of [...this.served.keys()]) this.forget(conv);
    this.unanswered.clear();
  }

  private async follow(): Promise<void> {
    try {
      await this.start(await merchantHomeOf(this.merchant.id, this.cells));
    } catch {
      // No cell routes the merchant (the cluster is stopping): the bot ends.
    }
  }
}

/** "ACME Shoes'", "Echo Garden's". */
function possessive(name: string): string {
  return name.endsWith('s') ? `${name}'` : `${name}'s`;
}
