import { createInterface } from 'node:readline';
import { SystemClock } from '../platform/clock.js';
import { SystemRandom } from '../platform/random.js';
import { CellmeshClient, ClientError, ClientErrorCode, parseConversationId, WsTransport, type ChatMessage, type StateChange } from '../client/index.js';
import { CliError, ExitCode, messageWithCauses } from './cli-errors.js';

interface ChatCommandOptions {
  url?: string;
  cluster?: string;
  token: string;
  conv: string;
}

const HELP = 'commands: /history [n]  /inbox  /read  /quit  (anything else is sent)';
/** How long the first connection, or the route lookup, may take before the command gives up. */
const CONNECT_TIMEOUT_MS = 10_000;

/** A terminal chat on the SDK: prints the conversation, sends each typed line. */
export async function runChatCommand(options: ChatCommandOptions): Promise<void> {
  if (parseConversationId(options.conv) === undefined) {
    throw new CliError(`'${options.conv}' is not a conversation id (<merchant>:<customer>)`, ExitCode.Usage);
  }
  const url = await cellUrlOf(options);
  const client = await connectOnce(url, options.token);
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

/**
 * Connects, and fails at the first failed attempt: a person at a terminal learns at once why
 * (refused token, nothing listening) rather than watching silent retries. Once open, the client
 * reconnects as usual. The timer is a plain one on purpose: it keeps the process alive while
 * the attempt runs (the client's own timers never do).
 */
async function connectOnce(url: string, token: string): Promise<CellmeshClient> {
  const client = new CellmeshClient({ url, token, transport: new WsTransport(), clock: new SystemClock(), random: new SystemRandom() });
  const giveUp = new AbortController();
  let failure: ClientError | undefined;
  const onState = (change: StateChange): void => {
    if (change.state !== 'reconnecting' && change.state !== 'closed') return;
    // The first failure is the reason; the close that follows it has none.
    failure ??= change.error;
    giveUp.abort();
  };
  client.on('state', onState);
  const timer = setTimeout(() => giveUp.abort(), CONNECT_TIMEOUT_MS);
  try {
    await client.connect(giveUp.signal);
    return client;
  } catch (error) {
    await client.close();
    const reason = failure ?? (error instanceof ClientError && error.code !== ClientErrorCode.Aborted ? error : undefined);
    if (reason === undefined) throw new CliError(`cannot connect to ${url}: no session within ${CONNECT_TIMEOUT_MS} ms`, ExitCode.Unreachable);
    // An HTTP status, or a close code of the cell's own (4xxx), means a cell answered and said no.
    const closeCode = reason.details.closeCode ?? 0;
    if (reason.details.httpStatus !== undefined || (closeCode >= 4000 && closeCode < 5000)) {
      throw new CliError(`${url} refused the connection: ${reason.message}`, ExitCode.Failed);
    }
    throw new CliError(`cannot connect to ${url}: ${messageWithCauses(reason)}`, ExitCode.Unreachable);
  } finally {
    clearTimeout(timer);
    client.off('state', onState);
  }
}

/** The cell to connect to: given, or the conversation's merchant's home cell as the cluster routes it. */
async function cellUrlOf(options: ChatCommandOptions): Promise<string> {
  if (options.url !== undefined) return options.url;
  if (options.cluster === undefined) throw new CliError('pass --url <ws url of a cell> or --cluster <http url of any cell>', ExitCode.Usage);
  const { merchant } = parseConversationId(options.conv)!;
  const tenant = tenantOfToken(options.token);
  const cluster = options.cluster.replace(/\/$/, '');
  let response: Response;
  let body: { ws?: string; error?: { code: string; message: string } };
  try {
    response = await fetch(`${cluster}/v1/route?tenant=${encodeURIComponent(tenant)}&merchant=${encodeURIComponent(merchant)}`, {
      signal: AbortSignal.timeout(CONNECT_TIMEOUT_MS),
    });
    body = (await response.json()) as typeof body;
  } catch (error) {
    throw new CliError(`cannot reach the cluster at ${cluster}: ${messageWithCauses(error)}`, ExitCode.Unreachable);
  }
  if (!response.ok || body.ws === undefined) {
    throw new CliError(`cannot route to merchant ${merchant}: ${body.error?.message ?? `HTTP ${response.status}`}`, ExitCode.Failed);
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
  throw new CliError('the token carries no tenant', ExitCode.Usage);
}
