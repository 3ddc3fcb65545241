#!/usr/bin/env node
// The `mountgate` command: dispatches to one module per subcommand. Modules are imported
// only when their command runs: a socket-activated daemon should not pay for loading the
// image builder's or the inspector's dependencies before its first reply.

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, { load: () => Promise<Command>; summary: string }> = {
  userdbd: {
    load: async () => (await import('./userdbd.js')).userdbdCommand,
    summary: 'run the user namespace range daemon (io.systemd.NamespaceResource)',
  },
  mntfsd: {
    load: async () => (await import('./mntfsd.js')).mntfsdCommand,
    summary: 'run the image mount daemon (io.systemd.MountFileSystem)',
  },
  run: {
    load: async () => (await import('./run.js')).runCommand,
    summary: 'run a command inside a signed image as root of a transient user namespace',
  },
  build: {
    load: async () => (await import('./build.js')).buildCommand,
    summary: 'make a signed disk image (erofs + verity + signature) from a directory',
  },
  inspect: {
    load: async () => (await import('./inspect.js')).inspectCommand,
    summary: "show an image's partitions, verity and signature status, and whether mntfsd would mount it",
  },
  status: {
    load: async () => (await import('./status.js')).statusCommand,
    summary: 'show ranges in use, mounts handed out and whether the BPF policy is attached',
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `Usage: mountgate COMMAND [OPTIONS]\n\nCommands:\n${lines.join('\n')}\n\nRun 'mountgate COMMAND --help' for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(usage());
    return cmd === undefined ? 2 : 0;
  }
  const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!command) {
    process.stderr.write(`mountgate: unknown command '${cmd}'\n${usage()}`);
    return 2;
  }
  return (await command.load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    // Daemons return -1: they keep running until signalled.
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mountgate: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
