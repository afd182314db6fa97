// The `xive-remap` command as a user meets it: the compiled CLI is spawned with each command line
// of a table and its exit code, stdout and stderr are checked. A bad command line is a one-line
// reason and that command's usage on stderr, exit 2; help and --version print on stdout, exit 0.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError, parseOptions, type CommandSpec } from '../src/cli/args.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const repo = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${repo}package.json`, 'utf8')) as { version: string };

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The usage each command prints: its first line. */
const USAGE = {
  main: 'usage: xive-remap <command> [options]',
  inspect: 'usage: xive-remap inspect --pid N [--esb-shift S] [--json]',
  probe: 'usage: xive-remap probe [--json]',
};

/** A pid no process has now: a child that has exited and been reaped. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(child.stdout);
  expect(existsSync(`/proc/${pid}`)).to.equal(false);
  return pid;
}

describe('xive-remap (the CLI, spawned)', () => {
  const self = String(process.pid);

  it('refuses every bad command line with a one-line reason and that command\'s usage on stderr, exit 2', () => {
    const table: [string[], RegExp, keyof typeof USAGE][] = [
      [[], /^xive-remap: no command given$/, 'main'],
      [['frobnicate'], /^xive-remap: unknown command "frobnicate"$/, 'main'],
      [['demo'], /^xive-remap: unknown command "demo" \(the hot-plug demo is `npm start` in a clone of the repository\)$/, 'main'],
      [['demo', 'extra'], /^xive-remap: unknown command "demo" /, 'main'],
      [['--json'], /^xive-remap: unknown option "--json"$/, 'main'],
      [['--version', 'x'], /^xive-remap: --version takes no argument, not "x"$/, 'main'],
      [['help', 'frobnicate'], /^xive-remap help: unknown command "frobnicate"$/, 'main'],
      [['help', 'inspect', 'extra'], /^xive-remap help: unexpected argument "extra"$/, 'main'],
      [['inspect'], /^xive-remap inspect: --pid is required$/, 'inspect'],
      [['inspect', '--pid'], /^xive-remap inspect: --pid needs a value \(--pid N\)$/, 'inspect'],
      [['inspect', '--pid='], /^xive-remap inspect: --pid needs a value \(--pid N\)$/, 'inspect'],
      [['inspect', '--pid', '--json'], /^xive-remap inspect: --pid needs a value \(--pid N\)$/, 'inspect'],
      [['inspect', '--pid', '-5'], /^xive-remap inspect: --pid must be a process id \(decimal, 1 to 4194304\), not "-5"$/, 'inspect'],
      [['inspect', '--pid', '0x10'], /^xive-remap inspect: --pid must be a process id \(decimal, 1 to 4194304\), not "0x10"$/, 'inspect'],
      [['inspect', '--pid', '0'], /^xive-remap inspect: --pid must be a process id .*, not "0"$/, 'inspect'],
      [['inspect', '--pid', '1.5'], /^xive-remap inspect: --pid must be a process id .*, not "1.5"$/, 'inspect'],
      [['inspect', '--pid', '1e3'], /^xive-remap inspect: --pid must be a process id .*, not "1e3"$/, 'inspect'],
      [['inspect', '--pid', '4194305'], /^xive-remap inspect: --pid must be a process id .*, not "4194305"$/, 'inspect'],
      [['inspect', '--pid', '12\n34'], /^xive-remap inspect: --pid must be a process id .*, not "12\\n34"$/, 'inspect'],
      [['inspect', '--pid', self, '--esb-shift', 'abc'], /^xive-remap inspect: --esb-shift must be one of 12, 13, 16, 17, not "abc"$/, 'inspect'],
      [['inspect', '--pid', self, '--esb-shift', '14'], /^xive-remap inspect: --esb-shift must be one of 12, 13, 16, 17, not "14"$/, 'inspect'],
      [['inspect', '--pid', self, '--esb-shift'], /^xive-remap inspect: --esb-shift needs a value \(--esb-shift S\)$/, 'inspect'],
      [['inspect', '--pid', self, 'extra'], /^xive-remap inspect: unexpected argument "extra"$/, 'inspect'],
      [['inspect', '--pid', self, '--', 'extra'], /^xive-remap inspect: unexpected argument "extra"$/, 'inspect'],
      [['inspect', '--pid', self, '--frobnicate'], /^xive-remap inspect: unknown option "--frobnicate"$/, 'inspect'],
      [['inspect', '--pid', self, '-x'], /^xive-remap inspect: unknown option "-x"$/, 'inspect'],
      [['inspect', '--pid', self, '--pid', self], /^xive-remap inspect: --pid given twice$/, 'inspect'],
      [['inspect', '--pid', self, '--json=yes'], /^xive-remap inspect: --json takes no value$/, 'inspect'],
      [['probe', 'extra'], /^xive-remap probe: unexpected argument "extra"$/, 'probe'],
      [['probe', '--pid', '1'], /^xive-remap probe: unknown option "--pid"$/, 'probe'],
    ];
    for (const [args, reason, usage] of table) {
      const r = run(...args);
      const what = `xive-remap ${args.join(' ')}`;
      expect(r.status, what).to.equal(2);
      expect(r.stdout, what).to.equal('');
      const [first, second] = r.stderr.split('\n');
      expect(first, what).to.match(reason);
      expect(second, what).to.equal(USAGE[usage]);
    }
  });

  it('prints the usage asked for on stdout, exit 0', () => {
    const table: [string[], keyof typeof USAGE][] = [
      [['help'], 'main'],
      [['--help'], 'main'],
      [['-h'], 'main'],
      [['help', 'help'], 'main'],
      [['help', 'inspect'], 'inspect'],
      [['help', 'probe'], 'probe'],
      [['inspect', '--help'], 'inspect'],
      [['inspect', '--pid', '-5', '-h'], 'inspect'], // help wins over what else is wrong
      [['probe', '--help'], 'probe'],
      [['probe', '-h'], 'probe'],
    ];
    for (const [args, usage] of table) {
      const r = run(...args);
      const what = `xive-remap ${args.join(' ')}`;
      expect(r.status, what).to.equal(0);
      expect(r.stderr, what).to.equal('');
      expect(r.stdout.split('\n')[0], what).to.equal(USAGE[usage]);
    }
    const main = run('help').stdout;
    for (const line of ['  xive-remap inspect --pid N [--esb-shift S] [--json]', '  xive-remap probe [--json]', '  xive-remap help [command]', '  xive-remap --version']) expect(main).to.include(`\n${line}\n`);
    expect(run('help', 'inspect').stdout).to.match(/^ {2}--esb-shift S +the VMM's esbShift, .*\(default 17\)$/m);
  });

  it('prints package.json\'s version with --version', () => {
    expect(run('--version')).to.deep.equal({ status: 0, stdout: `${pkg.version}\n`, stderr: '' });
  });

  it('says `no such process N` (exit 1) for inspect of a process that does not exist', () => {
    const pid = deadPid();
    expect(run('inspect', '--pid', String(pid))).to.deep.equal({ status: 1, stdout: '', stderr: `xive-remap inspect: no such process ${pid}\n` });
    expect(run('inspect', '--pid', String(pid), '--json').stderr).to.equal(`xive-remap inspect: no such process ${pid}\n`);
  });

  it('runs inspect and probe on good command lines, in every spelling of their options', () => {
    for (const args of [['inspect', '--pid', self], ['inspect', `--pid=${self}`, '--esb-shift=13'], ['inspect', '--esb-shift', '16', '--pid', self, '--json'], ['probe'], ['probe', '--json']]) {
      const r = run(...args);
      expect(r.status, args.join(' ')).to.equal(0);
      expect(r.stderr, args.join(' ')).to.equal('');
      if (args.includes('--json')) expect(() => JSON.parse(r.stdout) as unknown, args.join(' ')).not.to.throw();
    }
    expect(run('inspect', '--pid', self).stdout).to.equal(`pid ${self}: no XIVE ESB region (no /memfd:fake-xive-ipi or anon_inode:kvm-xive-* ESB mapping)\n`);
  });

  it('lists every subcommand in the header of src/cli/main.ts', () => {
    const header = /\/\*\*([\s\S]*?)\*\//.exec(readFileSync(`${repo}src/cli/main.ts`, 'utf8'))?.[1] ?? '';
    const commands = [...run('help').stdout.matchAll(/^ {2}xive-remap ([a-z][a-z-]*)/gm)].map((m) => m[1] as string);
    expect(commands).to.deep.equal(['inspect', 'probe', 'help']);
    for (const c of commands) expect(header, c).to.match(new RegExp(`^ \\* +${c}\\b`, 'm'));
  });
});

describe('parseOptions (the CLI\'s parser, pure)', () => {
  const spec: CommandSpec = { name: 't', summary: 'a test command', options: [{ name: 'n', value: 'N', required: true, help: 'n' }, { name: 'flag', help: 'a flag' }] };
  it('reads values and flags in each spelling, and refuses the rest with a UsageError', () => {
    const ok: [string[], Record<string, string | true>][] = [
      [['--n', '3'], { n: '3' }],
      [['--n=3', '--flag'], { n: '3', flag: true }],
      [['--flag', '--n', '-3'], { n: '-3', flag: true }], // a dash-number is a value, for the value's check to name it
      [['--n', '3', '--'], { n: '3' }],
      [['--n==3'], { n: '=3' }],
    ];
    for (const [argv, want] of ok) expect(Object.fromEntries(parseOptions(spec, argv).values), argv.join(' ')).to.deep.equal(want);
    const bad: [string[], string][] = [
      [[], '--n is required'],
      [['--n'], '--n needs a value (--n N)'],
      [['--n', '--', '3'], '--n needs a value (--n N)'],
      [['--n', '3', '-'], 'unexpected argument "-"'],
      [['--flag=1', '--n', '3'], '--flag takes no value'],
      [['--nope=1'], 'unknown option "--nope"'],
      [['--n', '3', '--n=4'], '--n given twice'],
    ];
    for (const [argv, reason] of bad) expect(() => parseOptions(spec, argv), argv.join(' ')).to.throw(UsageError, reason);
    expect(parseOptions(spec, ['--nope', '-h']).help).to.equal(true);
    expect(() => parseOptions(spec, ['--n', '3', '--', '-h'])).to.throw(UsageError, 'unexpected argument "-h"'); // after --, not an option
  });
});
