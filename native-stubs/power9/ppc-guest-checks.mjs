// native-stubs/power9/ppc-guest-checks.mjs — checks of KvmPpcGuest (xive-remap/native-stubs) on a
// POWER9 host with KVM-HV: a real guest reads a region registered ONCE as a memslot, one 8-byte load
// per KVM_RUN, and sees every change the host makes under it on its next load.
//
// Runs inside the emulated POWER9 that run.sh boots:
//   XIVE_POWER9_CHECKS=$PWD/native-stubs/power9/ppc-guest-checks.mjs bash native-stubs/power9/run.sh
// and unchanged on a real POWER9/10 host from a checkout (after `npm run build`; root or access to
// /dev/kvm, kvm-hv loaded):  node native-stubs/power9/ppc-guest-checks.mjs
// Only the public package is imported ('xive-remap', 'xive-remap/native-stubs'). Prints one
// `ok - …` / `not ok - …` line per check, `# …` lines of detail, and a closing `N passed, N failed`
// line; exit status 1 if any failed.
//
// ESB loads have side effects, and a load from a source the kernel does not know faults: every ESB
// load here, by the host or by the guest, goes to a source configured first (KVM_DEV_XIVE_GRP_SOURCE).

import assert from 'node:assert/strict';
import { check, need, hex, finish } from './check-harness.mjs';

const st = {}; // state shared between checks

await check("import('xive-remap') and import('xive-remap/native-stubs') give KvmPpcGuest; usable() is null", async () => {
  st.lib = await import('xive-remap');
  st.stubs = await import('xive-remap/native-stubs');
  assert.equal(typeof st.stubs.KvmPpcGuest?.create, 'function');
  const why = st.stubs.KvmPpcGuest.usable();
  assert.equal(why, null, why);
  return `${process.arch}, node ${process.versions.node}`;
});

// --- 1. a memfd-backed region (fake XIVE device + controller in overlay mode) ---------------------
// Plain memory: the guest reads the fakes' stamps (`ipi:<irq>:<p>`, `pt<id>:<irq>:<p>`), so this shows
// the byte order of read64 and approach 3 itself — MAP_FIXED overlays reaching a POWER guest through
// KVM's MMU notifiers with the memslot registered once.
await check('KvmPpcGuest.create over a fake XIVE region (64 interrupts, 128 KiB each): one memslot, registered once', () => {
  const { FakeXiveDevice, FakePassthroughDevice, KvmPpcGuest } = need(st.stubs, 'the package');
  st.fake = FakeXiveDevice.create({ nrIrqs: 64 });
  st.pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 1 });
  st.fesb = st.lib.EsbController.open(st.fake);
  const t = Date.now();
  st.fguest = KvmPpcGuest.create({ memslot: st.fesb.memslot });
  assert.equal(st.fguest.memslotUpdates, 1);
  assert.equal(st.fguest.guestPhysAddr, 4n << 30n);
  return `mode ${st.fesb.mode}, region ${hex(st.fesb.memslot.userspaceAddr)}+${hex(st.fesb.memslot.size)} at guest ${hex(st.fguest.guestPhysAddr)}, slot ${st.fguest.slot}; create took ${Date.now() - t} ms`;
});

const mgmt = (g, irq) => BigInt(irq) * g.bytesPerIrq + g.esbPageSize; // management page of irq

await check('read64 returns the doubleword big-endian: the stamp "ipi:5:1" reads 0x6970693a353a3100', () => {
  const guest = need(st.fguest, 'the guest');
  const g = st.fesb.geometry;
  const t = Date.now();
  const v = guest.read64(mgmt(g, 5));
  const ms = Date.now() - t;
  assert.equal(v, 0x6970693a353a3100n, `read ${hex(v)}`);
  assert.equal(guest.readString(mgmt(g, 5)), 'ipi:5:1');
  assert.equal(guest.readString(5n * g.bytesPerIrq), 'ipi:5:0');
  assert.equal(guest.readString(mgmt(g, 63)), 'ipi:63:1');
  return `${hex(v)}; first read ${ms} ms`;
});

await check('attach(5, pt1 irq 3) with MAP_FIXED: the guest reads pt1:3 on its next load; detach: ipi:5 again; memslot still registered once', () => {
  const guest = need(st.fguest, 'the guest');
  const g = st.fesb.geometry;
  const seen = [];
  st.fesb.attach(5, st.pt.pages(3));
  seen.push(guest.readString(5n * g.bytesPerIrq), guest.readString(mgmt(g, 5)));
  assert.deepEqual(seen, ['pt1:3:0', 'pt1:3:1']);
  assert.equal(guest.readString(mgmt(g, 4)), 'ipi:4:1');
  assert.equal(guest.readString(mgmt(g, 6)), 'ipi:6:1');
  assert.equal(st.fesb.detach(5), true);
  seen.push(guest.readString(mgmt(g, 5)));
  assert.equal(seen[2], 'ipi:5:1');
  st.fesb.attachRange(8, 4, st.pt.pages(12, 4));
  const range = [8, 9, 10, 11, 12].map((irq) => guest.readString(mgmt(g, irq)));
  assert.deepEqual(range, ['pt1:12:1', 'pt1:13:1', 'pt1:14:1', 'pt1:15:1', 'ipi:12:1']);
  for (const irq of [8, 9, 10, 11]) st.fesb.detach(irq);
  assert.equal(guest.readString(mgmt(g, 9)), 'ipi:9:1');
  assert.equal(guest.memslotUpdates, 1);
  assert.deepEqual(st.fesb.audit(), []);
  return `irq 5: ${seen.join(' -> ')}; attachRange(8, 4): ${range.slice(0, 4).join(' ')}`;
});

await check('400 attach/detach flips, each seen on the guest\'s next load; floating point around the runs stays right', () => {
  const guest = need(st.fguest, 'the guest');
  const g = st.fesb.geometry;
  const off = mgmt(g, 20);
  const ipi = guest.read64(off);
  const pt = 0x7074313a373a3100n; // "pt1:7:1"
  let stale = 0;
  // Float work kept live across every KVM_RUN: f14–f31 are callee-saved, and Node's JIT keeps values there.
  let acc = 0.5, ref = 0.5;
  const t = Date.now();
  for (let i = 0; i < 400; i++) {
    const attach = i % 2 === 0;
    if (attach) st.fesb.attach(20, st.pt.pages(7)); else st.fesb.detach(20);
    const v = guest.read64(off);
    if (v !== (attach ? pt : ipi)) stale++;
    acc = acc * 1.000001 + Math.sqrt(i + 0.25) / 3;
  }
  const ms = Date.now() - t;
  for (let i = 0; i < 400; i++) ref = ref * 1.000001 + Math.sqrt(i + 0.25) / 3;
  st.fesb.detach(20);
  assert.equal(stale, 0, `${stale} stale reads`);
  assert.equal(acc, ref, `float accumulator ${acc} != ${ref}`);
  assert.equal(guest.memslotUpdates, 1);
  return `${(ms / 400).toFixed(2)} ms per flip + read, 0 stale, float ok`;
});

await check('a load with no host page behind it (region unmapped by closing the controller) is E_KVM naming the offset (EFAULT)', () => {
  const guest = need(st.fguest, 'the guest');
  const g = st.fesb.geometry;
  st.fesb.close();
  assert.throws(() => guest.read64(mgmt(g, 3)), (e) => e instanceof st.lib.RemapError && e.code === 'E_KVM' && /offset 0x70000/.test(e.message) && /EFAULT/.test(e.message));
  assert.throws(() => guest.read64(g.bytesPerIrq * 64n), RangeError);
  assert.throws(() => guest.read64(4n), RangeError);
});

await check('close() is idempotent; read64 after it is E_CLOSED', () => {
  const guest = need(st.fguest, 'the guest');
  guest.close();
  guest.close();
  assert.throws(() => guest.read64(0n), (e) => e.code === 'E_CLOSED');
  st.fake.close();
  st.pt.close();
});

// --- 2. the real XIVE ESB pages: one mapping of the whole range (stock kernel: kernel-managed; with
// kernel/'s patch: overlay, and nothing attached here) -------------------------------------------
const patched = process.env.XIVE_POWER9_KERNEL === 'patched';
const autoMode = patched ? 'overlay' : 'kernel-managed';
await check(`a VM, XiveKvmDevice.open({ nrIrqs: 16, nrServers: 1, vm }), EsbController 'auto' (${autoMode}), KvmPpcGuest on the same VM`, async () => {
  const { XiveKvmDevice, EsbController } = need(st.lib, 'the package');
  const { KvmSystem } = await import('xive-remap/kvm');
  st.sys = KvmSystem.open();
  st.vm = st.sys.createVm();
  st.dev = XiveKvmDevice.open({ nrIrqs: 16, nrServers: 1, vm: st.vm });
  st.esb = EsbController.open(st.dev, { mode: 'auto' });
  st.guest = st.stubs.KvmPpcGuest.create({ memslot: st.esb.memslot, vm: st.vm });
  assert.equal(st.esb.mode, autoMode);
  assert.equal(st.guest.memslotUpdates, 1);
  return `contract ${st.dev.contract}, region ${hex(st.esb.memslot.userspaceAddr)}+${hex(st.esb.memslot.size)} at guest ${hex(st.guest.guestPhysAddr)}`;
});

const esbGetOffset = (g, irq) => mgmt(g, irq) + 0x800n; // ESB_GET: management page + 0x800

await check("sources 0-3 set to PQ 00,01,10,11 by the host: the guest's ESB_GET loads (+0x800) read each, as the host's esbGet does", () => {
  const { dev, esb, guest } = st;
  need(guest, 'the guest');
  const base = esb.memslot.userspaceAddr;
  for (let irq = 0; irq < 4; irq++) dev.setSourceState(irq);
  for (let irq = 0; irq < 4; irq++) dev.esbSetPq(base, irq, irq);
  const raw = [0, 1, 2, 3].map((irq) => guest.read64(esbGetOffset(dev.geometry, irq)));
  const pq = raw.map((v) => Number(v & 3n));
  const host = [0, 1, 2, 3].map((irq) => dev.esbGet(base, irq));
  assert.deepEqual(pq, [0, 1, 2, 3], `guest read ${raw.map(hex)}`);
  assert.deepEqual(host, pq);
  st.states = true;
  return `guest: ${raw.map((v, irq) => `${irq}:${hex(v)}`).join(' ')}`;
});

await check("the host changes the states with SET_PQ loads: the guest's next ESB_GET sees each change; memslot still registered once", () => {
  need(st.states, 'the four PQ states');
  const { dev, esb, guest } = st;
  const base = esb.memslot.userspaceAddr;
  const want = [3, 2, 1, 0];
  for (let irq = 0; irq < 4; irq++) dev.esbSetPq(base, irq, want[irq]);
  const pq = [0, 1, 2, 3].map((irq) => Number(guest.read64(esbGetOffset(dev.geometry, irq)) & 3n));
  assert.deepEqual(pq, want);
  dev.esbSetPq(base, 1, 0);
  assert.equal(Number(guest.read64(esbGetOffset(dev.geometry, 1)) & 3n), 0);
  assert.equal(guest.memslotUpdates, 1);
  return `after the host's SET_PQ: ${pq.map((p, irq) => `${irq}:${st.lib.formatPq(p)}`).join(' ')}; irq 1 -> 00`;
});

await check("the guest's own SET_PQ_01 load (+0xd00) on source 2 returns the old PQ and masks it, as the host's esbGet then reads", () => {
  const { dev, esb, guest } = st;
  need(st.states, 'the four PQ states');
  const old = Number(guest.read64(mgmt(dev.geometry, 2) + 0xd00n) & 3n);
  assert.equal(old, 1, 'source 2 held PQ 01 (set by the previous check)');
  dev.esbSetPq(esb.memslot.userspaceAddr, 2, 3);
  const old2 = Number(guest.read64(mgmt(dev.geometry, 2) + 0xd00n) & 3n);
  assert.equal(old2, 3);
  assert.equal(dev.esbGet(esb.memslot.userspaceAddr, 2), 1);
  return 'old 11 -> host reads 01';
});

await check('closing the guest, the region, the device and the VM', () => {
  need(st.guest, 'the guest').close();
  st.guest.close();
  assert.throws(() => st.guest.read64(0n), (e) => e.code === 'E_CLOSED');
  st.esb.close();
  st.dev.close();
  st.vm.close();
  st.sys.close();
});

finish('ppc-guest-checks');
