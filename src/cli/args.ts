/**
 * The command line of `xive-remap`, described once per command (`CommandSpec`: its options, their
 * value names and help) and used twice: to parse a command's arguments and to print its usage, so
 * the two cannot disagree. Parsing is pure (no I/O): `parseOptions` either returns the options'
 * raw values or throws a `UsageError` whose message is a one-line reason; the caller prints it with
 * the command's usage and exits 2. Values are checked by the command itself (`checkPid`,
 * `checkEsbShift` here), which throws `UsageError` the same way.
 */
import { ESB_SHIFTS, esbGeometry } from '../geometry.js';

/** One `--name [VALUE]` option of a command. */
export interface OptionSpec {
  /** The name, without the leading `--`. */
  readonly name: string;
  /** The value's placeholder in the usage (`N`); absent for a flag, which takes no value. */
  readonly value?: string;
  /** Whether the command cannot run without it. */
  readonly required?: boolean;
  /** One line of help. */
  readonly help: string;
}

/** A subcommand: its name, what it does, its options (`-h`/`--help` is implied for every one). */
export interface CommandSpec {
  /** The word after `xive-remap`. */
  readonly name: string;
  /** What it does, one line. */
  readonly summary: string;
  /** Its options, in the order the usage lists them. */
  readonly options: readonly OptionSpec[];
  /** Extra lines at the end of its usage, if any. */
  readonly notes?: readonly string[];
}

/** A bad command line: the message is the one-line reason. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** What `parseOptions` found: `help` if -h/--help was given, else each given option's value (`true` for a flag). */
export interface ParsedOptions {
  /** `-h` or `--help` was given: print the usage, nothing else is checked. */
  readonly help: boolean;
  /** Option name → its value (a flag: `true`); options not given are absent. */
  readonly values: ReadonlyMap<string, string | true>;
}

/** An argument as it may be shown inside a one-line message (quoted, control characters escaped). */
export function shown(arg: string): string {
  return JSON.stringify(arg);
}

/**
 * Parse a command's arguments (those after the command's name): `--name VALUE`, `--name=VALUE`,
 * flags as `--name`; no positional arguments. -h/--help anywhere before `--` wins over everything.
 * @throws UsageError for an unknown option, a missing or unwanted value, an option given twice, a
 *   positional argument, or a required option left out
 */
export function parseOptions(spec: CommandSpec, argv: readonly string[]): ParsedOptions {
  const end = argv.indexOf('--') === -1 ? argv.length : argv.indexOf('--');
  if (argv.slice(0, end).some((a) => a === '-h' || a === '--help')) return { help: true, values: new Map() };
  const values = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (i >= end) {
      if (i > end) throw new UsageError(`unexpected argument ${shown(arg)}`);
      continue; // the `--` itself
    }
    if (!arg.startsWith('-') || arg === '-') throw new UsageError(`unexpected argument ${shown(arg)}`);
    if (!arg.startsWith('--')) throw new UsageError(`unknown option ${shown(arg)}`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const option = spec.options.find((o) => o.name === name);
    if (option === undefined) throw new UsageError(`unknown option ${eq === -1 ? shown(arg) : shown(arg.slice(0, eq))}`);
    if (values.has(name)) throw new UsageError(`--${name} given twice`);
    if (option.value === undefined) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      values.set(name, true);
      continue;
    }
    // A value is the rest after `=`, else the next argument unless that is another option (or `--`).
    // A lone dash-number such as `-5` is taken as the value, so the check of the value can name it.
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else if (i + 1 < end && !(argv[i + 1] as string).startsWith('--')) value = argv[++i];
    if (value === undefined || value === '') throw new UsageError(`--${name} needs a value (--${name} ${option.value})`);
    values.set(name, value);
  }
  const missing = spec.options.find((o) => o.required && !values.has(o.name));
  if (missing !== undefined) throw new UsageError(`--${missing.name} is required`);
  return { help: false, values };
}

/** A command's synopsis: `inspect --pid N [--esb-shift S] [--json]`. */
export function synopsisOf(spec: CommandSpec): string {
  const options = spec.options.map((o) => {
    const text = o.value === undefined ? `--${o.name}` : `--${o.name} ${o.value}`;
    return o.required ? text : `[${text}]`;
  });
  return [spec.name, ...options].join(' ');
}

/** The usage of one command, as printed by `xive-remap help <command>` and after its argument errors. */
export function usageOf(spec: CommandSpec): string {
  const rows = [...spec.options.map((o) => [o.value === undefined ? `--${o.name}` : `--${o.name} ${o.value}`, o.help] as const), ['-h, --help', 'this text'] as const];
  const width = Math.max(...rows.map(([left]) => left.length)) + 3;
  return [
    `usage: xive-remap ${synopsisOf(spec)}`,
    '',
    `${spec.summary[0]?.toUpperCase()}${spec.summary.slice(1)}.`,
    '',
    ...rows.map(([left, help]) => `  ${left.padEnd(width)}${help}`),
    ...(spec.notes ?? []),
    '',
  ].join('\n');
}

/** PID_MAX_LIMIT on 64-bit Linux: no process id is larger. */
export const PID_MAX_LIMIT = 4_194_304;

/** A process id given as text: decimal digits only, 1 to PID_MAX_LIMIT. @throws UsageError naming the option and the text */
export function checkPid(option: string, text: string): number {
  const pid = /^[1-9][0-9]{0,6}$/.test(text) ? Number(text) : NaN;
  if (!(pid <= PID_MAX_LIMIT)) throw new UsageError(`--${option} must be a process id (decimal, 1 to ${PID_MAX_LIMIT}), not ${shown(text)}`);
  return pid;
}

/** An esbShift given as text: one of ESB_SHIFTS, and usable with this host's page size. @throws UsageError naming the option and the text */
export function checkEsbShift(option: string, text: string, hostPageSize: number): number {
  const shift = /^[0-9]{1,2}$/.test(text) ? Number(text) : NaN;
  if (!(ESB_SHIFTS as readonly number[]).includes(shift)) throw new UsageError(`--${option} must be one of ${ESB_SHIFTS.join(', ')}, not ${shown(text)}`);
  try {
    esbGeometry(shift, hostPageSize);
  } catch (e) {
    throw new UsageError(`--${option} ${shift}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return shift;
}
