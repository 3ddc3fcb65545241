// Option parsing shared by the `mountgate` subcommands: node:util parseArgs in strict mode, a
// -h/--help option, and one form for usage errors: `mountgate CMD: why`, the usage, exit 2.
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A subcommand as its messages name it. */
export interface Command {
  name: string;
  usage: string;
}

export type CommandOptions = NonNullable<ParseArgsConfig['options']>;

const HELP = { help: { type: 'boolean', short: 'h' } } as const;

type WithHelp<O extends CommandOptions> = O & typeof HELP;

export interface ParsedCommand<O extends CommandOptions> {
  values: ReturnType<typeof parseArgs<{ options: WithHelp<O>; strict: true }>>['values'];
  positionals: string[];
}

/** Prints `mountgate CMD: MESSAGE` and CMD's usage on stderr; returns the usage-error status. */
export function usageError(cmd: Command, message: string): number {
  process.stderr.write(`mountgate ${cmd.name}: ${message}\n${cmd.usage}`);
  return 2;
}

/**
 * Parses ARGS with OPTIONS plus -h/--help. Returns the values, or the exit status when the
 * command has nothing more to do: 0 once --help printed the usage, 2 after a usage error.
 */
export function parseCommand<const O extends CommandOptions>(
  cmd: Command,
  args: string[],
  config: { options: O; allowPositionals?: boolean },
): ParsedCommand<O> | number {
  let parsed: ParsedCommand<O>;
  try {
    const options: WithHelp<O> = { ...config.options, ...HELP };
    parsed = parseArgs({ args, options, strict: true, allowPositionals: config.allowPositionals ?? false });
  } catch (err) {
    return usageError(cmd, err instanceof Error ? err.message : String(err));
  }
  // `in` narrows the generic values type; help has no default, so it is there only when given.
  if ('help' in parsed.values && parsed.values.help === true) {
    process.stdout.write(cmd.usage);
    return 0;
  }
  return parsed;
}

/** The one positional argument NAME (e.g. IMAGE), or the usage-error status. */
export function singlePositional(cmd: Command, positionals: string[], name: string): string | number {
  if (positionals.length === 1) return positionals[0];
  return usageError(cmd, positionals.length === 0 ? `missing ${name}` : `unexpected argument '${positionals[1]}'`);
}
