import type { DeskNotice } from '../protocol/frames.js';

/** The body of a system message: the desk's change in words, for clients that show only bodies. */
export function noticeText(notice: DeskNotice): string {
  switch (notice.type) {
    case 'queued':
      return `Waiting for an agent (${notice.group}).`;
    case 'assigned':
      return `${notice.name} is here to help.`;
    case 'transferred': {
      const to = notice.agent !== undefined ? (notice.name ?? notice.agent) : `the ${notice.group ?? 'next'} team`;
      return notice.note === undefined ? `Transferred to ${to}.` : `Transferred to ${to}: ${notice.note}`;
    }
    case 'released':
      return 'Your agent is no longer available; waiting for another agent.';
    case 'closed':
      return notice.by === 'inactivity' ? 'Closed after a while without messages.' : `Closed by the ${notice.by}.`;
    case 'rated':
      return notice.comment === undefined ? `Rated ${notice.score}/5.` : `Rated ${notice.score}/5: ${notice.comment}`;
  }
}
