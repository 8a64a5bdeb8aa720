import { parseConversationId, type CellmeshClient } from '../client/index.js';
import type { ChatScreen } from './chat-screen.js';

/** The commands of `cellmesh chat`, as `/help` lists them. */
export const CHAT_HELP = [
  'commands: /history [n]  /inbox  /read  /close  /quit  (anything else is sent)',
  '  customers: /rate <1-5> [comment]',
  '  agents: /status online|busy|away  /desk  /conv <id>  /transfer <agent> [note]  /transfer @<group> [note]',
].join('\n');

const STATUSES = ['online', 'busy', 'away'] as const;

/**
 * Runs one line typed into the chat: a command, or a message to the current conversation.
 * Returns false for `/quit`. A refusal of the cell is thrown (the caller prints it on one line).
 */
export async function runChatLine(text: string, client: CellmeshClient, screen: ChatScreen, say: (line: string) => void): Promise<boolean> {
  const [command = '', ...words] = text.split(/\s+/);
  const rest = text.slice(command.length).trim();
  const conv = (): string => {
    if (screen.current === undefined) throw new Error('no conversation yet: wait for an assignment, or pick one with /conv <id>');
    return screen.current;
  };
  switch (command) {
    case '/quit':
      return false;
    case '/help':
      say(CHAT_HELP);
      return true;
    case '/inbox':
      for (const summary of await client.inbox()) say(`   ${summary.conv}: last #${summary.lastSeq}, unread ${summary.unread}`);
      return true;
    case '/read': {
      const lastSeq = screen.lastSeqOf(conv());
      if (lastSeq > 0) await client.read(conv(), lastSeq);
      say(`   (marked read up to #${lastSeq})`);
      return true;
    }
    case '/history': {
      const limit = Number(words[0] ?? 20);
      const page = await client.history(conv(), { limit: Number.isInteger(limit) && limit > 0 ? Math.min(limit, 200) : 20 });
      for (const message of page.messages) screen.show(message);
      if (page.hasMore) say('   (older messages exist)');
      return true;
    }
    case '/conv': {
      const target = words[0];
      if (target === undefined || parseConversationId(target) === undefined) throw new Error('usage: /conv <merchant>:<customer>');
      screen.current = target;
      say(`   (you now write to ${target})`);
      return true;
    }
    case '/status': {
      const status = STATUSES.find((known) => known === words[0]);
      if (status === undefined) throw new Error(`usage: /status ${STATUSES.join('|')}`);
      await client.setStatus(status);
      say(`   (you are ${status})`);
      return true;
    }
    case '/close':
      await client.closeConsultation(conv(), screen.consultationOf(conv()));
      return true;
    case '/transfer': {
      const [target, ...note] = words;
      if (target === undefined || target === '@') throw new Error('usage: /transfer <agent> [note] or /transfer @<group> [note]');
      const to = target.startsWith('@') ? { group: target.slice(1) } : { agent: target };
      const consultation = screen.consultationOf(conv());
      await client.transfer(conv(), to, { ...(note.length === 0 ? {} : { note: note.join(' ') }), ...(consultation === undefined ? {} : { consultation }) });
      return true;
    }
    case '/rate': {
      const score = Number(words[0]);
      if (!Number.isInteger(score) || score < 1 || score > 5) throw new Error('usage: /rate <1-5> [comment]');
      const comment = rest.slice(words[0]!.length).trim();
      await client.rate(conv(), score, comment === '' ? undefined : comment);
      return true;
    }
    case '/desk':
      printDesk(await client.desk(), say);
      return true;
    default:
      if (text.startsWith('/')) {
        say(CHAT_HELP);
        return true;
      }
      say(`   ✓ #${(await client.send(conv(), text)).seq} stored`);
      return true;
  }
}

function printDesk(desk: Awaited<ReturnType<CellmeshClient['desk']>>, say: (line: string) => void): void {
  say('   agents:');
  for (const agent of desk.agents) say(`     ${agent.id} (${agent.name})  ${agent.status}  ${agent.open}/${agent.capacity}  groups ${agent.groups.join(',')}`);
  say(desk.consultations.length === 0 ? '   no open consultations' : '   consultations:');
  for (const view of desk.consultations) {
    const state = view.state === 'waiting' ? `waiting${view.position === undefined ? '' : ` #${view.position}`}` : `with ${view.agent ?? '?'}`;
    say(`     ${view.conv}  ${view.group}  ${state}`);
  }
}
