// The message composer both pages share: a form `composer` with a textarea, and a file input `file`.
import { byId } from './dom.js';

export interface ComposerActions {
  send(body: string): void;
  typing(): void;
  attach(file: File): void;
}

/** Enter sends, Shift+Enter is a new line (as in the desks people know); typing and picked files go to `actions`. */
export function wireComposer(text: HTMLTextAreaElement, actions: ComposerActions): void {
  const submit = (): void => {
    actions.send(text.value);
    text.value = '';
    text.focus();
  };
  byId<HTMLFormElement>('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  text.addEventListener('input', () => actions.typing());
  const files = byId<HTMLInputElement>('file');
  files.addEventListener('change', () => {
    for (const file of Array.from(files.files ?? [])) actions.attach(file);
    files.value = '';
  });
}
