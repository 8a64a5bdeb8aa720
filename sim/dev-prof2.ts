import '../platform/promise-with-resolvers.js';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';
const base = loadScenario(process.argv[2]!);
const scenario = { ...base, warmup: Number(process.argv[3] ?? 12) * 1000, settle: 0, timeline: [], randomFaults: undefined };
let last = 0;
const report = await runSimulation({
  scenario, seed: 1, durationMs: Number(process.argv[4] ?? 2) * 1000,
  onProgress: (p) => { const cpu = process.cpuUsage(); const c = (cpu.user + cpu.system) / 1e6; process.stderr.write(`v ${(p.virtualMs / 1000).toFixed(0)}s cpu ${c.toFixed(1)} (+${(c - last).toFixed(1)}) heap ${(process.memoryUsage().heapUsed / 1e9).toFixed(2)}GB\n`); last = c; },
});
const cpu = process.cpuUsage();
console.log('cpu', ((cpu.user + cpu.system) / 1e6).toFixed(1), report.wallSeconds, report.simSpeed, report.messagesSent, report.violations, JSON.stringify(report.violationsByKind), JSON.stringify(report.work));
