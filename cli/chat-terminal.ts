import { clearLine, createInterface, cursorTo, type Interface } from 'node:readline';

/**
 * The terminal of `cellmesh chat`: lines typed (or piped) in, lines printed out. On a terminal
 * it keeps a prompt, prints incoming lines above what the user is typing, and reports
 * keystrokes (for typing indicators); on a pipe it reads and writes plain lines.
 */
export class ChatTerminal {
  private readonly input: Interface;
  private readonly lines: AsyncIterator<string>;
  private readonly interactive: boolean;

  constructor() {
    this.interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
    this.input = this.interactive ? createInterface({ input: process.stdin, output: process.stdout, terminal: true, prompt: '> ' }) : createInterface({ input: process.stdin });
    this.lines = this.input[Symbol.asyncIterator]();
  }

  /** The next line, or undefined at the end of the input (Ctrl-D, the pipe closed). */
  async nextLine(): Promise<string | undefined> {
    const next = await this.lines.next();
    return next.done === true ? undefined : next.value;
  }

  /** Prints a line; on a terminal above the prompt, keeping what the user has typed so far. */
  say(line: string): void {
    if (!this.interactive) {
      process.stdout.write(`${line}\n`);
      return;
    }
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
    process.stdout.write(`${line}\n`);
    this.input.prompt(true);
  }

  /** Shows the prompt (terminals only), once the chat is ready for input. */
  prompt(): void {
    if (this.interactive) this.input.prompt();
  }

  /** Calls `listener` with the line typed so far at each keystroke other than Enter (terminals only: a pipe has no keystrokes). */
  onKeystroke(listener: (typed: string) => void): void {
    if (!this.interactive) return;
    process.stdin.on('keypress', (_text: string | undefined, key: { name?: string } | undefined) => {
      // Readline handles the key before this listener (it was registered first), so `line` includes it.
      if (key?.name !== 'return' && key?.name !== 'enter') listener(this.input.line);
    });
  }

  close(): void {
    this.input.close();
  }
}
