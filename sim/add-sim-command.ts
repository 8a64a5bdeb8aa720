import { spawnSync } from 'node:child_process';
import { Option, type Command } from 'commander';
import type { SimCommandOptions } from './sim-command.js';

/** Exit codes: 0 all invariants held, 1 a violation, 2 bad usage or an invalid scenario, 3 the simulation itself failed. */
export const SimExitCode = { Ok: 0, Violations: 1, Usage: 2, Crashed: 3 } as const;

/**
 * V8 options the simulator runs much faster with: a 64 MiB young generation takes about a
 * quarter off the CPU time (the simulated world allocates many short-lived objects: message
 * copies, parsed JSON), and a large old space lets a thousand cells fit. V8 reads them only at
 * start, so the command runs itself again in a child process with them.
 */
export const SIM_NODE_FLAGS = ['--max-semi-space-size=64', '--max-old-space-size=16384'] as const;

/** Re-runs this process with SIM_NODE_FLAGS unless they are set; returns the child's exit code, or undefined to run here. */
export function rerunWithSimFlags(): number | undefined {
  const given = [...process.execArgv, ...(process.env['NODE_OPTIONS'] ?? '').split(/\s+/)];
  if (process.env['CELLMESH_SIM_CHILD'] === '1' || given.some((flag) => flag.startsWith('--max-semi-space-size'))) return undefined;
  const script = process.argv[1];
  if (script === undefined) return undefined;
  const child = spawnSync(process.execPath, [...SIM_NODE_FLAGS, ...process.execArgv, script, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, CELLMESH_SIM_CHILD: '1' },
  });
  return child.status ?? SimExitCode.Crashed;
}

/** Adds `sim` to a commander program (cli/main.ts, sim/main.ts): `addSimCommand(program)`. */
export function addSimCommand(program: Command): Command {
  return program
    .command('sim')
    .description('run the deterministic network simulator: real cells, mesh and SDK under virtual time and injected faults')
    .requiredOption('-s, --scenario <file>', 'scenario file, YAML or JSON (see docs/simulation.md and sim/scenarios/)')
    .option('--seed <n>', 'the seed (default: drawn and printed); the same seed, scenario and code replay a run exactly')
    .option('--json', 'print the JSON report on stdout instead of the summary')
    .option('--report-dir <dir>', 'write <scenario>-<seed>.json and .html there')
    .option('--duration <duration>', "override the scenario's duration, e.g. 90s or 5m")
    .addOption(new Option('--progress', 'draw the progress bar even when stderr is not a terminal'))
    .addOption(new Option('--no-progress', 'never draw the progress bar'))
    .action(async (options: SimCommandOptions) => {
      const childCode = rerunWithSimFlags();
      if (childCode !== undefined) {
        process.exitCode = childCode;
        return;
      }
      // The simulator loads only when `sim` runs: cli/main.ts adds this command for every command.
      const { runSimCommand } = await import('./sim-command.js');
      await runSimCommand(options);
    });
}
