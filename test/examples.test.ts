import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KvmX86Guest } from 'xive-remap/native-stubs';

const example = (name: string): string => fileURLToPath(new URL(`../examples/${name}`, import.meta.url));

describe('examples (compiled, run as a user would)', () => {
  it('mock-hotplug.js plugs and unplugs a device and the pages read back right', () => {
    const out = execFileSync(process.execPath, [example('mock-hotplug.js')], { encoding: 'utf8' });
    expect(out).to.include('guest irq 255: ipi');
    expect(out).to.match(/guest irq 256: passthrough pt1:0 +trigger page reads pt1:0:0, management page pt1:0:1/);
    expect(out).to.match(/guest irq 263: passthrough pt1:7 /);
    expect(out).to.match(/guest irq 300: passthrough nic-fd\+0 +trigger page reads pt1:20:0/);
    expect(out).to.include('unplug: restored 8 + 1 interrupts');
    expect(out).to.include('guest irq 256 reads ipi:256:0; audit: []');
  });

  const unusable = KvmX86Guest.usable();
  it(`kvm-guest.js: the guest's next load sees every hot-plug step, one memslot registration${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
    if (unusable) this.skip();
    const out = execFileSync(process.execPath, [example('kvm-guest.js')], { encoding: 'utf8' });
    const lines = out.trim().split('\n');
    expect(lines).to.have.length(5);
    expect(lines[1]).to.match(/^plug: attachRange.*32=pt1:0:0 {2}33=pt1:1:0 {2}40=ipi:40:0/);
    expect(lines[3]).to.match(/^detach\(32\).*32=ipi:32:0 {2}33=pt1:1:0 {2}40=pt1:5:0/);
    expect(lines[4]).to.match(/31=ipi:31:0 {2}32=ipi:32:0 {2}33=ipi:33:0 {2}40=ipi:40:0/);
    for (const l of lines) expect(l).to.match(/\(memslot registrations: 1\)$/);
  });
});
