import '../platform/promise-with-resolvers.js';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';
const scenario = loadScenario(process.argv[2] ?? 'sim/scenarios/small.yaml');
const seed = Number(process.argv[3] ?? 1);
const report = await runSimulation({ scenario, seed, scenarioFile: process.argv[2], onProgress: (p) => process.stderr.write(`\r${p.phase} ${(p.virtualMs / 1000).toFixed(0)}s sent ${p.messagesSent} viol ${p.violations}   `) });
const { series, ...rest } = report;
console.log(JSON.stringify(rest, null, 1));
