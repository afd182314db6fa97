// The demo (`npm start`), run as a user runs it, on this host as it is and under XIVE_REMAP_NO_KVM=1:
// every step's checks pass either way, and the guest's view is there exactly where a guest can run.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';

const demoJs = fileURLToPath(new URL('../examples/demo.js', import.meta.url));
const repo = fileURLToPath(new URL('../../', import.meta.url));

interface DemoJson {
  ok: boolean;
  guest: string;
  steps: { action: string; map: string[]; vmas: number; vmaBound: number; wrongStamps: string[]; memslotUnchanged: boolean; audit: string[]; guest?: string }[];
}

const GUEST_LINE = /^KVM guest read \d+ touched interrupt\(s\) on its next load, all right .*memslot registrations: 1$/;

/** Run the demo with this environment (undefined: remove the variable); text and JSON. */
function demo(noKvm: string | undefined): { text: string; json: DemoJson } {
  const env = { ...process.env };
  if (noKvm === undefined) delete env.XIVE_REMAP_NO_KVM;
  else env.XIVE_REMAP_NO_KVM = noKvm;
  const run = (...args: string[]): string => execFileSync(process.execPath, [demoJs, ...args], { encoding: 'utf8', env });
  return { text: run(), json: JSON.parse(run('--json')) as DemoJson };
}

/** What must hold of every run, guest or not: the fakes' checks, read from memory and /proc/self/maps. */
function expectFakeChecksPassed(r: DemoJson, text: string): void {
  expect(r.ok).to.equal(true);
  expect(text).to.match(/\nall checks passed\n$/);
  expect(r.steps).to.have.length(5);
  expect(r.steps[1]?.map).to.deep.equal(['64-79←pt1:0-15']);
  expect(r.steps[4]?.map).to.deep.equal(['300←pt2:0', '310-313←pt2:4-7']);
  for (const s of r.steps) {
    expect(s.wrongStamps).to.deep.equal([]);
    expect(s.memslotUnchanged).to.equal(true);
    expect(s.audit).to.deep.equal([]);
    expect(s.vmas).to.be.at.most(s.vmaBound);
  }
  expect(text.match(/^ {3}stamps ok \(4096 irqs read\) · VMAs \d+ ≤ \d+ · memslot unchanged · \/proc\/self\/maps agrees$/gm)).to.have.length(5);
}

/** The guest part: every step seen by the KVM guest where `why` is null, else no guest and the reason said once. */
function expectGuestPart(r: DemoJson, text: string, why: string | null): void {
  if (why === null) {
    expect(r.guest).to.equal('kvm-x86');
    for (const s of r.steps) expect(s.guest).to.match(GUEST_LINE);
    expect(text.match(/^ {3}guest: KVM guest read /gm)).to.have.length(5);
    expect(text).not.to.include('no KVM guest view');
  } else {
    expect(r.guest).to.equal(`none: ${why}`);
    for (const s of r.steps) expect(s).not.to.have.property('guest');
    expect(text).not.to.match(/^ {3}guest:/m);
    expect(text).to.include(`\n(no KVM guest view: ${why})\nall checks passed\n`);
  }
}

describe('the hot-plug demo (npm start, examples/demo.ts)', () => {
  it('runs every hot-plug step with every check passing, with the KVM guest where one can run here, as text and as JSON', () => {
    const why = KvmX86Guest.usable(); // this process's answer, under this process's environment
    const { text, json } = demo(process.env.XIVE_REMAP_NO_KVM);
    expectFakeChecksPassed(json, text);
    expectGuestPart(json, text, why);
  });

  it('runs every step without the guest under XIVE_REMAP_NO_KVM=1, saying why, whatever this host has', () => {
    const { text, json } = demo('1');
    expectFakeChecksPassed(json, text);
    expectGuestPart(json, text, 'XIVE_REMAP_NO_KVM is set');
  });

  it('prints only JSON with each command the README gives for machines (run exactly as written there)', function () {
    this.timeout(180_000); // `npm start` builds first
    const readme = readFileSync(join(repo, 'README.md'), 'utf8');
    // Commands in code blocks (up to a `#` comment) and in inline code that run the demo with --json.
    const commands = new Set([...readme.matchAll(/^((?:npm start|node dist\/examples\/demo\.js)\b[^#\n`]*--json[^#\n`]*?)\s*(?:#.*)?$/gm), ...readme.matchAll(/`((?:npm start|node dist\/examples\/demo\.js)\b[^`]*--json[^`]*)`/g)].map((m) => (m[1] as string).trim()));
    expect([...commands]).to.include.members(['npm start --silent -- --json', 'node dist/examples/demo.js --json']);
    for (const command of commands) {
      const out = execFileSync('sh', ['-c', command], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      let r: DemoJson;
      try {
        r = JSON.parse(out) as DemoJson;
      } catch (e) {
        throw new Error(`\`${command}\` printed more than JSON: ${(e as Error).message}\n${out.slice(0, 200)}`);
      }
      expect(r.ok, command).to.equal(true);
      expect(r.steps, command).to.have.length(5);
    }
  });

  it('refuses a bad argument with a one-line reason and its usage, exit 2; --help prints the usage, exit 0', () => {
    for (const args of [['extra'], ['--frobnicate'], ['--json=yes']]) {
      const r = spawnSync(process.execPath, [demoJs, ...args], { encoding: 'utf8' });
      expect(r.status, args.join(' ')).to.equal(2);
      expect(r.stdout, args.join(' ')).to.equal('');
      const [reason, usage] = r.stderr.split('\n', 2);
      expect(reason, args.join(' ')).to.match(/^demo: \S.*/);
      expect(usage).to.match(/^usage: node dist\/examples\/demo\.js /);
    }
    const help = spawnSync(process.execPath, [demoJs, '--help'], { encoding: 'utf8' });
    expect(help.status).to.equal(0);
    expect(help.stdout).to.match(/^usage: node dist\/examples\/demo\.js \[--json\] \[--no-guest\]\n/);
  });
});
