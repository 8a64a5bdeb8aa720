// How the pages pace typing notices, the same in the chat and the workbench.

/** Typing frames are relayed at most once a second; a page sends one at most every 2 s. */
export const TYPING_EVERY_MS = 2_000;
/** How long "typing…" shows after the last typing frame. */
export const TYPING_SHOWN_MS = 4_000;
