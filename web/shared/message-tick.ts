import { h } from './dom.js';

/** How far one's own stored message got: the other side's devices have it, or read it. */
export type MessageProgress = 'sent' | 'delivered' | 'read';

/** From the other side's cursors: read (a `receipt`) and delivered (a `delivered` frame, or read). */
export function progressOf(seq: number, deliveredSeq: number, readSeq: number): MessageProgress {
  return seq <= readSeq ? 'read' : seq <= deliveredSeq ? 'delivered' : 'sent';
}

const LABELS: Record<MessageProgress, { text: string; label: string }> = {
  sent: { text: ' ✓ Sent', label: 'Sent' },
  delivered: { text: ' ✓✓ Delivered', label: 'Delivered' },
  read: { text: ' ✓✓ Read', label: 'Read' },
};

/** The tick after one's own message's time: ✓ sent, ✓✓ delivered, ✓✓ Read (accented). */
export function tickView(progress: MessageProgress): HTMLSpanElement {
  return h('span', { class: `tick ${progress}`, 'aria-label': LABELS[progress].label }, LABELS[progress].text);
}
