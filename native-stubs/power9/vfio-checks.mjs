// native-stubs/power9/vfio-checks.mjs — a real device's interrupt, end to end, in the emulated POWER9:
// QEMU's `edu` PCI device behind PHB4 #0 is bound to vfio-pci, its one MSI goes to an eventfd
// (VfioDevice, xive-remap/native-stubs), and the library hot-plugs it into a KVM-HV guest on the
// VMM's own XIVE device: `esb.attach(G, dev.pages(G))` + `vm.assignIrqfd(eventfd, G)`. KVM's irq
// bypass (`kvmppc_xive_set_mapped`) then zaps guest interrupt G's ESB pages in every mapping of the
// XIVE device file, by file offset, and serves the PHB's own source there. A KvmPpcGuest reads the
// region through its one memslot; an event queue in guest memory (XiveEventQueue) receives the MSI.
//
// Stock kernel: the controller is kernel-managed (upstream's fixed-offset device). Patched kernel
// (kernel/): overlay mode, and the region is split around G by overlays of other sources of the
// same device (guest interrupts G-1 and G+1), with a second view of G's file offset elsewhere in the
// region (guest interrupt VIEW): every piece must follow the kernel's zaps.
//
//   XIVE_POWER9_KERNEL=stock XIVE_POWER9_CHECKS=$PWD/native-stubs/power9/vfio-checks.mjs bash native-stubs/power9/run.sh
//
// Needs: the edu device on the QEMU command line (run.sh adds `-device edu,bus=pcie.0,addr=0x0`),
// and vfio-pci able to bind it (run.sh puts build-vfio.sh's modules at /opt/vfio-modules; this script
// insmods them in their load-order unless vfio-pci is already loaded).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { check, need, hex, detail, finish } from './check-harness.mjs';

const patched = process.env.XIVE_POWER9_KERNEL === 'patched';
const MODULES = process.env.XIVE_VFIO_MODULES ?? '/opt/vfio-modules';
const EDU = { vendor: 0x1234, device: 0x11e8, ID: 0x00, RAISE: 0x60, ACK: 0x64 };
const G = 0x20; // the guest interrupt the MSI is routed to (= its GSI on Book3S)
const VIEW = 10; // patched: a second view of G's file offset, elsewhere in the region
const LEFT = 40, RIGHT = 41; // patched: sources overlaid at G-1 and G+1
const NR_IRQS = 64;
const PRIO = 5, EISN = 0x1234, EQ_GPA = 0x10000n, EQ_SERVER = 0, GUEST_VCPU = 1;
const PQ = ['00', '01', '10', '11'];
const st = {};

const sh = (cmd, args) => execFileSync(cmd, args, { encoding: 'latin1' });
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const dmesgSince = (mark) => sh('dmesg', []).split('\n').slice(mark);
const dmesgMark = () => sh('dmesg', []).split('\n').length - 1;
/** KVM's debugfs line for LISN G: `00000020  000fe000/00  MSI  PT  P-  00001234      0/5`. */
function debugfsSource(irq) {
  if (!existsSync('/sys/kernel/debug/kvm')) return null;
  const files = sh('sh', ['-c', 'ls /sys/kernel/debug/kvm/*/xive 2>/dev/null || true']).split('\n').filter(Boolean);
  const want = irq.toString(16).padStart(8, '0');
  for (const f of files) {
    const line = readFileSync(f, 'latin1').split('\n').find((l) => l.trim().startsWith(want));
    if (line) return line.trim().replace(/\s+/g, ' ');
  }
  return null;
}

await check('vfio: the package imports; KvmPpcGuest.usable() is null', async () => {
  st.lib = await import('xive-remap');
  st.stubs = await import('xive-remap/native-stubs');
  st.kvm = await import('xive-remap/kvm');
  const why = st.stubs.KvmPpcGuest.usable();
  assert.equal(why, null, why);
  return `kernel ${process.env.XIVE_POWER9_KERNEL ?? 'unknown'}`;
});

await check('vfio: the edu device (1234:11e8) is on the PCI bus with an IOMMU group', () => {
  const { pciFunctions } = need(st.stubs, 'the package');
  const all = pciFunctions();
  st.edu = all.find((f) => f.vendor === EDU.vendor && f.device === EDU.device);
  assert.ok(st.edu, `no 1234:11e8 among ${all.map((f) => `${f.bdf} ${hex(f.vendor)}:${hex(f.device)}`).join(', ')}`);
  assert.notEqual(st.edu.group, null, `${st.edu.bdf} has no iommu_group`);
  return `${st.edu.bdf}, iommu group ${st.edu.group}, driver ${st.edu.driver ?? 'none'}`;
});

await check('vfio: the harness vfio.ko (build-vfio.sh) and Debian vfio modules load; vfio-pci binds the edu device', () => {
  const edu = need(st.edu, 'the edu device');
  // Debug lines of set_mapped/clr_mapped in dmesg, where the kernel has dynamic debug.
  if (!existsSync('/sys/kernel/debug/dynamic_debug')) sh('mount', ['-t', 'debugfs', 'none', '/sys/kernel/debug']);
  for (const f of ['kvmppc_xive_set_mapped', 'kvmppc_xive_clr_mapped']) {
    try {
      sh('sh', ['-c', `echo 'func ${f} +p' > /sys/kernel/debug/dynamic_debug/control`]);
    } catch {
      detail(`dynamic debug for ${f} not available`);
    }
  }
  let loaded = 'already loaded';
  if (!existsSync('/sys/module/vfio_pci')) {
    const order = readFileSync(`${MODULES}/load-order`, 'latin1').split('\n').filter(Boolean);
    for (const ko of order) {
      if (existsSync(`/sys/module/${ko.replace(/\.ko$/, '').replace(/-/g, '_')}`)) continue;
      sh('insmod', [`${MODULES}/${ko}`]);
    }
    loaded = order.join(' ');
  }
  const taint = readFileSync('/sys/module/vfio/taint', 'latin1').trim();
  const bound = st.stubs.bindVfioPci(edu.bdf);
  assert.equal(bound.driver, 'vfio-pci');
  assert.ok(existsSync(`/dev/vfio/${bound.group}`), `/dev/vfio/${bound.group} missing`);
  return `${loaded}; vfio taint '${taint}'; /dev/vfio/${bound.group}`;
});

await check('vfio: VfioDevice.open: API 0, sPAPR TCE v2 IOMMU, BAR0 and the config region, edu ID register, bus mastering on', () => {
  const { VfioDevice, VFIO_IOMMU, VFIO_PCI_REGION, VFIO_PCI_IRQ, PCI_COMMAND } = need(st.stubs, 'the package');
  const edu = need(st.edu, 'the edu device');
  const v = (st.vfio = VfioDevice.open({ group: edu.group, bdf: edu.bdf }));
  assert.equal(v.iommu, VFIO_IOMMU.SPAPR_TCE_V2);
  const bar0 = v.regionInfo(VFIO_PCI_REGION.BAR0);
  assert.equal(bar0.size, 0x100000n, `BAR0 is ${hex(bar0.size)} bytes`);
  const id = v.readBar32(VFIO_PCI_REGION.BAR0, EDU.ID);
  // edu's identification register is 0x010000ed (version 1.0); QEMU models edu native-endian, so on a
  // big-endian-configured ppc64 target the bytes arrive swapped: both mean "this is edu".
  assert.ok(id === 0x010000ed || id === 0xed000001, `edu ID register reads ${hex(id)}`);
  const cmd = v.enableBusMaster();
  assert.equal(cmd.after & (PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER), PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER, `PCI_COMMAND ${hex(cmd.after)}`);
  const msi = v.irqInfo(VFIO_PCI_IRQ.MSI);
  assert.equal(msi.count, 1, 'edu has one MSI');
  const t = v.tceInfo;
  return `${v.info.numRegions} regions, ${v.info.numIrqs} irq indexes; DMA32 window ${hex(t.dma32WindowStart)}+${hex(t.dma32WindowSize)}; BAR0 ${hex(bar0.size)} at fd offset ${hex(bar0.offset)} flags ${hex(bar0.flags)}; ID ${hex(id)}; PCI_COMMAND ${hex(cmd.before)} -> ${hex(cmd.after)}; MSI count ${msi.count}`;
});

const raise = () => {
  st.vfio.writeBar32(0, EDU.RAISE, 1); // edu: irq_status |= 1, then msi_notify()
  sleep(100);
  st.vfio.writeBar32(0, EDU.ACK, 0xffffffff);
};
/** Wait up to `ms` for the eventfd's counter; returns it (0n if nothing came). */
const waitEventfd = (ms) => {
  const { drainEventfd } = st.stubs;
  for (let t = 0; t < ms; t += 20) {
    const n = drainEventfd(st.efd);
    if (n > 0n) return n;
    sleep(20);
  }
  return drainEventfd(st.efd);
};

await check('vfio: VFIO_DEVICE_SET_IRQS(MSI -> one eventfd); a write to BAR0+0x60 sends the MSI to the host: the eventfd counts 1', () => {
  const v = need(st.vfio, 'the VFIO device');
  st.efd = st.stubs.createEventfd();
  v.setMsi([st.efd]);
  raise();
  const n = waitEventfd(2000);
  assert.equal(n, 1n, `eventfd counted ${n}`);
  const irq = sh('sh', ['-c', "grep vfio-msi /proc/interrupts || true"]).trim().replace(/\s+/g, ' ');
  return `eventfd ${st.efd}: ${n}; ${irq}`;
});

// --- the VMM: VM, XIVE device, region, EQ, guest ----------------------------------------------------
const mode = patched ? 'overlay' : 'kernel-managed';
const mgmt = (g, irq) => BigInt(irq) * g.bytesPerIrq + g.esbPageSize;
const ESB_GET = 0x800n, SET_PQ_00 = 0xc00n;
const guestPq = (irq, off = ESB_GET) => Number(st.guest.read64(mgmt(st.dev.geometry, irq) + off) & 3n);
/** What the guest reads at G (and, patched, at the second view and the two neighbours). */
function views() {
  const r = { G: guestPq(G) };
  if (patched) Object.assign(r, { view: guestPq(VIEW), left: guestPq(G - 1), right: guestPq(G + 1) });
  return r;
}
const showViews = (r) => Object.entries(r).map(([k, v]) => `${k} ${PQ[v]}`).join(', ');

await check(`vfio: a VM with the XIVE device (${NR_IRQS} interrupts, 2 servers), EsbController ${mode}, an EQ (server 0, prio ${PRIO}) in guest memory, KvmPpcGuest on vCPU 1: one memslot`, () => {
  const { XiveKvmDevice, EsbController } = need(st.lib, 'the package');
  const { KvmSystem, MemslotTable } = need(st.kvm, 'the package (xive-remap/kvm)');
  need(st.vfio, 'the VFIO device');
  st.sys = KvmSystem.open();
  st.vm = st.sys.createVm();
  st.dev = XiveKvmDevice.open({ nrIrqs: NR_IRQS, nrServers: 2, vm: st.vm });
  for (const s of [G, G - 1, G + 1, LEFT, RIGHT, VIEW]) st.dev.setSourceState(s);
  st.esb = EsbController.open(st.dev, { mode });
  st.slots = MemslotTable.open(st.vm);
  st.eq = st.stubs.XiveEventQueue.create({ vm: st.vm, slots: st.slots, device: st.dev, server: EQ_SERVER, priority: PRIO, guestPhysAddr: EQ_GPA });
  st.eq.route(G, EISN);
  st.guest = st.stubs.KvmPpcGuest.create({ memslot: st.esb.memslot, vm: st.vm, slots: st.slots, vcpuId: GUEST_VCPU });
  assert.equal(st.esb.mode, mode);
  assert.equal(st.guest.memslotUpdates, 1);
  return `contract ${st.dev.contract}; region ${hex(st.esb.memslot.userspaceAddr)}+${hex(st.esb.memslot.size)} at guest ${hex(st.guest.guestPhysAddr)}; EQ at guest ${hex(EQ_GPA)}`;
});

if (patched) {
  await check(`vfio: overlay: sources ${LEFT} and ${RIGHT} attached at ${G - 1} and ${G + 1}, and G's own pages (dev.pages(${G})) at ${VIEW}: the region is split around G`, () => {
    const { esb, dev } = need(st.guest && st, 'the guest');
    const base = esb.memslot.userspaceAddr;
    dev.esbSetPq(base, LEFT, 3); // distinct states, to tell the pieces apart
    dev.esbSetPq(base, RIGHT, 0);
    esb.attach(G - 1, dev.pages(LEFT));
    esb.attach(G + 1, dev.pages(RIGHT));
    esb.attach(VIEW, dev.pages(G));
    const r = views();
    assert.deepEqual(r, { G: 1, view: 1, left: 3, right: 0 }, showViews(r));
    assert.deepEqual(esb.audit(), []);
    const vmas = esb.stats().vmas;
    assert.equal(vmas, 7, `${vmas} VMAs`);
    st.before = r;
    return `${showViews(r)}; ${vmas} VMAs, audit() clean`;
  });
}

await check(`vfio: hot-plug: esb.attach(${G}, dev.pages(${G})) + vm.assignIrqfd(eventfd, ${G}): kvmppc_xive_set_mapped; the guest's ESB_GET at ${G} now reads the PHB's source (PQ 10), not the IPI (01)`, () => {
  const { esb, dev, vm, guest } = need(st.guest && st, 'the guest');
  const ipi = guestPq(G);
  assert.equal(ipi, 1, `IPI of ${G} reads ${PQ[ipi]} before`);
  const mark = dmesgMark();
  esb.attach(G, dev.pages(G));
  vm.assignIrqfd(st.efd, G);
  const r = views();
  const dbg = debugfsSource(G);
  const said = dmesgSince(mark).find((l) => l.includes('kvmppc_xive_set_mapped'));
  assert.equal(r.G, 2, `guest reads ${showViews(r)}`);
  if (patched) assert.deepEqual(r, { G: 2, view: 2, left: 3, right: 0 }, showViews(r));
  assert.match(dbg ?? '', / PT /, `debugfs: ${dbg}`);
  assert.equal(guest.memslotUpdates, 1);
  if (said) detail(said.trim());
  st.plugged = true;
  return `IPI ${PQ[ipi]} -> ${showViews(r)}; debugfs '${dbg}'${said ? '; dmesg: set_mapped' : ''}; memslot updates 1`;
});

await check("vfio: 6.1's set_mapped quirk: the PHB source stays at PQ 10 (no EOI: native mode never sets guest_priority), so an MSI only sets Q: 11, nothing in the EQ, nothing on the host's eventfd", () => {
  need(st.plugged, 'the hot-plug');
  raise();
  const r = views();
  assert.equal(r.G, 3, showViews(r));
  if (patched) assert.equal(r.view, 3, showViews(r));
  assert.deepEqual(st.eq.entries(), []);
  assert.equal(waitEventfd(200), 0n);
  return showViews(r);
});

await check('vfio: the guest-side fix: SOURCE_CONFIG again (masked, then routed with EISN 0x1234: set_mapped programmed EISN = the guest interrupt number), then the guest\'s own SET_PQ_00 load: it returns 11 and every view reads 00', () => {
  need(st.plugged, 'the hot-plug');
  st.eq.mask(G); // with EISN 0: a SOURCE_CONFIG that changes neither server, priority nor EISN is skipped
  st.eq.route(G, EISN);
  const old = guestPq(G, SET_PQ_00);
  const r = views();
  assert.equal(old, 3, `SET_PQ_00 returned ${PQ[old]}`);
  assert.equal(r.G, 0, showViews(r));
  if (patched) assert.deepEqual(r, { G: 0, view: 0, left: 3, right: 0 }, showViews(r));
  st.unmasked = true;
  return `old ${PQ[old]}; ${showViews(r)}`;
});

await check(`vfio: the edu MSI sets P (PQ 10 in every view) and lands in the EQ page in guest memory: 0x80000000 | EISN ${hex(EISN)}, qindex 1; the host's eventfd sees nothing`, () => {
  need(st.unmasked, 'the unmasked source');
  raise();
  const r = views();
  const words = st.eq.words(2);
  const q = st.eq.state();
  assert.equal(r.G, 2, showViews(r));
  if (patched) assert.deepEqual(r, { G: 2, view: 2, left: 3, right: 0 }, showViews(r));
  assert.deepEqual(words, [0x80000000 + EISN, 0], `EQ words ${words.map(hex)}`);
  assert.equal(q.qindex, 1);
  assert.equal(waitEventfd(200), 0n);
  return `${showViews(r)}; EQ ${words.map(hex).join(' ')}; qindex ${q.qindex} qtoggle ${q.qtoggle}`;
});

await check('vfio: the guest EOIs (SET_PQ_00 returns 10) and a second MSI is the second EQ entry (qindex 2)', () => {
  need(st.unmasked, 'the unmasked source');
  const old = guestPq(G, SET_PQ_00);
  raise();
  const entries = st.eq.entries();
  const q = st.eq.state();
  assert.equal(old, 2, `EOI returned ${PQ[old]}`);
  assert.deepEqual(entries, [{ generation: 1, eisn: EISN }, { generation: 1, eisn: EISN }]);
  assert.equal(q.qindex, 2);
  assert.equal(guestPq(G), 2);
  return `${entries.length} entries, qindex ${q.qindex}`;
});

await check(`vfio: unplug: vm.deassignIrqfd + esb.detach(${G}): kvmppc_xive_clr_mapped; the guest reads the IPI again (PQ 10, as clr_mapped leaves a masked one) and the MSI goes to the host's eventfd again, not to the guest; memslot updates 1`, () => {
  const { esb, vm, guest } = need(st.plugged && st, 'the hot-plug');
  const mark = dmesgMark();
  vm.deassignIrqfd(st.efd, G);
  assert.equal(esb.detach(G), true);
  const r = views();
  const dbg = debugfsSource(G);
  assert.match(dbg ?? '', / IPI /, `debugfs: ${dbg}`);
  assert.equal(r.G, 2, showViews(r));
  if (patched) assert.deepEqual(r, { G: 2, view: 2, left: 3, right: 0 }, showViews(r));
  const entries = st.eq.entries().length;
  raise();
  const after = views();
  assert.deepEqual(after, r, `after an MSI: ${showViews(after)}`);
  assert.equal(st.eq.entries().length, entries, 'the MSI reached the EQ');
  const host = waitEventfd(1000); // back on the host path: vfio's handler signals the eventfd
  assert.equal(host, 1n, `the host's eventfd counted ${host} after the MSI`);
  assert.equal(guest.memslotUpdates, 1);
  const said = dmesgSince(mark).find((l) => l.includes('kvmppc_xive_clr_mapped'));
  if (said) detail(said.trim());
  assert.deepEqual(st.esb.audit(), []);
  return `${showViews(r)}; debugfs '${dbg}'; host eventfd after an MSI: ${host}; memslot updates ${guest.memslotUpdates}`;
});

await check('vfio: teardown: MSI off, guest, EQ, region, device, VM, VFIO device closed', () => {
  const errors = [];
  const steps = [
    () => st.vfio?.setMsi([]),
    () => st.guest?.close(),
    () => st.eq?.close(),
    () => st.esb?.close(),
    () => st.dev?.close(),
    () => st.vm?.close(),
    () => st.sys?.close(),
    () => st.vfio?.close(),
  ];
  for (const f of steps) {
    try {
      f();
    } catch (e) {
      errors.push(e.message);
    }
  }
  assert.deepEqual(errors, []);
});

finish('vfio-checks');
