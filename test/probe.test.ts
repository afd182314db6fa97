// `xive-remap probe`, run as an operator runs it, checked against readings taken independently of
// the library (Node's os module, getconf, /proc, the filesystem).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { arch, endianness, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { ProbeReport } from '../src/cli/probe.js';
import { kvmOptedOut } from '../src/kvm/index.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function run(...args: string[]): string {
  return execFileSync(process.execPath, [cli, 'probe', ...args], { encoding: 'utf8' });
}

describe('xive-remap probe', () => {
  let report: ProbeReport;
  before(() => {
    report = JSON.parse(run('--json')) as ProbeReport;
  });

  it('reports the architecture, byte order, kernel and page size the host reports', () => {
    expect(report.arch).to.equal(arch());
    expect(report.endianness).to.equal(endianness());
    expect(report.kernel).to.equal(release());
    expect(report.pageSize).to.equal(Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()));
  });

  it('reports vm.max_map_count as /proc/sys says it', () => {
    expect(report.maxMapCount).to.equal(Number(readFileSync('/proc/sys/vm/max_map_count', 'latin1').trim()));
  });

  it('reports /dev/kvm as the filesystem has it, and the KVM API and capabilities only where it opens', () => {
    expect(report.kvm.path).to.equal('/dev/kvm');
    expect(report.kvm.present).to.equal(existsSync('/dev/kvm'));
    let openable = false;
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
      openable = kvmOptedOut() === null; // XIVE_REMAP_NO_KVM: reported as not usable, with that reason
    } catch {
      /* absent or not ours */
    }
    expect(report.kvm.usable).to.equal(openable);
    if (kvmOptedOut() !== null) expect(report.kvm.error).to.equal('XIVE_REMAP_NO_KVM is set');
    if (report.kvm.usable) {
      expect(report.kvm.apiVersion).to.equal(12);
      expect(report.kvm.error).to.equal(null);
      expect(report.caps.nrMemslots).to.be.a('number').and.to.be.greaterThan(0);
      expect(report.caps.syncMmu).to.be.greaterThan(0);
      expect(report.caps.deviceCtrl).to.be.greaterThan(0);
      // Only POWER9/10 PowerNV KVM has the XIVE native device.
      if (arch() !== 'ppc64') expect(report.caps.ppcIrqXive).to.equal(0);
    } else {
      expect(report.kvm.apiVersion).to.equal(null);
      expect(report.kvm.error).to.be.a('string');
      expect(report.caps).to.deep.equal({ nrMemslots: null, syncMmu: null, deviceCtrl: null, ppcIrqXive: null });
    }
  });

  it('says whether this x86 host is itself a guest, as the cpuinfo flags say', function () {
    const flags = /^flags\s*: (.*)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1];
    if (flags === undefined) this.skip();
    expect(report.underHypervisor).to.equal(flags.split(/\s+/).includes('hypervisor'));
  });

  it('probes the XIVE contract only where a XIVE device can exist, and says why not elsewhere', () => {
    if (arch() !== 'ppc64' || !report.caps.ppcIrqXive) {
      expect(report.xive).to.deep.include({ probed: false, contract: null, esbShift: null, autoMode: null });
      expect(report.xive.note).to.match(arch() !== 'ppc64' ? new RegExp(`needs ppc64 \\(this host is ${arch()}\\)`) : /not probed/);
      expect(report.verdict).to.match(/no KVM XIVE device here/);
    } else {
      expect(report.xive.probed).to.equal(true);
      expect(report.xive.contract).to.be.oneOf(['fixed-offset', 'per-irq-offsets']);
    }
  });

  it('prints the same readings as text, one per line', () => {
    const text = run();
    expect(text).to.match(new RegExp(`^  architecture +${arch()} \\(${endianness() === 'LE' ? 'little' : 'big'}-endian\\), kernel `, 'm'));
    expect(text).to.match(new RegExp(`^  page size +${report.pageSize} bytes$`, 'm'));
    expect(text).to.match(new RegExp(`^  vm.max_map_count +${report.maxMapCount} `, 'm'));
    expect(text).to.match(report.kvm.usable ? /^ {2}kvm +\/dev\/kvm: usable, KVM API 12$/m : /^ {2}kvm +\/dev\/kvm: (absent|present but not usable)/m);
    expect(text).to.match(/^ {2}KVM_CAP_PPC_IRQ_XIVE +/m);
    expect(text).to.match(/^ {2}XIVE device contract +/m);
    expect(text).to.match(/^verdict: /m);
  });
});
