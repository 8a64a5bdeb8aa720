// How the pages show a message's attachment: an image inline (a link opens it whole), any other
// file as a link that downloads it; only its name and size while there is no URL for it yet.
import type { MessageAttachment } from '../../client/browser.js';
import { h } from './dom.js';

/** `url`: GET /v1/conversations/{conv}/attachments/{id}?token=… of the conversation's cell. */
export function attachmentView(file: MessageAttachment, url: string | undefined): HTMLElement {
  const size = file.bytes < 1024 * 1024 ? `${Math.max(1, Math.round(file.bytes / 1024))} KB` : `${(file.bytes / 1024 / 1024).toFixed(1)} MB`;
  if (url === undefined) return h('p', { class: 'file' }, `${file.name} (${size})`);
  if (file.type.startsWith('image/')) {
    return h('a', { class: 'file image', href: url, target: '_blank', rel: 'noopener', 'data-focus': `file:${file.id}` }, h('img', { src: url, alt: file.name, loading: 'lazy' }));
  }
  return h('a', { class: 'file', href: url, download: file.name, 'data-focus': `file:${file.id}` }, `Download ${file.name} (${size})`);
}

/** The URL an attachment of `conv` is read from, with the page's token. */
export function attachmentUrl(httpBase: string, conv: string, id: string, token: string): string {
  return `${httpBase}/v1/conversations/${encodeURIComponent(conv)}/attachments/${encodeURIComponent(id)}?token=${encodeURIComponent(token)}`;
}

