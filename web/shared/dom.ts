// A few lines of DOM building, instead of a framework: the pages are small and the customer chat
// must stay small (docs/web.md).

type Child = Node | string | null | undefined | false;

/** An element with attributes (`class`, `aria-*`, `data-*`...), event handlers (`onclick`...) and children. */
export function h<Tag extends keyof HTMLElementTagNameMap>(
  tag: Tag,
  attributes: Record<string, string | number | boolean | ((event: Event) => void) | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[Tag] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

/** Appends the children that are nodes or text (text is never parsed as HTML). */
export function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
}

/** The element of the page with this id; a page without it is a programming error. */
export function byId<Type extends HTMLElement>(id: string): Type {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no element #${id}`);
  return element as Type;
}

/** Replaces the children of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/**
 * Runs `render`, which draws the children of `container` again, and gives the focus back to the
 * new element with the same `data-focus` key when the old one had it: a keyboard user's place
 * survives a list drawn again because a message arrived.
 */
export function keepingFocus(container: Element, render: () => void): void {
  const focused = document.activeElement;
  const key = focused instanceof HTMLElement && container.contains(focused) ? focused.dataset['focus'] : undefined;
  render();
  if (key === undefined) return;
  container.querySelector<HTMLElement>(`[data-focus="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
}

/** "14:05" in the reader's locale. */
export function timeOf(ms: number): string {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}
