#!/usr/bin/env node
/**
 * The `xive-remap` command: argument parsing, rendering and exit codes only; the work is done by
 * the library. Subcommands: `inspect`, `probe` (the hot-plug demo is `npm start`: examples/demo.ts).
 */
import { parseArgs } from 'node:util';
import { inspect, renderInspect } from './inspect.js';
import { probeHost, renderProbe } from './probe.js';

const usage = `usage: xive-remap <command> [--json]

commands:
  inspect --pid N      show the ESB regions of a running VMM from /proc/N/maps: which interrupts
                       are overlaid by which file  [--esb-shift 17]
  probe                what this host offers: architecture, page size, /dev/kvm, KVM capabilities,
                       the KVM XIVE device contract (where one can be created), vm.max_map_count
`;

function json(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x), 2);
}

/** Run the CLI with these arguments; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: {
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      pid: { type: 'string' },
      'esb-shift': { type: 'string' },
    }, });
  const [command] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(usage);
    return command === undefined && !values.help ? 2 : 0;
  }
  switch (command) {
    case 'inspect': {
      const pid = Number(values.pid);
      const shift = Number(values['esb-shift'] ?? 17);
      if (!Number.isInteger(pid) || pid <= 0) {
        process.stderr.write(`xive-remap inspect: --pid must be a process id\n${usage}`);
        return 2;
      }
      const r = inspect(pid, shift);
      process.stdout.write(`${values.json ? json(r) : renderInspect(r)}\n`);
      return 0;
    }
    case 'probe': {
      const r = probeHost();
      process.stdout.write(`${values.json ? json(r) : renderProbe(r)}\n`);
      return 0;
    }
    default:
      process.stderr.write(`xive-remap: unknown command ${JSON.stringify(command)}\n${usage}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`xive-remap: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
