// A real KVM guest (x86_64, long mode, paging, CPL3) reads a memfd-backed host range registered
// ONCE as a memslot: after every mmap(MAP_FIXED) inside the range it must see the new page on its
// very next load, with no memslot update. Skips, with the reason, where /dev/kvm is not usable.
import { expect } from 'chai';
import { RemapError, errnoOf, errnoValue } from '../src/errors.js';
import { realNative } from '../src/native/index.js';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';
import { MemfdRegion, stampedMemfd } from './kvm-fixtures.js';

const unusable = KvmX86Guest.usable();
const PAGES = 64;
const stampA = (p: number): number => 0xa000_0000 + p;
const stampB = (p: number): number => 0xb000_0000 + p;

describe(`KvmX86Guest on /dev/kvm${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
  let fdA = -1;
  let fdB = -1;
  let region: MemfdRegion;
  let guest: KvmX86Guest;

  before(function () {
    if (unusable) this.skip(); // the reason is printed once, by test/hooks.ts
    fdA = stampedMemfd('kvm-guest-a', PAGES, stampA);
    fdB = stampedMemfd('kvm-guest-b', PAGES, stampB);
  });

  beforeEach(() => {
    region = new MemfdRegion(fdA, PAGES);
    guest = KvmX86Guest.create({ memslot: region.memslot });
  });

  afterEach(() => {
    guest?.close();
    region?.close();
  });

  after(() => {
    for (const fd of [fdA, fdB]) if (fd >= 0) realNative.close(fd);
  });

  const page = (p: number): bigint => BigInt(p) * region.pageSize;

  it('reads the stamps the host wrote, through one memslot registered once', () => {
    for (const p of [0, 1, 31, PAGES - 1]) expect(guest.read32(page(p)), `page ${p}`).to.equal(stampA(p));
    expect(guest.memslotUpdates).to.equal(1);
    expect(guest.guestPhysAddr).to.equal(4n << 30n);
  });

  it('sees a page mapped over with MAP_FIXED on its very next load, and the old one after mapping back', () => {
    expect(guest.read32(page(5))).to.equal(stampA(5));
    region.mapPage(5, fdB);
    expect(guest.read32(page(5))).to.equal(stampB(5));
    expect(guest.read32(page(4))).to.equal(stampA(4));
    expect(guest.read32(page(6))).to.equal(stampA(6));
    region.mapPage(5, fdA);
    expect(guest.read32(page(5))).to.equal(stampA(5));
    expect(guest.memslotUpdates).to.equal(1);
  });

  it('sees every one of 10,000 remaps on the next load (0 stale reads, memslot untouched)', function () {
    this.timeout(120_000);
    const cycles = 10_000;
    let stale = 0;
    const t0 = performance.now();
    for (let i = 0; i < cycles; i++) {
      const p = i % PAGES;
      const toB = ((i / PAGES) | 0) % 2 === 0; // first pass maps B over each page, the next maps A back, …
      region.mapPage(p, toB ? fdB : fdA);
      if (guest.read32(page(p)) !== (toB ? stampB(p) : stampA(p))) stale++;
    }
    const ms = performance.now() - t0;
    console.log(`      ${cycles} remap+read cycles in ${ms.toFixed(0)} ms (${((ms * 1000) / cycles).toFixed(1)} µs each), ${stale} stale`);
    expect(stale).to.equal(0);
    expect(guest.memslotUpdates).to.equal(1);
  });

  it('runs its loads natively through KVM\'s MMU: no page fault when nothing moved, one per remapped page, one emulated instruction at most per read', function () {
    let before: ReadonlyMap<string, bigint>;
    try {
      before = guest.kvmStats();
    } catch (e) {
      if (e instanceof RemapError && e.code === 'E_KVM') this.skip(); // no KVM_GET_STATS_FD before Linux 5.14
      throw e;
    }
    const delta = (a: ReadonlyMap<string, bigint>, b: ReadonlyMap<string, bigint>, k: string): number => {
      expect(b.has(k), `KVM stat ${k}`).to.equal(true);
      return Number((b.get(k) ?? 0n) - (a.get(k) ?? 0n));
    };
    const n = 1000;
    for (let p = 0; p < PAGES; p++) guest.read32(page(p)); // fault every page in once
    before = guest.kvmStats();
    for (let i = 0; i < n; i++) guest.read32(page(i % PAGES));
    const still = guest.kvmStats();
    // An emulated load would cost an emulated instruction of its own; only the `out` may be emulated
    // (PVM emulates it, VMX/SVM need not), and with nothing remapped no load needs a page fault.
    expect(delta(before, still, 'insn_emulation'), 'emulated instructions for reads without remap').to.be.at.most(n);
    expect(delta(before, still, 'pf_fixed'), 'page faults for reads without remap').to.be.at.most(2);
    for (let i = 0; i < n; i++) {
      const p = i % PAGES;
      region.mapPage(p, ((i / PAGES) | 0) % 2 === 0 ? fdB : fdA);
      guest.read32(page(p));
    }
    const after = guest.kvmStats();
    // Each MAP_FIXED zapped the page through the MMU notifier: the next load faulted the new page in.
    expect(delta(still, after, 'pf_fixed'), 'page faults for reads after a remap').to.be.at.least(n);
    expect(delta(still, after, 'insn_emulation'), 'emulated instructions for reads after a remap').to.be.at.most(n);
    console.log(`      per read: ${(delta(before, still, 'exits') / n).toFixed(2)} exits, ${(delta(before, still, 'insn_emulation') / n).toFixed(2)} emulated instructions; per remapped read: ${(delta(still, after, 'pf_fixed') / n).toFixed(2)} page faults`);
  });

  it('throws E_KVM naming the offset for a load from an unmapped page, and reads again once it is remapped', () => {
    region.unmapPage(3);
    let err: unknown;
    try {
      guest.read32(page(3) + 8n);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RemapError);
    expect((err as RemapError).code).to.equal('E_KVM');
    expect((err as RemapError).message).to.contain('offset 0x3008').and.contain('EFAULT');
    expect(errnoOf(err)).to.equal(errnoValue('EFAULT'));
    expect(guest.read32(page(2))).to.equal(stampA(2)); // the guest still runs
    region.mapPage(3, fdB);
    expect(guest.read32(page(3))).to.equal(stampB(3));
    expect(guest.memslotUpdates).to.equal(1);
  });

  it('refuses offsets outside the region, and is closed for good after close()', () => {
    expect(() => guest.read32(-4n)).to.throw(RangeError);
    expect(() => guest.read32(region.size - 2n)).to.throw(RangeError, /outside/);
    guest.close();
    guest.close();
    expect(() => guest.read32(0n)).to.throw(RemapError, /closed/);
  });

  it('maps a region of 8 GiB placed above 64 GiB (2 MiB pages, the guest CPUID physical-address width)', function () {
    const size = 8n << 30n;
    const bigFd = realNative.memfdCreate('kvm-guest-8g', 0);
    let big: MemfdRegion | undefined;
    let g: KvmX86Guest | undefined;
    try {
      realNative.ftruncate(bigFd, size); // sparse: only the stamped pages cost memory
      const last = size - region.pageSize;
      const b = Buffer.alloc(4);
      b.writeUInt32LE(0x1a57_9a9e);
      realNative.pwrite(bigFd, b, last);
      big = new MemfdRegion(bigFd, Number(size / region.pageSize));
      g = KvmX86Guest.create({ memslot: big.memslot, guestPhysAddr: 100n << 30n });
      expect(g.read32(last)).to.equal(0x1a57_9a9e);
      expect(g.read32(0n)).to.equal(0);
      expect(g.memslotUpdates).to.equal(1);
    } finally {
      g?.close();
      big?.close();
      realNative.close(bigFd);
    }
  });

  it('reports why it cannot run on a host that is not x86_64', () => {
    expect(KvmX86Guest.usable({ ...realNative, arch: 'ppc64' })).to.match(/x86_64/);
    expect(() => KvmX86Guest.create({ memslot: region.memslot, native: { ...realNative, arch: 'arm64' } })).to.throw(RemapError, /x86_64/);
  });
});
