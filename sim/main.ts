// `npm run sim -- --scenario <file> --seed <n> [--json] [--report-dir <dir>]`: the simulator's
// command on its own, the same as `npx cellmesh sim` (sim/add-sim-command.ts).
import '../platform/promise-with-resolvers.js';
import { Command } from 'commander';
import { addSimCommand } from './add-sim-command.js';

const program = new Command().name('cellmesh').showHelpAfterError();
addSimCommand(program);
await program.parseAsync(['node', 'cellmesh', 'sim', ...process.argv.slice(2)]);
