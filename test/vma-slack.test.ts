/**
 * The amortized VMA bound on never-merging devices (invariant 5, README "Performance"): a detach
 * maps back only its interrupts' own pages, leaving their edges as stale VMA boundaries inside the
 * IPI gap, until more than K (`vmaSlack`) would be left or the table would be empty; that detach's
 * one mmap then covers the whole gap. Checked here against /proc/self/maps after every call, with
 * the length of every mmap the controller makes.
 */
import { expect } from 'chai';
import { DEFAULT_VMA_SLACK, EsbController, type EsbDevice } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';
import { MAP_FIXED, realNative, type NativeLayer } from '../src/internal.js';
import { expectBackingMatchesMemory, expectRemapError, regionVmas } from './helpers.js';

/** The real native layer, recording the length (in interrupts) of every MAP_FIXED mmap. */
function recording(bytesPerIrq: bigint): { native: NativeLayer; lengths: number[] } {
  const lengths: number[] = [];
  const native = Object.create(realNative, {
    mmap: {
      value: (addr: bigint, len: bigint, prot: number, flags: number, fd: number, off: bigint): bigint => {
        if (flags & MAP_FIXED) lengths.push(Number(len / bytesPerIrq));
        return realNative.mmap(addr, len, prot, flags, fd, off);
      },
    },
  }) as NativeLayer;
  return { native, lengths };
}

describe('the amortized VMA bound on a never-merging device (vmaSlack)', () => {
  const NR = 256;
  let dev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: NR, unmergeable: true, esbShift: 13 });
    pt = FakePassthroughDevice.create({ nrIrqs: 64, id: 1, esbShift: 13 });
  });
  afterEach(() => {
    dev.close();
    pt.close();
  });

  function open(vmaSlack?: number): { esb: EsbController; lengths: number[] } {
    const { native, lengths } = recording(dev.geometry.bytesPerIrq);
    const esb = EsbController.open(dev, vmaSlack === undefined ? { native } : { native, vmaSlack });
    return { esb, lengths };
  }

  /** /proc/self/maps agrees with the controller's count, which keeps the bound; one VMA with no run. */
  function expectBound(esb: EsbController, slack: number, what: string): void {
    const { runs, vmas, vmaBound } = esb.stats();
    expect(vmaBound, what).to.equal(2 * runs + 1 + slack);
    expect(regionVmas(esb).length, `${what}: /proc/self/maps`).to.equal(vmas);
    expect(vmas, `${what}: bound`).to.be.at.most(vmaBound);
    if (runs === 0) expect(vmas, `${what}: one VMA with no run`).to.equal(1);
    expect(esb.audit(), `${what}: audit`).to.deep.equal([]);
  }

  it('restores own pages until K stale boundaries, then maps the whole gap in the same one mmap; the last detach maps the whole region', () => {
    const K = 6;
    const { esb, lengths } = open(K);
    try {
      // A run at 0 stays attached, so the table never empties until the end; singles spread over the gap.
      const keep = pt.pages(63);
      esb.attach(0, keep);
      keep.close();
      const irqs = [20, 40, 60, 80, 100, 120];
      irqs.forEach((irq, i) => {
        const s = pt.pages(i);
        esb.attach(irq, s);
        s.close();
      });
      expectBound(esb, K, 'attached');
      const expected: number[] = [];
      // Each own-pages detach leaves 2 stale boundaries: 3 fit in K = 6, the 4th would make 8.
      for (const [n, irq] of irqs.entries()) {
        lengths.length = 0;
        expect(esb.detach(irq)).to.equal(true);
        expect(lengths, `detach(${irq}): one mmap`).to.have.length(1);
        expected.push(lengths[0] as number);
        expectBound(esb, K, `after detach(${irq}) (#${n + 1})`);
        expectBackingMatchesMemory(esb);
      }
      // Own pages (1), own, own, then the gap: from run 0's end to the next run (100) = [1, 100),
      // then own pages again (the gap [1, 100) is one VMA now): 100 and 120 leave 4 stale ones.
      expect(expected).to.deep.equal([1, 1, 1, 99, 1, 1]);
      lengths.length = 0;
      esb.detach(0);
      expect(lengths, 'the detach that empties the table maps the whole region').to.deep.equal([NR]);
      expectBound(esb, K, 'empty');
    } finally {
      esb.close();
    }
  });

  it('with vmaSlack 0 keeps the strict bound: every detach maps its whole gap (2 × runs + 1)', () => {
    const { esb, lengths } = open(0);
    try {
      for (const irq of [10, 30, 50]) {
        const s = pt.pages(irq);
        esb.attach(irq, s);
        s.close();
      }
      lengths.length = 0;
      esb.detach(30);
      expect(lengths).to.deep.equal([39]); // [11, 50)
      expectBound(esb, 0, 'after detach(30)');
    } finally {
      esb.close();
    }
  });

  it('an attach over stale boundaries removes them, and a detachRange over several runs restores one span', () => {
    const { esb, lengths } = open();
    try {
      for (const irq of [10, 12, 14, 200]) {
        const s = pt.pages(irq % 64);
        esb.attach(irq, s);
        s.close();
      }
      esb.detach(12); // stale at 12, 13
      expectBound(esb, DEFAULT_VMA_SLACK, 'after detach(12)');
      const s = pt.pages(0, 3);
      esb.attachRange(11, 3, s); // covers 11..13: both stale boundaries become run edges or vanish
      s.close();
      expect(esb.stats().vmas, 'runs 10, 11-13, 14, 200 and three gaps: no stale boundary left').to.equal(7);
      expectBound(esb, DEFAULT_VMA_SLACK, 'after attachRange(11, 3)');
      lengths.length = 0;
      expect(esb.detachRange(9, 7)).to.equal(5);
      expect(lengths).to.deep.equal([5]); // [10, 15): own span, one mmap
      expectBound(esb, DEFAULT_VMA_SLACK, 'after detachRange(9, 7)');
    } finally {
      esb.close();
    }
  });

  it('merging devices never go stale: the bound stays 2 × runs + 1 whatever vmaSlack says', () => {
    const m = FakeXiveDevice.create({ nrIrqs: NR, esbShift: 13 });
    const esb = EsbController.open(m, { vmaSlack: 50 });
    try {
      const s = pt.pages(1);
      esb.attach(100, s);
      s.close();
      esb.attach(7, pt.pages(2));
      esb.detach(100);
      expect(esb.stats().vmaBound).to.equal(3);
      expect(regionVmas(esb).length).to.be.at.most(3);
    } finally {
      esb.close();
      m.close();
    }
  });

  it('refuses a vmaSlack that is not a non-negative integer, before mapping anything', () => {
    for (const bad of [-1, 1.5, Number.NaN, '8', 2n]) {
      expectRemapError(() => EsbController.open(dev, { vmaSlack: bad as number }), 'E_VMA_BUDGET');
    }
  });
});

describe('the hot path asks the device for IPI offsets unless they are linear', () => {
  it('maps back exactly offsetOf(irq) for a device whose offsets are not irq × bytesPerIrq from offsetOf(0)', () => {
    const fake = FakeXiveDevice.create({ nrIrqs: 64, esbShift: 13 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 1, esbShift: 13 });
    const bpi = fake.geometry.bytesPerIrq;
    // Interrupt n's IPI pages are the fake's interrupt n ^ 1 (32 of its 64): a permutation, so the
    // linear formula the hot path may use would pick the wrong pages (6 for 5, not 4).
    const odd: EsbDevice = {
      name: 'permuted',
      nrIrqs: 32,
      geometry: fake.geometry,
      contract: fake.contract,
      mergeable: true,
      openIpiPages: () => ({ ...fake.openIpiPages(), offsetOf: (irq: number) => BigInt(irq ^ 1) * bpi }),
    };
    const esb = EsbController.open(odd);
    try {
      const s = pt.pages(2);
      for (const irq of [5, 8, 31]) {
        esb.attach(irq, s);
        expect(readStamp(esb, irq)).to.equal('pt1:2:0');
        esb.detach(irq);
        expect(readStamp(esb, irq), `interrupt ${irq} after detach`).to.equal(`ipi:${irq ^ 1}:0`);
      }
      s.close();
    } finally {
      esb.close();
      fake.close();
      pt.close();
    }
  });
});
