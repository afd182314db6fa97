// native-stubs/power9/approach3-checks.mjs — approach 3 end to end, on a kernel with kernel/'s patch.
//
// Runs in the emulated POWER9's patched boot (run.sh), after guest-checks.mjs, or on a real POWER9/10
// host whose kvm.ko carries the patch (`node native-stubs/power9/approach3-checks.mjs` after a build).
// Everything goes through the package's public API: XiveKvmDevice configures real sources of a real
// KVM XIVE device; the device's own pages for sources 32..63 stand in for a passthrough device's
// interrupts, attached with MAP_FIXED over guest interrupts 0..31 of the controller's region.
//
// What is checked, and how a misroute would show:
//  - a model of the region (guest interrupt -> source whose pages back it) and of every source's PQ
//    bits, which are set through a *reference* mapping of the whole ESB range that nothing ever splits;
//  - after every operation, an ESB_GET load through the region for every interrupt must return the PQ
//    of the source the model says backs it, and SET_PQ loads through the region must change that
//    source and no other. Sources get random PQ states all along, so a load that reached the wrong
//    source is caught with probability 3/4 each time it is made;
//  - the region's VMAs are what the controller counts and stay within its bound 2 x runs + 1 + K
//    (these VM_PFNMAP mappings never merge; K = vmaSlack 8, so compaction happens), audit() finds
//    nothing, and backingOf agrees with the model;
//  - a KVM-HV guest (KvmPpcGuest) reading the region through one memslot, registered once, sees each
//    attach and detach on its very next load.
// Loads go only to configured sources: every source of the device is configured before the first load.
// Only the package's public API is used; /proc/self/maps is read by this script itself.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { check, need, hex, finish } from './check-harness.mjs';


const lib = await import('xive-remap');
const stubs = await import('xive-remap/native-stubs');
const { EsbController, XiveKvmDevice, RemapError, formatPq } = lib;
const { KvmSystem } = await import('xive-remap/kvm');

/** VMAs of this process overlapping [start, end), from /proc/self/maps read here (not by the library). */
function vmasIn(start, end) {
  const out = [];
  for (const line of readFileSync('/proc/self/maps', 'latin1').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (!m) continue;
    const s = BigInt(`0x${m[1]}`), e = BigInt(`0x${m[2]}`);
    if (e > start && s < end) out.push({ start: s, end: e, offset: BigInt(`0x${m[4]}`), path: m[5] });
  }
  return out;
}

const NR_IRQS = 64;        // the region
const GUEST = 32;          // guest interrupts 0..31 take passthrough pages
const PT_FIRST = 32;       // sources 32..63 are the "passthrough device"
const OPS = Number(process.env.XIVE_APPROACH3_OPS || 1000);
const SEED = Number(process.env.XIVE_APPROACH3_SEED || 20261125);

// mulberry32: small, seeded, reproducible
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const pick = (n) => Math.floor(rand() * n);

const st = {};
/** model.backing[j]: the source whose pages back guest interrupt j; model.pq[s]: source s's PQ bits. */
const model = { backing: Array.from({ length: NR_IRQS }, (_, j) => j), pq: new Array(NR_IRQS).fill(1) };

/** SET_PQ through the reference mapping (never split): the truth the region is compared with. */
function setTruth(source, pq) {
  st.dev.esbSetPq(st.ref, source, pq);
  model.pq[source] = pq;
}
function shuffleStates(n) {
  for (let i = 0; i < n; i++) setTruth(pick(NR_IRQS), pick(4));
}
/** Every interrupt through the region against the model; the region's VMAs against the bound. */
function verifyRegion(where) {
  const { dev, esb } = st;
  const base = esb.memslot.userspaceAddr;
  for (let j = 0; j < NR_IRQS; j++) {
    const got = dev.esbGet(base, j);
    const want = model.pq[model.backing[j]];
    if (got !== want) {
      throw new Error(`${where}: interrupt ${j} (backed by source ${model.backing[j]}) read PQ ${formatPq(got)}, source ${model.backing[j]} holds ${formatPq(want)}`);
    }
  }
  const vmas = vmasIn(base, base + esb.memslot.size).length;
  const runs = esb.runs().length;
  const { vmas: counted, vmaBound } = esb.stats();
  if (vmas !== counted || vmas > vmaBound || vmaBound !== 2 * runs + 1 + 8) throw new Error(`${where}: ${vmas} VMAs for ${runs} runs (the controller counts ${counted}, bound ${vmaBound})`);
  return { vmas, runs };
}
function checkBacking(where) {
  for (let j = 0; j < NR_IRQS; j++) {
    const b = st.esb.backingOf(j);
    const want = model.backing[j];
    const ok = want === j ? b.kind === 'ipi' : b.kind === 'passthrough' && b.source === `kvm-xive:${want}`;
    if (!ok) throw new Error(`${where}: backingOf(${j}) is ${JSON.stringify(b, (k, v) => (typeof v === 'bigint' ? hex(v) : v))}, the model says source ${want}`);
  }
}

// --- the device, the region, the reference mapping ------------------------------------------------
await check(`XiveKvmDevice.open({ nrIrqs: ${NR_IRQS} }): the patched kernel maps each interrupt at its own offset`, () => {
  // One VM holds the XIVE device and, later, the guest that reads the region through a memslot.
  st.sys = KvmSystem.open();
  st.vm = st.sys.createVm();
  st.dev = XiveKvmDevice.open({ nrIrqs: NR_IRQS, nrServers: 1, vm: st.vm });
  assert.equal(st.dev.contract, 'per-irq-offsets');
  return `esbShift ${st.dev.geometry.esbShift}, ${st.dev.geometry.bytesPerIrq} bytes per interrupt`;
});

await check("EsbController.open(dev, { mode: 'auto' }) picks overlay: one mapping of the IPI ESB pages, one VMA", () => {
  const dev = need(st.dev, 'the device');
  st.esb = EsbController.open(dev, { mode: 'auto', vmaSlack: 8 });
  assert.equal(st.esb.mode, 'overlay');
  const { userspaceAddr, size } = st.esb.memslot;
  assert.equal(size, BigInt(NR_IRQS) * dev.geometry.bytesPerIrq);
  const vmas = vmasIn(userspaceAddr, userspaceAddr + size);
  assert.equal(vmas.length, 1);
  assert.deepEqual(st.esb.audit(), []);
  return `${hex(userspaceAddr)}+${hex(size)} ${vmas[0].path} pgoff ${hex(vmas[0].offset)}`;
});

await check(`all ${NR_IRQS} sources configured (KVM_DEV_XIVE_GRP_SOURCE); random PQ states set through a reference mapping read back through the region`, () => {
  const dev = need(st.esb ? st.dev : undefined, 'the region');
  for (let s = 0; s < NR_IRQS; s++) dev.setSourceState(s);
  // The reference: a second region on the same device, kernel-managed so that nothing is ever mapped
  // over it: the whole ESB range mapped once more, at another address, never split.
  st.refEsb = EsbController.open(dev, { mode: 'kernel-managed' });
  st.ref = st.refEsb.memslot.userspaceAddr;
  for (let s = 0; s < NR_IRQS; s++) assert.equal(dev.esbGet(st.ref, s), 1, `source ${s} after configuration`);
  shuffleStates(NR_IRQS * 2);
  verifyRegion('before any attach');
  return `${model.pq.slice(0, 8).map(formatPq).join(' ')} …`;
});

// --- attach / attachRange / detach / detachRange, one by one -------------------------------------
await check('attach(3, dev.pages(40)): interrupt 3 reads source 40; 2 and 4 still read their own; backingOf says kvm-xive:40', () => {
  const { dev, esb } = need(st.ref ? st : undefined, 'the reference mapping');
  setTruth(3, 0); setTruth(40, 3); setTruth(2, 1); setTruth(4, 2);
  const src = dev.pages(40);
  esb.attach(3, src);
  src.close(); // the region holds its own reference
  model.backing[3] = 40;
  const base = esb.memslot.userspaceAddr;
  assert.equal(dev.esbGet(base, 3), 3, 'interrupt 3 should read source 40 (11)');
  checkBacking('after attach(3)');
  const { vmas, runs } = verifyRegion('after attach(3)');
  assert.equal(vmas, 3);
  return `reads ${[2, 3, 4].map((j) => `${j}:${formatPq(dev.esbGet(base, j))}`).join(' ')}; ${vmas} VMAs, ${runs} run`;
});

await check('a SET_PQ load through interrupt 3 changes source 40 and leaves source 3 alone', () => {
  const { dev, esb } = need(st.esb?.runs().length === 1 ? st : undefined, 'attach(3)');
  const old = dev.esbSetPq(esb.memslot.userspaceAddr, 3, 1);
  assert.equal(old, 3, 'the old PQ returned is source 40\'s');
  model.pq[40] = 1;
  assert.equal(dev.esbGet(st.ref, 40), 1, 'source 40 through the reference mapping');
  assert.equal(dev.esbGet(st.ref, 3), 0, 'source 3 through the reference mapping');
  verifyRegion('after SET_PQ through 3');
});

await check('the model check can fail: told that source 41 backs interrupt 3 (source 40 does), it reports the misroute', () => {
  need(st.esb?.runs().length === 1 ? st : undefined, 'attach(3)');
  setTruth(40, 2); setTruth(41, 1);
  model.backing[3] = 41;
  try {
    assert.throws(() => verifyRegion('a deliberately wrong model'), /interrupt 3 \(backed by source 41\) read PQ 10, source 41 holds 01/);
  } finally {
    model.backing[3] = 40;
  }
  verifyRegion('the model put right');
});

await check('attachRange(8, 4, dev.pages(48, 4)): one mapping for four interrupts; 8..11 read sources 48..51', () => {
  const { dev, esb } = st;
  shuffleStates(16);
  const src = dev.pages(48, 4);
  esb.attachRange(8, 4, src);
  src.close();
  for (let i = 0; i < 4; i++) model.backing[8 + i] = 48 + i;
  checkBacking('after attachRange(8, 4)');
  const { vmas, runs } = verifyRegion('after attachRange(8, 4)');
  assert.equal(runs, 2);
  return `${vmas} VMAs, ${runs} runs`;
});

await check('detach(3) and detachRange(8, 4) put the IPI pages back: every interrupt reads its own source, one VMA', () => {
  const { esb } = st;
  shuffleStates(16);
  assert.equal(esb.detach(3), true);
  model.backing[3] = 3;
  verifyRegion('after detach(3)');
  assert.equal(esb.detachRange(8, 4), 4);
  for (let i = 0; i < 4; i++) model.backing[8 + i] = 8 + i;
  checkBacking('after detachRange(8, 4)');
  const { vmas } = verifyRegion('after detachRange(8, 4)');
  assert.equal(vmas, 1);
  assert.deepEqual(esb.audit(), []);
});

// --- random operations against the model ----------------------------------------------------------
await check(`${OPS} random operations (seed ${SEED}), each checked by ${NR_IRQS} ESB_GET loads through the region against the model`, () => {
  const { dev, esb } = need(st.ref ? st : undefined, 'the reference mapping');
  const counts = { attach: 0, attachRange: 0, detach: 0, detachRange: 0, refused: 0, setPq: 0 };
  let maxVmas = 0, maxRuns = 0, loads = 0;
  for (let op = 0; op < OPS; op++) {
    const where = `op ${op}`;
    const kind = pick(5);
    if (kind <= 1) {
      // attach or attachRange of 1..4 passthrough sources over free guest interrupts
      const count = kind === 0 ? 1 : 1 + pick(4);
      const first = pick(GUEST - count + 1);
      const srcFirst = PT_FIRST + pick(NR_IRQS - PT_FIRST - count + 1);
      const free = model.backing.slice(first, first + count).every((b, i) => b === first + i);
      const src = dev.pages(srcFirst, count);
      try {
        if (count === 1) esb.attach(first, src);
        else esb.attachRange(first, count, src);
        assert.ok(free, `${where}: attaching over an attached interrupt was accepted`);
        for (let i = 0; i < count; i++) model.backing[first + i] = srcFirst + i;
        counts[count === 1 ? 'attach' : 'attachRange']++;
      } catch (e) {
        if (!(e instanceof RemapError) || e.code !== 'E_ALREADY_ATTACHED' || free) throw e;
        counts.refused++;
      } finally {
        src.close();
      }
    } else if (kind === 2) {
      const j = pick(GUEST);
      const was = model.backing[j] !== j;
      assert.equal(esb.detach(j), was, `${where}: detach(${j})`);
      model.backing[j] = j;
      counts.detach++;
    } else if (kind === 3) {
      const count = 1 + pick(8);
      const first = pick(GUEST - count + 1);
      let n = 0;
      for (let j = first; j < first + count; j++) if (model.backing[j] !== j) { n++; model.backing[j] = j; }
      assert.equal(esb.detachRange(first, count), n, `${where}: detachRange(${first}, ${count})`);
      counts.detachRange++;
    } else {
      // SET_PQ through the region: must change the backing source, and only it
      const j = pick(NR_IRQS), pq = pick(4), s = model.backing[j];
      const old = dev.esbSetPq(esb.memslot.userspaceAddr, j, pq);
      assert.equal(old, model.pq[s], `${where}: SET_PQ through interrupt ${j} returned the old PQ of another source than ${s}`);
      model.pq[s] = pq;
      counts.setPq++;
    }
    shuffleStates(4);
    const { vmas, runs } = verifyRegion(where);
    loads += NR_IRQS;
    maxVmas = Math.max(maxVmas, vmas);
    maxRuns = Math.max(maxRuns, runs);
    if (op % 100 === 99) {
      checkBacking(where);
      assert.deepEqual(esb.audit(), [], `${where}: audit()`);
    }
  }
  const left = esb.detachRange(0, NR_IRQS);
  model.backing = model.backing.map((_, j) => j);
  const { vmas } = verifyRegion('after detaching all');
  assert.equal(vmas, 1);
  assert.deepEqual(esb.audit(), []);
  return `${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')}; ${loads} region loads, 0 misroutes; ` +
    `VMAs at most ${maxVmas} (runs at most ${maxRuns}); detach all restored ${left}, then 1 VMA`;
});

// --- the guest's view -------------------------------------------------------------------------------
await check('a KVM-HV guest reading the region through one memslot sees each attach, attachRange, detach and detachRange on its next load; the memslot is registered once', () => {
  const { dev, esb } = need(st.ref ? st : undefined, 'the region');
  const why = stubs.KvmPpcGuest.usable();
  if (why) throw new Error(`skipped: ${why}`);
  const g = dev.geometry;
  const mgmt = (j) => BigInt(j) * g.bytesPerIrq + g.esbPageSize + 0x800n; // ESB_GET of interrupt j
  const guest = stubs.KvmPpcGuest.create({ memslot: esb.memslot, vm: st.vm });
  st.guest = guest;
  const seen = [];
  const expect = (j, what) => {
    const got = Number(guest.read64(mgmt(j)) & 3n);
    const want = model.pq[model.backing[j]];
    assert.equal(got, want, `${what}: the guest read PQ ${got} at interrupt ${j}, source ${model.backing[j]} holds ${want}`);
    seen.push(`${j}:${formatPq(got)}`);
  };
  setTruth(5, 1); setTruth(33, 2); setTruth(34, 3); setTruth(6, 0);
  expect(5, 'before attach');
  let flips = 0;
  for (let round = 0; round < 20; round++) {
    const src = dev.pages(33 + (round % 2));
    esb.attach(5, src);
    src.close();
    model.backing[5] = 33 + (round % 2);
    expect(5, `after attach #${round}`);
    expect(6, `neighbour after attach #${round}`);
    esb.detach(5);
    model.backing[5] = 5;
    expect(5, `after detach #${round}`);
    flips += 2;
  }
  // A block: attachRange, then detachRange; the guest reads the block and its neighbours each time.
  shuffleStates(16);
  const block = dev.pages(50, 3);
  esb.attachRange(12, 3, block);
  block.close();
  for (let i = 0; i < 3; i++) model.backing[12 + i] = 50 + i;
  for (let j = 11; j < 16; j++) expect(j, 'after attachRange(12, 3)');
  esb.detachRange(12, 3);
  for (let i = 0; i < 3; i++) model.backing[12 + i] = 12 + i;
  for (let j = 11; j < 16; j++) expect(j, 'after detachRange(12, 3)');
  flips += 2;
  assert.equal(guest.memslotUpdates, 1);
  return `${flips} flips, first loads ${seen.slice(0, 6).join(' ')} …; memslotUpdates ${guest.memslotUpdates}`;
});

await check('closing the guest, the reference mapping, the region and the device', () => {
  st.guest?.close();
  st.refEsb?.close();
  need(st.esb, 'the region').close();
  need(st.dev, 'the device').close();
  st.vm?.close();
  st.sys?.close();
  assert.equal(st.esb.closed, true);
});

finish('approach3-checks');
