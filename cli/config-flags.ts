import { Option, type Command } from 'commander';
import type { CommandOption, ConfigOption } from '../assembly/config-options.js';

/**
 * The flags of a command that runs from a config (`cell`, `router`), derived from its list of
 * options (assembly/cell-options.ts); cli/config-environment.ts reads them with the variables.
 */

const PLACEHOLDER = { string: '<text>', number: '<number>', list: '<a,b,...>' } as const;

/** Adds the command's own options, then a flag for every config option (help names its variable and default). */
export function addConfigFlags(command: Command, commandOptions: readonly CommandOption[], options: readonly ConfigOption[]): Command {
  for (const commandOption of commandOptions) {
    const flag = new Option(commandOption.flags, commandOption.description);
    command.addOption(commandOption.env === undefined ? flag : flag.env(commandOption.env));
  }
  for (const option of options) {
    const help = `${option.description} (env: ${option.env}, default: ${option.defaultText})`.replaceAll('`', '');
    if (option.kind === 'boolean') {
      // Both forms, so that the value stays unset, and the file decides, unless one is given.
      command.addOption(new Option(option.flag, help));
      command.addOption(new Option(`--no-${option.flag.slice(2)}`, `turns ${option.flag} off`));
    } else {
      command.addOption(new Option(`${option.flag} ${PLACEHOLDER[option.kind]}`, help));
    }
  }
  return command;
}
