// The customer's earlier consultations with the merchant, for the workbench: read from the desk's
// system messages in the conversation (one conversation per customer and merchant; docs/desk.md),
// since the desk keeps only the last closed one in its records. Only what the history loaded so
// far holds: "Load earlier messages" brings older ones.
import type { ChatMessage } from '../../client/browser.js';

export interface EarlierConsultation {
  id: string;
  /** The seq of its first system message, to scroll to. */
  firstSeq: number;
  openedTs: number;
  closedTs: number;
  closedBy: 'customer' | 'agent' | 'inactivity';
  /** Display names of the agents who served it, in order. */
  agents: string[];
  score: number | undefined;
}

/** The closed consultations among `messages` (any order), newest first; `open` (the current one) is left out. */
export function earlierConsultations(messages: Iterable<ChatMessage>, open: string | undefined): EarlierConsultation[] {
  const byId = new Map<string, EarlierConsultation & { closed: boolean }>();
  for (const message of [...messages].sort((left, right) => left.seq - right.seq)) {
    const event = message.event;
    if (message.role !== 'system' || event === undefined || event.consultation === open) continue;
    let entry = byId.get(event.consultation);
    if (entry === undefined) {
      entry = { id: event.consultation, firstSeq: message.seq, openedTs: message.ts, closedTs: 0, closedBy: 'agent', agents: [], score: undefined, closed: false };
      byId.set(event.consultation, entry);
    }
    if ((event.type === 'assigned' || event.type === 'transferred') && event.name !== undefined && entry.agents.at(-1) !== event.name) entry.agents.push(event.name);
    if (event.type === 'closed') Object.assign(entry, { closed: true, closedTs: message.ts, closedBy: event.by });
    if (event.type === 'rated') entry.score = event.score;
  }
  return [...byId.values()]
    .filter((entry) => entry.closed)
    .map(({ closed: _closed, ...entry }) => entry)
    .sort((left, right) => right.firstSeq - left.firstSeq);
}
