import '../platform/promise-with-resolvers.js';
import { loadScenario } from './scenario.js';
import { runSimulation } from './simulator.js';
const scenario = loadScenario(process.argv[2] ?? 'sim/scenarios/small.yaml');
const report = await runSimulation({ scenario, seed: Number(process.argv[3] ?? 1) });
for (const p of report.series) console.log(JSON.stringify(p));
