// XIVE_REMAP_NO_KVM: with it set, every "is KVM usable" check says no, with the reason
// `XIVE_REMAP_NO_KVM is set`, and nothing reaches the real /dev/kvm — so the path of a host without
// KVM runs (and stays green) on a machine that has it. The checks here hold on any host.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { probeHost, renderProbe } from '../src/cli/probe.js';
import { RemapError } from '../src/errors.js';
import { KVM_API_VERSION, KvmSystem, NO_KVM_ENV, kvmIoctls, kvmOptedOut } from '../src/kvm/index.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import { KvmPpcGuest } from '../native-stubs/kvm-ppc-guest.js';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';
import { kvmSkipNotice } from './hooks.js';
import { kvmUnusable, withNoKvmEnv } from './kvm-fixtures.js';

const REASON = 'XIVE_REMAP_NO_KVM is set';
const root = (path: string): string => fileURLToPath(new URL(`../${path}`, import.meta.url));

/** The environment of a child with XIVE_REMAP_NO_KVM=1. */
const noKvmEnv = (): NodeJS.ProcessEnv => ({ ...process.env, XIVE_REMAP_NO_KVM: '1' });

describe('XIVE_REMAP_NO_KVM', () => {
  it('is set by any value but the empty string and 0', () => {
    const table: [string | undefined, string | null][] = [
      [undefined, null],
      ['', null],
      ['0', null],
      ['1', REASON],
      ['yes', REASON],
      ['false', REASON], // any value: an opt-out never silently misread
    ];
    for (const [value, want] of table) {
      const env = value === undefined ? {} : { [NO_KVM_ENV]: value };
      expect(kvmOptedOut(env), `XIVE_REMAP_NO_KVM=${value}`).to.equal(want);
    }
  });

  it('makes both guest harnesses, the tests\' fixture and the skip notice answer "no" with the reason, whatever the host has', () => {
    withNoKvmEnv('1', () => {
      expect(KvmX86Guest.usable()).to.equal(REASON);
      expect(KvmPpcGuest.usable()).to.equal(REASON);
      expect(kvmUnusable()).to.equal(REASON);
      expect(kvmSkipNotice()).to.equal(`skipping the tests that need /dev/kvm: ${REASON}`);
    });
  });

  it('makes KvmSystem.open on the real native layer refuse with E_DEVICE_UNAVAILABLE, and only there', () => {
    withNoKvmEnv('1', () => {
      expect(() => KvmSystem.open()).to.throw(RemapError, `opening /dev/kvm refused: ${REASON}`).with.property('code', 'E_DEVICE_UNAVAILABLE');
      // A test's stand-in native layer is no real KVM to hide: it is still reached.
      const ioctls = kvmIoctls(realNative.arch === 'ppc64' ? 'ppc64' : 'x64');
      const canned: NativeLayer = { ...realNative, open: () => 77, close: () => undefined, ioctl: (_fd, req) => (req === ioctls.KVM_GET_API_VERSION ? KVM_API_VERSION : 0) };
      const sys = KvmSystem.open({ native: canned });
      expect(sys.apiVersion()).to.equal(KVM_API_VERSION);
      sys.close();
    });
  });

  it('makes probe report /dev/kvm as not usable, with the reason, and probe nothing behind it', () => {
    const r = withNoKvmEnv('1', () => probeHost());
    expect(r.kvm).to.deep.include({ usable: false, apiVersion: null, error: REASON });
    expect(r.caps).to.deep.equal({ nrMemslots: null, syncMmu: null, deviceCtrl: null, ppcIrqXive: null });
    expect(r.xive.probed).to.equal(false);
    expect(renderProbe(r)).to.match(new RegExp(`^ {2}kvm +/dev/kvm: (absent|present but not usable) \\(${REASON}\\)$`, 'm'));
    const text = execFileSync(process.execPath, [root('src/cli/main.js'), 'probe'], { encoding: 'utf8', env: noKvmEnv() });
    expect(text).to.include(`(${REASON})`);
  });

  it('makes the KVM guest example say why it skips', () => {
    const out = execFileSync(process.execPath, [root('examples/kvm-guest.js')], { encoding: 'utf8', env: noKvmEnv() });
    expect(out).to.equal(`kvm-guest: skipped: ${REASON}\n`);
  });

  it('makes mocha print the KVM skip reason once, before the dots, and skip every KVM guest test', () => {
    const files = ['kvm-guest', 'kvm-controller', 'kvm-concurrent', 'kvm-memslots', 'kvm-fds'].map((f) => root(`test/${f}.test.js`));
    // --no-config: the config's spec would add every test file (this one too); its require and reporter are repeated here.
    const mocha = fileURLToPath(import.meta.resolve('mocha/bin/mocha.js'));
    const out = execFileSync(process.execPath, [mocha, '--no-config', '--require', root('test/hooks.js'), '--reporter', 'dot', ...files], { encoding: 'utf8', env: noKvmEnv() });
    const lines = out.split('\n');
    const notices = lines.filter((l) => l.includes(REASON));
    expect(notices, out).to.deep.equal([`  skipping the tests that need /dev/kvm: ${REASON}`]);
    const firstDots = lines.findIndex((l) => /^ {2}[.,!]+$/.test(l));
    expect(lines.indexOf(notices[0] as string), out).to.be.below(firstDots);
    expect(out).to.match(/^ {2}\d+ passing/m); // the canned-layer tests of kvm-fds still run
    expect(out).to.match(/^ {2}\d+ pending/m);
  });
});
