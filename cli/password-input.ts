import { CliError, ExitCode } from './cli-errors.js';

/**
 * Passwords for the commands that need one (`agents password`, `chat --login`), and tenants'
 * signing secrets (`tenants create|update --secret-stdin`): read from
 * standard input or typed at a prompt without echo, never taken from the command line, where
 * `ps` and the shell history would keep them.
 */

/**
 * The password from standard input: all of it when piped (`--password-stdin`, or any stdin that
 * is not a terminal), less one trailing newline; typed at a prompt, without echo, on a terminal.
 */
export async function readPassword(fromStdin: boolean, what = 'password'): Promise<string> {
  const stdin = process.stdin;
  const password = !fromStdin && stdin.isTTY ? await promptHidden(`${what}: `) : (await readAll(stdin)).replace(/\r?\n$/, '');
  return nonEmpty(password, what);
}

/** Fails with a usage error for an empty password (nothing piped in, or Enter alone). */
export function nonEmpty(password: string, what = 'password'): string {
  if (password === '') throw new CliError(`no ${what} on standard input (pipe it in, or use a terminal to type it)`, ExitCode.Usage);
  return password;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads one line from the terminal without echoing it; Ctrl-C aborts. */
export function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  let typed = '';
  return new Promise((resolve, reject) => {
    const done = (finish: () => void): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      finish();
    };
    const onData = (text: string): void => {
      for (const character of text) {
        if (character === '\r' || character === '\n') return done(() => resolve(typed));
        if (character === '\u0003') return done(() => reject(new CliError('cancelled', ExitCode.Failed)));
        if (character === '\u007f' || character === '\b') typed = typed.slice(0, -1);
        else typed += character;
      }
    };
    stdin.on('data', onData);
  });
}
