import { createInterface } from 'node:readline';
import { connectNode, parseConversationId, type ChatMessage } from '../client/index.js';

interface ChatCommandOptions {
  url?: string;
  cluster?: string;
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
  const url = await cellUrlOf(options);
  const client = await connectNode({ url, token: options.token, signal: AbortSignal.timeout(10_000) });
  const session = client.session!;
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  if (options.cluster !== undefined) say(`routed by ${options.cluster} to ${url}`);
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

/** The cell to connect to: given, or the conversation's merchant's home cell as the cluster routes it. */
async function cellUrlOf(options: ChatCommandOptions): Promise<string> {
  if (options.url !== undefined) return options.url;
  if (options.cluster === undefined) {
    process.stderr.write('cellmesh chat: pass --url <ws url of a cell> or --cluster <http url of any cell>\n');
    process.exit(2);
  }
  const { merchant } = parseConversationId(options.conv)!;
  const tenant = tenantOfToken(options.token);
  const response = await fetch(`${options.cluster.replace(/\/$/, '')}/v1/route?tenant=${encodeURIComponent(tenant)}&merchant=${encodeURIComponent(merchant)}`);
  const body = (await response.json()) as { ws?: string; error?: { code: string; message: string } };
  if (!response.ok || body.ws === undefined) {
    process.stderr.write(`cellmesh chat: cannot route to merchant ${merchant}: ${body.error?.message ?? `HTTP ${response.status}`}\n`);
    process.exit(1);
  }
  return body.ws.replace(/\/v1\/ws$/, '');
}

/** The tenant claim of a token, read without verifying (the cell verifies it). */
function tenantOfToken(token: string): string {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { tenant?: unknown };
    if (typeof payload.tenant === 'string') return payload.tenant;
  } catch {
    // Fall through to the error below.
  }
  process.stderr.write('cellmesh chat: the token carries no tenant\n');
  process.exit(2);
}
