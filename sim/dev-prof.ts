import { setFlagsFromString } from 'node:v8';
setFlagsFromString('--max-semi-space-size=64');
import '../platform/promise-with-resolvers.js';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';
const scenario = loadScenario(process.argv[2]!);
const report = await runSimulation({ scenario, seed: 1, durationMs: Number(process.argv[3] ?? 120) * 1000 });
const cpu = process.cpuUsage(); console.log("cpu", ((cpu.user + cpu.system) / 1e6).toFixed(1), report.wallSeconds, report.simSpeed, report.messagesSent, report.violations, JSON.stringify(report.work));
