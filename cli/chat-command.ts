import { createInterface } from 'node:readline';
import { connectNode, parseConversationId, type ChatMessage } from '../client/index.js';

interface ChatCommandOptions {
  url: string;
  token: string;
  conv: string;
}

const HELP = 'commands: /history [n]  /inbox  /read  /quit  (anything else is sent)';

/** A terminal chat on the SDK: prints the conversation, sends each typed line. */
export async function runChatCommand(options: ChatCommandOptions): Promise<void> {
  if (parseConversationId(options.conv) === undefined) {
    process.stderr.write(`cellmesh chat: '${options.conv}' is not a conversation id (<merchant>:<customer>)\n`);
    process.exit(2);
  }
  const client = await connectNode({ url: options.url, token: options.token, signal: AbortSignal.timeout(10_000) });
  const session = client.session!;
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  say(`connected to cell ${session.cell} as ${session.user} (${session.role}, device ${session.device}); ${HELP}`);
  let lastSeq = 0;
  const show = (message: ChatMessage): void => {
    lastSeq = Math.max(lastSeq, message.seq);
    const mine = message.from === session.user;
    const where = mine && message.device !== session.device ? ` [from ${message.device}]` : '';
    say(`#${message.seq} ${mine ? 'you' : message.from}${where}: ${message.body}`);
  };
  client.on('message', (message) => {
    if (message.conv === options.conv) show(message);
  });
  client.on('receipt', (receipt) => {
    if (receipt.conv === options.conv && receipt.user !== session.user) say(`   (${receipt.user} read up to #${receipt.seq})`);
  });
  client.on('state', (change) => {
    if (change.state === 'reconnecting') say(`   (connection lost; reconnecting in ${change.delayMs ?? 0} ms)`);
    if (change.state === 'open' && change.previous === 'reconnecting') say('   (reconnected)');
    if (change.state === 'replaced') say('   (this device connected elsewhere; closing)');
  });

  const input = createInterface({ input: process.stdin });
  for await (const line of input) {
    const text = line.trim();
    if (text === '') continue;
    try {
      if (text === '/quit') break;
      else if (text === '/inbox') {
        for (const summary of await client.inbox()) say(`   ${summary.conv}: last #${summary.lastSeq}, unread ${summary.unread}`);
      } else if (text === '/read') {
        if (lastSeq > 0) await client.read(options.conv, lastSeq);
        say(`   (marked read up to #${lastSeq})`);
      } else if (text.startsWith('/history')) {
        const limit = Number(text.split(/\s+/)[1] ?? 20);
        const page = await client.history(options.conv, { limit: Number.isInteger(limit) && limit > 0 ? Math.min(limit, 200) : 20 });
        for (const message of page.messages) show(message);
        if (page.hasMore) say('   (older messages exist)');
      } else if (text.startsWith('/')) {
        say(HELP);
      } else {
        const { seq } = await client.send(options.conv, text);
        say(`   ✓ #${seq} stored`);
      }
    } catch (error) {
      say(`   ! ${(error as Error).message}`);
    }
  }
  await client.close();
  process.exit(0);
}
