import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
});
