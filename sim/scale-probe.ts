// Measures what a cluster of N cells costs the simulator at steady state, for the figures in
// docs/benchmarks.md ("sim: the simulator at scale"):
//   npm run -s sim:scale -- --cells 200 [--warmup 20] [--traffic 20] [--profile steady.cpuprofile]
// It runs sim/scenarios/large.yaml's density (10 merchants, 100 customers per cell) without
// faults and prints CPU seconds per virtual second over the traffic phase (after its first 5 s),
// the mesh deliveries per virtual second (all, and the relayed copies by topic: heartbeats per
// cell per second among them), the warmup's CPU and its relayed copies by topic (the joins' and
// the connecting devices' record gossip), the heap, and the timer count. With --profile
// it writes a V8 CPU profile of that steady window only (open it in Chrome DevTools), or from
// --profile-from virtual seconds on (1: the warmup's joins too).
import '../platform/promise-with-resolvers.js';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { Command } from 'commander';
import { AntiEntropy } from '../mesh/anti-entropy.js';
import { MemoryNetwork, MemoryTransport } from '../mesh/memory-network.js';
import type { MeshMessage, PeerId, RequestOptions } from '../mesh/transport.js';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';

// Counters of the network's work, by wrapping two methods of the memory network (a few ns per
// call): every scheduled delivery (a relayed copy or one leg of a request), and every relayed
// copy that reached a subscriber, by topic; requests, by protocol; and the anti-entropy
// exchanges asked for, by reason (an exchange is a full-directory digest each way).
const counts = { deliveries: 0, byTopic: new Map<string, number>(), exchanges: new Map<string, number>(), requests: new Map<string, number>() };
const schedule = MemoryNetwork.prototype.schedule;
MemoryNetwork.prototype.schedule = function (this: MemoryNetwork, from: PeerId, to: PeerId, deliver: (target: MemoryTransport) => void): void {
  counts.deliveries++;
  schedule.call(this, from, to, deliver);
};
const receive = MemoryTransport.prototype.receive;
MemoryTransport.prototype.receive = function (this: MemoryTransport, message: MeshMessage, seen: Set<PeerId>): void {
  counts.byTopic.set(message.topic, (counts.byTopic.get(message.topic) ?? 0) + 1);
  receive.call(this, message, seen);
};
const request = MemoryTransport.prototype.request;
MemoryTransport.prototype.request = function (this: MemoryTransport, peer: PeerId, protocol: string, data: Uint8Array, requestOptions: RequestOptions): Promise<Uint8Array> {
  counts.requests.set(protocol, (counts.requests.get(protocol) ?? 0) + 1);
  return request.call(this, peer, protocol, data, requestOptions);
};
const requestExchange = AntiEntropy.prototype.requestExchange;
AntiEntropy.prototype.requestExchange = function (this: AntiEntropy, peer: PeerId, reason: string): void {
  counts.exchanges.set(reason, (counts.exchanges.get(reason) ?? 0) + 1);
  requestExchange.call(this, peer, reason);
};
const snapshot = (): { deliveries: number; byTopic: Map<string, number>; exchanges: Map<string, number>; requests: Map<string, number> } => ({
  deliveries: counts.deliveries,
  byTopic: new Map(counts.byTopic),
  exchanges: new Map(counts.exchanges),
  requests: new Map(counts.requests),
});

const options = new Command()
  .option('--cells <n>', 'cells', '100')
  .option('--warmup <seconds>', 'virtual seconds of warmup (cells start in the first 30 %)', '20')
  .option('--traffic <seconds>', 'virtual seconds of traffic', '20')
  .option('--profile <file>', 'write a CPU profile of the steady window')
  .option('--profile-from <seconds>', 'start the profile at this virtual second instead (e.g. 1 to profile the joins of the warmup)')
  .parse(process.argv)
  .opts<{ cells: string; warmup: string; traffic: string; profile?: string; profileFrom?: string }>();
const cells = Number(options.cells);
const warmupS = Number(options.warmup);
const trafficS = Number(options.traffic);
const base = loadScenario(new URL('./scenarios/large.yaml', import.meta.url).pathname);
const scenario = { ...base, cells, customers: cells * 100, warmup: warmupS * 1_000, settle: 0, timeline: [], randomFaults: undefined };
const cpuSeconds = (): number => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
};
const session = options.profile === undefined ? undefined : new Session();
session?.connect();
await session?.post('Profiler.enable');
const steadyFromS = warmupS + Math.min(5, trafficS / 2);
const profileFromS = options.profileFrom === undefined ? steadyFromS : Number(options.profileFrom);
const samples: Array<{ virtualS: number; cpu: number; counts: ReturnType<typeof snapshot> }> = [];
let profiling = false;
const report = await runSimulation({
  scenario,
  seed: 1,
  durationMs: trafficS * 1_000,
  onProgress: (progress) => {
    const virtualS = progress.virtualMs / 1_000;
    samples.push({ virtualS, cpu: cpuSeconds(), counts: snapshot() });
    if (session !== undefined && !profiling && virtualS >= profileFromS) {
      profiling = true;
      void session.post('Profiler.start');
    }
  },
});
if (session !== undefined && options.profile !== undefined) {
  const { profile } = await session.post('Profiler.stop');
  writeFileSync(options.profile, JSON.stringify(profile));
}
const from = samples.find((sample) => sample.virtualS >= steadyFromS);
const to = samples.filter((sample) => sample.virtualS <= warmupS + trafficS).at(-1);
const warmupEnd = samples.find((sample) => sample.virtualS >= warmupS);
const perVirtualSecond = from === undefined || to === undefined || to.virtualS <= from.virtualS ? Number.NaN : (to.cpu - from.cpu) / (to.virtualS - from.virtualS);
const spanS = from === undefined || to === undefined ? Number.NaN : to.virtualS - from.virtualS;
const perSecond = (a: number, b: number): number => Math.round((b - a) / spanS);
const warmupTopicsPerSecond: Record<string, number> = {};
const warmupExchanges: Record<string, number> = {};
if (warmupEnd !== undefined) {
  for (const [topic, count] of warmupEnd.counts.byTopic) warmupTopicsPerSecond[topic] = Math.round(count / warmupEnd.virtualS);
  for (const [reason, count] of warmupEnd.counts.exchanges) warmupExchanges[reason] = count;
}
const steadyExchanges: Record<string, number> = {};
const steadyRequests: Record<string, number> = {};
if (from !== undefined && to !== undefined) {
  for (const [reason, count] of to.counts.exchanges) steadyExchanges[reason] = perSecond(from.counts.exchanges.get(reason) ?? 0, count);
  for (const [protocol, count] of to.counts.requests) steadyRequests[protocol] = perSecond(from.counts.requests.get(protocol) ?? 0, count);
}
const topicsPerSecond: Record<string, number> = {};
if (from !== undefined && to !== undefined) {
  for (const [topic, count] of to.counts.byTopic) topicsPerSecond[topic] = perSecond(from.counts.byTopic.get(topic) ?? 0, count);
}
console.log(
  JSON.stringify({
    cells,
    customers: cells * 100,
    steadyCpuSecondsPerVirtualSecond: Math.round(perVirtualSecond * 100) / 100,
    steadySimSpeedPerCpuSecond: Math.round(100 / perVirtualSecond) / 100,
    deliveriesPerVirtualSecond: from === undefined || to === undefined ? Number.NaN : perSecond(from.counts.deliveries, to.counts.deliveries),
    receivedPerVirtualSecondByTopic: topicsPerSecond,
    heartbeatsReceivedPerCellPerSecond: Math.round((topicsPerSecond['cellmesh/heartbeat/v1'] ?? 0) / cells),
    warmupCpuSeconds: Math.round(warmupEnd?.cpu ?? Number.NaN),
    warmupReceivedPerVirtualSecondByTopic: warmupTopicsPerSecond,
    warmupExchangesByReason: warmupExchanges,
    exchangesPerVirtualSecondByReason: steadyExchanges,
    requestsPerVirtualSecondByProtocol: steadyRequests,
    heapGigabytes: Math.round(process.memoryUsage().heapUsed / 1e8) / 10,
    timersFired: report.work.timersFired,
    messagesSent: report.messagesSent,
    violations: report.violations,
  }),
);
