// The customer chat (/app/): opened from a merchant's link, it becomes a guest of that merchant
// (POST /v1/guest; the refresh token stays in localStorage, so a reload or a later visit is the
// same guest and the same conversation) and chats through the browser SDK (docs/web.md).
import { byId } from '../shared/dom.js';
import { parseChatLink } from './chat-link.js';
import { ChatSession } from './chat-session.js';
import { ChatView } from './chat-view.js';

const link = parseChatLink(window.location);
if ('error' in link) {
  const banner = byId('banner');
  banner.hidden = false;
  banner.className = 'banner fatal';
  banner.textContent = link.error;
  byId('agent').textContent = '';
} else {
  const session = new ChatSession(link, window.location.origin, window.localStorage);
  new ChatView(session, link.merchant);
  window.addEventListener('pagehide', () => void session.close());
  void session.start();
}
