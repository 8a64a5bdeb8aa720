/**
 * The Node.js that cellmesh runs on, and why (README, "Node 20"). The uWebSockets.js it installs,
 * the @trufflesuite republish, carries native builds for Node 16, 18 and 20 only (newer uWS
 * releases have builds for newer Node, but they need a newer glibc than Debian 12's). On a Node
 * without one (22 and later) it prints a warning of its own and falls back to a JavaScript
 * implementation on the `ws` package, which lacks what a cell uses: its `listen` takes no
 * options, so a cell stops with a TypeError as it starts. Node before 20 lacks what the
 * dependencies need (commander 14 needs Node 20).
 */
export const SUPPORTED_NODE_MAJOR = 20;

/** The one-line warning for a Node.js other than 20 (`nodeVersion` as in process.versions.node), or undefined on Node 20. */
export function nodeVersionWarning(nodeVersion: string): string | undefined {
  const major = Number(nodeVersion.split('.')[0]);
  if (major === SUPPORTED_NODE_MAJOR) return undefined;
  const why =
    major > SUPPORTED_NODE_MAJOR
      ? 'uWebSockets.js has no native build for it and falls back to its JavaScript implementation, which cannot run a cell'
      : `the dependencies need Node ${SUPPORTED_NODE_MAJOR}`;
  return `cellmesh: warning: running on Node ${nodeVersion}, not Node ${SUPPORTED_NODE_MAJOR}: ${why} (README, "Node 20")`;
}
