#!/usr/bin/env node
/**
 * The `xive-remap` command: argument parsing, rendering and exit codes only; the work is done by
 * the library. Subcommands:
 *   inspect --pid N [--esb-shift S] [--json]   the ESB regions of a running VMM, from /proc/N/maps
 *   probe [--json]                             what this host offers (KVM, its capabilities, the XIVE device contract)
 *   help [command]                             the usage of every command, or of one
 * and `xive-remap --version`, `xive-remap --help`. The hot-plug demo is not a subcommand: it needs
 * the stand-ins of native-stubs/, which the library never imports (`npm start`: examples/demo.ts).
 *
 * Flow: the first argument picks a `CommandSpec` (args.ts), its arguments are parsed and checked
 * against it, then the command runs and prints text or JSON. Exit codes: 0 done (and for help,
 * --help, --version); 1 the command failed (e.g. `no such process N`), the reason on stderr; 2 a
 * bad command line: a one-line reason, then that command's usage, on stderr.
 */
import { readFileSync } from 'node:fs';
import { DEFAULT_ESB_SHIFT } from '../geometry.js';
import { realNative } from '../native/index.js';
import { UsageError, checkEsbShift, checkPid, parseOptions, shown, synopsisOf, usageOf, type CommandSpec, type ParsedOptions } from './args.js';
import { inspect, renderInspect } from './inspect.js';
import { probeHost, renderProbe } from './probe.js';

const JSON_OPTION = { name: 'json', help: 'one JSON object on stdout instead of text' } as const;

/** Every subcommand, with what runs it. */
const COMMANDS: readonly (CommandSpec & { run(o: ParsedOptions): number })[] = [
  {
    name: 'inspect',
    summary: 'the ESB regions of a running VMM, from /proc/N/maps alone: which interrupts are overlaid by which file',
    options: [
      { name: 'pid', value: 'N', required: true, help: "the VMM's process id (decimal)" },
      { name: 'esb-shift', value: 'S', help: `the VMM's esbShift, for interrupt numbers: 12, 13, 16 or 17 (default ${DEFAULT_ESB_SHIFT})` },
      JSON_OPTION,
    ],
    run(o) {
      const pid = checkPid('pid', o.values.get('pid') as string);
      const text = o.values.get('esb-shift');
      const shift = text === undefined ? DEFAULT_ESB_SHIFT : checkEsbShift('esb-shift', text as string, realNative.pageSize);
      const r = inspect(pid, shift);
      process.stdout.write(`${o.values.has('json') ? json(r) : renderInspect(r)}\n`);
      return 0;
    },
  },
  {
    name: 'probe',
    summary: 'what this host offers: architecture, page size, /dev/kvm, KVM capabilities, the XIVE device contract, vm.max_map_count',
    options: [JSON_OPTION],
    run(o) {
      const r = probeHost();
      process.stdout.write(`${o.values.has('json') ? json(r) : renderProbe(r)}\n`);
      return 0;
    },
  },
];

/** The usage of the whole command: every subcommand's synopsis and what it does. */
function mainUsage(): string {
  const rows = [...COMMANDS.map((c) => [synopsisOf(c), c.summary] as const), ['help [command]', 'this text, or the usage of one command'] as const, ['--version', 'the version of xive-remap'] as const];
  return [
    'usage: xive-remap <command> [options]',
    '',
    ...rows.flatMap(([synopsis, summary]) => [`  xive-remap ${synopsis}`, `      ${summary}`]),
    '',
    'The hot-plug demo on fake devices is `npm start` in a clone of the repository (examples/demo.ts).',
    '',
  ].join('\n');
}

function json(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x), 2);
}

/** package.json's version (dist/src/cli/main.js → the package's root; package.json always ships). */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Print a bad command line's reason and the usage that goes with it; exit code 2. */
function usageError(prefix: string, reason: string, usage: string): number {
  process.stderr.write(`${prefix}: ${reason}\n${usage}`);
  return 2;
}

/** Run the CLI with these arguments (those after `xive-remap`); returns the exit code. */
export function main(argv: readonly string[]): number {
  const [first, ...rest] = argv;
  if (first === undefined) return usageError('xive-remap', 'no command given', mainUsage());
  if (first === '-h' || first === '--help' || (first === 'help' && rest.length === 0)) {
    process.stdout.write(mainUsage());
    return 0;
  }
  if (first === '--version') {
    if (rest.length > 0) return usageError('xive-remap', `--version takes no argument, not ${shown(rest[0] as string)}`, mainUsage());
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (first === 'help') {
    const [name, ...extra] = rest as [string, ...string[]];
    if (extra.length > 0) return usageError('xive-remap help', `unexpected argument ${shown(extra[0] as string)}`, mainUsage());
    if (name === 'help' || name === '-h' || name === '--help') {
      process.stdout.write(mainUsage());
      return 0;
    }
    const spec = COMMANDS.find((c) => c.name === name);
    if (spec === undefined) return usageError('xive-remap help', `unknown command ${shown(name)}`, mainUsage());
    process.stdout.write(usageOf(spec));
    return 0;
  }
  const spec = COMMANDS.find((c) => c.name === first);
  if (spec === undefined) {
    const hint = first === 'demo' ? ' (the hot-plug demo is `npm start` in a clone of the repository)' : '';
    return usageError('xive-remap', `${first.startsWith('-') ? 'unknown option' : 'unknown command'} ${shown(first)}${hint}`, mainUsage());
  }
  const prefix = `xive-remap ${spec.name}`;
  try {
    const options = parseOptions(spec, rest);
    if (options.help) {
      process.stdout.write(usageOf(spec));
      return 0;
    }
    return spec.run(options);
  } catch (e) {
    if (e instanceof UsageError) return usageError(prefix, e.message, usageOf(spec));
    process.stderr.write(`${prefix}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
