/**
 * Memory per idle connection: how much the server process's resident set (VmRSS from
 * /proc/<pid>/status) grows per authenticated connection that just sits there.
 *
 * A few warm connections are opened and kept first, so that one-time costs (code paths compiled
 * on first use, key imports, buffers allocated with the first socket) are not charged to the
 * measured ones. Each reading follows two full collections (the GC hook, SIGUSR2) and a settle
 * pause, so garbage left by the handshakes is not counted either.
 */
import type { TargetKind } from './load-protocol.js';
import type { IdleSummary } from './report.js';
import type { GcReport, ServerProcess } from './servers.js';
import { LoadWorker } from './worker-client.js';

const SETTLE_MS = 1000;
const OPEN_TIMEOUT_MS = 10_000;
/** Bound on opening all idle connections; far above what 5,000 take on loopback. */
const OPEN_ALL_BOUND_MS = 180_000;

export interface IdleMeasurementOptions {
  server: ServerProcess;
  target: TargetKind;
  /** Tokens for the warm connections followed by the measured ones. */
  tokens: string[];
  warmConnections: number;
  concurrency: number;
  seed: number;
  log: (line: string) => void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function settledReading(server: ServerProcess): Promise<{ rssBytes: number; gc: GcReport | undefined }> {
  await sleep(SETTLE_MS);
  server.collectGarbage();
  await sleep(SETTLE_MS);
  server.collectGarbage();
  await sleep(SETTLE_MS);
  return { rssBytes: server.rssBytes(), gc: server.lastGcReport() };
}

function perConnection(after: number | null | undefined, before: number | null | undefined, count: number): number | null {
  if (after === null || after === undefined || before === null || before === undefined || count === 0) return null;
  return (after - before) / count;
}

export async function measureIdleConnections(options: IdleMeasurementOptions): Promise<IdleSummary> {
  const { server, target, warmConnections } = options;
  const measuredTokens = options.tokens.slice(warmConnections);
  const worker = new LoadWorker(1000, options.seed);
  try {
    const baseUrl = server.baseUrl;
    const warm = await worker.request(
      {
        type: 'open-idle',
        target,
        baseUrl,
        tokens: options.tokens.slice(0, warmConnections),
        concurrency: options.concurrency,
        timeoutMs: OPEN_TIMEOUT_MS,
      },
      'idle-opened',
      OPEN_ALL_BOUND_MS,
    );
    if (warm.failed > 0) throw new Error(`warm idle connections failed: ${warm.failed}: ${warm.firstError ?? ''}`);
    const before = await settledReading(server);
    const rssBeforeBytes = before.rssBytes;
    options.log(`  opening ${measuredTokens.length} idle connections (RSS before ${(rssBeforeBytes / 1048576).toFixed(1)} MiB)`);
    const opened = await worker.request(
      { type: 'open-idle', target, baseUrl, tokens: measuredTokens, concurrency: options.concurrency, timeoutMs: OPEN_TIMEOUT_MS },
      'idle-opened',
      OPEN_ALL_BOUND_MS,
    );
    const after = await settledReading(server);
    const rssAfterBytes = after.rssBytes;
    const summary: IdleSummary = {
      connections: measuredTokens.length,
      opened: opened.opened,
      failed: opened.failed,
      warmConnections,
      rssBeforeBytes,
      rssAfterBytes,
      bytesPerConnection: opened.opened > 0 ? (rssAfterBytes - rssBeforeBytes) / opened.opened : null,
      openSeconds: opened.elapsedMs / 1000,
      heapUsedBytesPerConnection: perConnection(after.gc?.heapUsed, before.gc?.heapUsed, opened.opened),
      externalBytesPerConnection: perConnection(after.gc?.external, before.gc?.external, opened.opened),
      newSpaceBytesBefore: before.gc?.newSpaceSize ?? null,
      newSpaceBytesAfter: after.gc?.newSpaceSize ?? null,
    };
    if (opened.firstError !== undefined) summary.firstError = opened.firstError;
    return summary;
  } finally {
    await worker.close();
    // Let the server take the disconnects before the next phase measures anything.
    await sleep(SETTLE_MS);
  }
}
