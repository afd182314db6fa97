// native-stubs/power9/vmm-hotplug-checks.mjs — bring your own VM on a POWER9 host with KVM-HV: a VMM
// that made its VM and its XIVE device with its own ioctls hands the fds to xive-remap
// (KvmVm.fromFd, XiveKvmDevice.fromFd), which works on duplicates and never closes the VMM's; then
// examples/vmm-hotplug.js hot-plugs an MSI block and a single interrupt with KvmPpcGuest on the VMM's
// VM reading through the VMM's memslot (stock kernel: kernel-managed, the guest keeps its IPIs;
// kernel/'s patch, XIVE_POWER9_KERNEL=patched: overlay, the guest sees the sources' PQ bits).
//
// Runs inside the emulated POWER9 that run.sh boots (both boots), or on a real POWER9/10 host from a
// checkout after `npm run build`:  node native-stubs/power9/vmm-hotplug-checks.mjs
// Only the public package is imported ('xive-remap', 'xive-remap/kvm'). Every ESB load goes to a
// source the VMM created first (KVM_DEV_XIVE_GRP_SOURCE): a load from an unknown source faults.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { check, need, detail, finish } from './check-harness.mjs';

const patched = process.env.XIVE_POWER9_KERNEL === 'patched';
const contract = patched ? 'per-irq-offsets' : 'fixed-offset';
const autoMode = patched ? 'overlay' : 'kernel-managed';
const require = createRequire(import.meta.url);
const example = join(dirname(dirname(require.resolve('xive-remap'))), 'examples', 'vmm-hotplug.js');
const st = {};

await check("import('xive-remap') and import('xive-remap/kvm'): XiveKvmDevice.fromFd, KvmVm.fromFd, MemslotTable", async () => {
  st.lib = await import('xive-remap');
  st.kvm = await import('xive-remap/kvm');
  assert.equal(typeof st.lib.XiveKvmDevice?.fromFd, 'function');
  assert.equal(typeof st.kvm.KvmVm?.fromFd, 'function');
  assert.equal(typeof st.kvm.MemslotTable?.open, 'function');
  assert.equal(st.lib.KvmSystem, undefined, "the KVM fd wrappers live in 'xive-remap/kvm', not in the hot-plug entry point");
  return `${process.arch}, node ${process.versions.node}`;
});

await check('the VMM creates its VM and XIVE device with its own ioctls (KVM_CREATE_VM, KVM_CREATE_DEVICE type 9, NR_SERVERS, 16 sources)', () => {
  const { KvmSystem, KVM_DEV_TYPE, KVM_DEV_XIVE } = need(st.kvm, "'xive-remap/kvm'");
  st.sys = KvmSystem.open();
  st.vmmVm = st.sys.createVm();
  st.vmmDev = st.vmmVm.createDevice(KVM_DEV_TYPE.XIVE);
  st.vmmDev.setAttrU32(KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.NR_SERVERS, 1);
  for (let irq = 0; irq < 16; irq++) st.vmmDev.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE, irq, 0n);
  return `VM fd ${st.vmmVm.fd}, XIVE device fd ${st.vmmDev.fd}`;
});

await check('XiveKvmDevice.fromFd refuses the VMM\'s VM fd and /dev/kvm with E_DEVICE_UNAVAILABLE, naming each; KvmVm.fromFd refuses the device fd', () => {
  const { XiveKvmDevice } = st.lib;
  const { KvmVm } = st.kvm;
  const vmm = need(st.vmmDev, "the VMM's device");
  const refused = (fn, re) => assert.throws(fn, (e) => e.code === 'E_DEVICE_UNAVAILABLE' && re.test(e.message), String(re));
  refused(() => XiveKvmDevice.fromFd(st.vmmVm.fd, { nrIrqs: 16 }), /is anon_inode:kvm-vm: a KVM VM fd; want a KVM XIVE native device fd/);
  refused(() => XiveKvmDevice.fromFd(st.sys.fd, { nrIrqs: 16 }), /is \/dev\/kvm: the \/dev\/kvm system fd/);
  refused(() => KvmVm.fromFd(vmm.fd), /is anon_inode:kvm-xive-native: a KVM XIVE native device fd/);
  return 'named: anon_inode:kvm-vm, /dev/kvm, anon_inode:kvm-xive-native';
});

await check(`XiveKvmDevice.fromFd(the VMM's device fd) and KvmVm.fromFd(its VM fd): duplicates, contract ${contract}, 'auto' picks ${autoMode}, ESB_GET of a VMM-created source`, () => {
  const { XiveKvmDevice, EsbController, formatPq } = st.lib;
  const { KvmVm } = st.kvm;
  const vmm = need(st.vmmDev, "the VMM's device");
  st.vm = KvmVm.fromFd(st.vmmVm.fd);
  st.dev = XiveKvmDevice.fromFd(vmm.fd, { nrIrqs: 16, vm: st.vm, configured: [0, 1, 2, 3] });
  assert.notEqual(st.dev.fd, vmm.fd);
  assert.notEqual(st.vm.fd, st.vmmVm.fd);
  assert.equal(st.dev.contract, contract);
  assert.equal(st.dev.vm, st.vm);
  const esb = EsbController.open(st.dev, { mode: 'auto' });
  try {
    assert.equal(esb.mode, autoMode);
    // The kernel leaves a new source masked (PQ 01); the VMM created sources 0-15 itself.
    const pq = formatPq(st.dev.esbGet(esb.memslot.userspaceAddr, 2));
    assert.equal(pq, '01');
    return `dups fd ${st.vm.fd} (VM), fd ${st.dev.fd} (device); source 2 reads PQ ${pq}`;
  } finally {
    esb.close();
  }
});

await check("closing the library's objects (close, and [Symbol.dispose] as `using` calls it) leaves the VMM's fds open and working", () => {
  const { KVM_CAP, KVM_DEV_XIVE } = st.kvm;
  const dev = need(st.dev, 'the device from fromFd');
  const disposeKey = Symbol.dispose ?? Symbol.for('nodejs.dispose');
  assert.equal(typeof dev[disposeKey], 'function');
  dev[disposeKey]();
  assert.equal(dev.closed, true);
  st.vm.close();
  assert.equal(st.vmmDev.hasAttr(KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.RESET), true, "KVM_HAS_DEVICE_ATTR on the VMM's device fd");
  st.vmmDev.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE, 16, 0n);
  assert.ok(st.vmmVm.checkExtension(KVM_CAP.USER_MEMORY) > 0, "KVM_CHECK_EXTENSION on the VMM's VM fd");
  return `Symbol.dispose ${Symbol.dispose ? 'native' : "is the registered 'nodejs.dispose'"}; the VMM's device fd answered KVM_HAS_DEVICE_ATTR and GRP_SOURCE, its VM fd KVM_CHECK_EXTENSION`;
});

st.vmmDev?.close();
st.vmmVm?.close();
st.sys?.close();

await check(`examples/vmm-hotplug.js: the VMM's own VM and XIVE device through fromFd, ${autoMode}, KvmPpcGuest reads an MSI block and a single interrupt plugged and unplugged through the VMM's memslot`, () => {
  const r = spawnSync(process.execPath, [example, '--json'], { encoding: 'utf8' });
  if (r.stderr) detail(`stderr: ${r.stderr}`);
  assert.equal(r.status, 0, `exit status ${r.status}: ${r.stdout.slice(-400)}`);
  const s = JSON.parse(r.stdout);
  assert.equal(s.platform, 'power');
  assert.equal(s.deviceFromFd, true);
  assert.equal(s.vmFromFd, true);
  assert.equal(s.contract, contract);
  assert.equal(s.mode, autoMode);
  assert.match(s.guest, /^KvmPpcGuest on the VMM's VM, through its memslot/);
  assert.equal(s.memslotUpdates, 1);
  assert.equal(s.vmmFdsWork, true);
  for (const step of s.steps) assert.deepEqual(step.seen, step.expected, step.step);
  const [before, msi, single, after] = s.steps;
  const changed = [16, 17, 18, 19, 30].filter((irq) => single.seen[irq] !== before.seen[irq]);
  // Overlay: the guest's next load sees each plugged source's PQ bits (chosen unlike its own); kernel-managed: its IPIs.
  assert.deepEqual(changed, patched ? [16, 17, 18, 19, 30] : []);
  assert.deepEqual(after.seen, before.seen);
  assert.equal(msi.seen[15], before.seen[15]);
  assert.equal(msi.seen[20], before.seen[20]);
  detail(['step'.padEnd(44) + ' PQ the guest loaded at 15 16 17 18 19 20 30', ...s.steps.map((x) => `${x.step.padEnd(44)} ${[15, 16, 17, 18, 19, 20, 30].map((i) => x.seen[i]).join(' ')}`)].join('\n'));
  return `${patched ? 'the guest saw all 5 plugged interrupts change and come back' : 'the guest kept its IPIs (the kernel swaps pages for a real passthrough interrupt)'}; 1 memslot registration`;
});

finish('vmm-hotplug-checks');
