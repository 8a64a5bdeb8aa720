import { SystemClock } from '../platform/clock.js';
import { SystemRandom } from '../platform/random.js';
import { CellmeshClient, ClientError, ClientErrorCode, CloseCode, WsTransport, type StateChange } from '../client/index.js';
import { CliError, ExitCode, messageWithCauses } from './cli-errors.js';
import { CHAT_HELP, runChatLine } from './chat-commands.js';
import { CONNECT_TIMEOUT_MS, identify, type ChatIdentityOptions } from './chat-identity.js';
import { ChatScreen } from './chat-screen.js';
import { ChatTerminal } from './chat-terminal.js';
import { nonEmpty, promptHidden } from './password-input.js';

interface ChatCommandOptions extends ChatIdentityOptions {
  passwordStdin?: boolean;
}

/** The least time between two typing hints this terminal sends (the cell relays one a second). */
const TYPING_HINT_INTERVAL_MS = 2_000;

/**
 * A terminal chat on the SDK: as a customer (a token, or a guest), or as an agent who logs in;
 * prints the conversation, the desk's system messages and changes, and sends each typed line.
 */
export async function runChatCommand(options: ChatCommandOptions): Promise<void> {
  let terminal: ChatTerminal | undefined;
  // The password comes before any chat line: typed without echo on a terminal, else the first line of the input.
  const password = async (): Promise<string> => {
    if (process.stdin.isTTY === true && options.passwordStdin !== true) return nonEmpty(await promptHidden(`password of ${options.login ?? 'the agent'}: `));
    terminal = new ChatTerminal();
    return nonEmpty((await terminal.nextLine()) ?? '');
  };
  const identity = await identify(options, password);
  terminal ??= new ChatTerminal();
  const say = (line: string): void => terminal!.say(line);

  // With --cluster the client routes at every reconnect and follows redirects: a moved merchant is followed without a restart.
  const where = identity.route === undefined ? { url: identity.url } : { route: identity.route };
  const client = new CellmeshClient({ ...where, token: identity.token, transport: new WsTransport(), clock: new SystemClock(), random: new SystemRandom() });
  // Lines of the desk that arrive with the welcome wait until the chat has said where it is.
  const early: string[] = [];
  let connected = false;
  const screen = new ChatScreen(client, identity, identity.conv, (line) => (connected ? say(line) : early.push(line)));
  await connectOnce(client, identity.url);
  const session = client.session!;
  for (const note of identity.notes) say(note);
  say(`connected to cell ${session.cell} as ${session.user} (${session.role}, device ${session.device})${identity.conv === undefined ? '' : `, writing to ${identity.conv}`}`);
  say(CHAT_HELP);
  connected = true;
  for (const line of early) say(line);
  // An agent picks up where it left: the consultations it holds (a merchant without a desk has none).
  if (session.role === 'agent') await client.desk().then((desk) => screen.adopt(desk.consultations), () => undefined);
  let typingSentAtMs = 0;
  terminal.onKeystroke((typed) => {
    const nowMs = Date.now();
    // A command is not a message being written.
    if (screen.current === undefined || typed.startsWith('/') || nowMs - typingSentAtMs < TYPING_HINT_INTERVAL_MS) return;
    typingSentAtMs = nowMs;
    client.typing(screen.current);
  });
  terminal.prompt();

  for (let line = await terminal.nextLine(); line !== undefined; line = await terminal.nextLine()) {
    const text = line.trim();
    if (text === '') continue;
    try {
      if (!(await runChatLine(text, client, screen, say))) break;
    } catch (error) {
      say(`   ! ${errorLine(error)}`);
    }
  }
  terminal.close();
  await client.close();
  process.exit(0);
}

/** A refusal as one line: the cell's message, with its code. */
function errorLine(error: unknown): string {
  if (error instanceof ClientError && !error.message.includes(error.code)) return `${error.message} (${error.code})`;
  return messageWithCauses(error);
}

/**
 * Connects, and fails at the first failed attempt: a person at a terminal learns at once why
 * (refused token, nothing listening) rather than watching silent retries. Once open, the client
 * reconnects as usual. The timer is a plain one on purpose: it keeps the process alive while
 * the attempt runs (the client's own timers never do).
 */
async function connectOnce(client: CellmeshClient, url: string): Promise<void> {
  const giveUp = new AbortController();
  let failure: ClientError | undefined;
  const onState = (change: StateChange): void => {
    if (change.state !== 'reconnecting' && change.state !== 'closed') return;
    // A redirect to the merchant's home (route mode) is the way there, not a failure.
    if (change.state === 'reconnecting' && change.closeCode === CloseCode.MerchantElsewhere) return;
    // The first failure is the reason; the close that follows it has none.
    failure ??= change.error;
    giveUp.abort();
  };
  client.on('state', onState);
  const timer = setTimeout(() => giveUp.abort(), CONNECT_TIMEOUT_MS);
  try {
    await client.connect(giveUp.signal);
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
