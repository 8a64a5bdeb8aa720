// Apart from demo-cluster.ts so that cli/main.ts can give them in the demo's options without
// loading the demo's modules for every command.

/** Ports of the demo cells: the Nth (from 1) listens on base + N, its libp2p node on base + 100 + N. */
export const DEFAULT_DEMO_PORT_BASE = 7400;
/** The highest offset from the base a demo cell uses (the extra cell's libp2p port). */
export const DEMO_PORT_SPAN = 104;
