// Preloaded (`node --expose-gc --import bench/gc-hook.mjs ...`) into every server the benchmark
// starts, so that the idle-connection measurement can ask for a full garbage collection with
// SIGUSR2 before it reads VmRSS. After collecting, it writes one line to stderr,
// `{"event":"bench-gc",...}`, with the process's memory breakdown, which the benchmark reads to
// explain where the resident memory goes. Plain JavaScript on purpose: it must load before tsx
// and add nothing to the process under test but one signal listener.
import { getHeapSpaceStatistics } from 'node:v8';

/** Allocates and drops this many bytes of small objects before collecting: see below. */
function touchYoungGeneration() {
  const newSpace = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
  const bytes = 3 * (newSpace?.space_size ?? 0);
  let sink = [];
  // At least 16 bytes per object (an underestimate, so more is allocated than counted): walk the young generation end to end, more than once, so both
  // semispaces are resident at every reading, as in any server that has served some traffic,
  // and a reading never depends on how far allocation had got through them by chance.
  for (let allocated = 0; allocated < bytes; allocated += 16) {
    sink.push({ allocated });
    if (sink.length >= 1024) sink = [];
  }
  return sink.length;
}

process.on('SIGUSR2', () => {
  const collect = globalThis.gc;
  if (typeof collect !== 'function') return;
  touchYoungGeneration();
  // Two passes: the first may only queue finalizers whose memory the second frees.
  collect();
  collect();
  const memory = process.memoryUsage();
  const newSpace = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
  process.stderr.write(
    `${JSON.stringify({
      event: 'bench-gc',
      rss: memory.rss,
      heapTotal: memory.heapTotal,
      heapUsed: memory.heapUsed,
      external: memory.external,
      arrayBuffers: memory.arrayBuffers,
      newSpaceSize: newSpace?.space_size ?? null,
    })}\n`,
  );
});
