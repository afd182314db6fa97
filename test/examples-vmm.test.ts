// examples/vmm-hotplug: a VMM that brings its own VM (and, on POWER, its own XIVE device) drives
// hot-plug through xive-remap. Run compiled, as a user would; the example checks every step itself
// (what the guest loads against what the table says) and exits 1 on a mismatch.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KvmX86Guest } from 'xive-remap/native-stubs';

const example = fileURLToPath(new URL('../examples/vmm-hotplug.js', import.meta.url));

interface Summary {
  platform: string;
  vmFromFd: boolean;
  mode: string;
  guest: string;
  steps: { step: string; seen: Record<string, string>; expected: Record<string, string> }[];
  memslotUpdates: number;
  vmmFdsWork: boolean;
  ok: boolean;
}

const run = (...args: string[]): Summary => JSON.parse(execFileSync(process.execPath, [example, '--json', ...args], { encoding: 'utf8' })) as Summary;

describe('examples/vmm-hotplug.js (compiled, run as a user would)', () => {
  it('plugs an MSI block and a single interrupt and unplugs them; the host reads every step through the region (--no-guest)', () => {
    const s = run('--no-guest');
    expect(s.ok).to.equal(true);
    expect(s.guest).to.match(/^the host through the region/);
    expect(s.steps.map((x) => x.step)).to.have.length(4);
    expect(s.steps[2]?.seen).to.deep.include({ 15: 'ipi:15:0', 16: 'pt1:40:0', 19: 'pt1:43:0', 20: 'ipi:20:0', 30: 'pt1:45:0' });
    expect(s.steps[3]?.seen).to.deep.include({ 16: 'ipi:16:0', 30: 'ipi:30:0' });
  });

  const why = KvmX86Guest.usable();
  it(`on the VMM's own VM (KvmVm.fromFd), KvmX86Guest reads each step through the VMM's memslot, registered once; the VMM's fd still works${why ? ` (skipped: ${why})` : ''}`, function () {
    if (why) this.skip();
    const s = run();
    expect(s).to.include({ platform: 'fake', vmFromFd: true, mode: 'overlay', memslotUpdates: 1, vmmFdsWork: true, ok: true });
    expect(s.guest).to.match(/^KvmX86Guest on the VMM's VM, through its memslot/);
    expect(s.steps[1]?.seen).to.deep.include({ 16: 'pt1:40:0', 17: 'pt1:41:0', 18: 'pt1:42:0', 19: 'pt1:43:0', 30: 'ipi:30:0' });
    expect(s.steps[2]?.seen[30]).to.equal('pt1:45:0');
    for (const step of s.steps) expect(step.seen, step.step).to.deep.equal(step.expected);
  });
});
