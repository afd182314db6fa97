import { expect } from 'chai';
import { EsbController, RemapError } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice } from 'xive-remap/native-stubs';
import { realNative } from '../src/internal.js';
import { expectBackingMatchesMemory } from './helpers.js';

/** Attach single interrupts at every other position (each splits an IPI gap: +2 VMAs) until refused. */
function attachUntilRefused(esb: EsbController, pt: FakePassthroughDevice, max: number): { attached: number; err: unknown } {
  for (let i = 0; i < max; i++) {
    try {
      esb.attach(2 + 4 * i, pt.pages(i % pt.nrIrqs));
    } catch (err) {
      return { attached: i, err };
    }
  }
  return { attached: max, err: undefined };
}

describe('VMA budget', () => {
  let dev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: 1024, esbShift: 12 });
    pt = FakePassthroughDevice.create({ nrIrqs: 64, id: 1, esbShift: 12 });
  });
  afterEach(() => {
    dev.close();
    pt.close();
  });

  it('refuses a split with E_VMA_BUDGET before the kernel would, under a limit the VMM set', () => {
    const limit = realNative.readMaps().length + 12;
    const esb = EsbController.open(dev, { vmaLimit: limit });
    try {
      const { attached, err } = attachUntilRefused(esb, pt, 100);
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_VMA_BUDGET');
      expect((err as RemapError).message).to.match(/attach\(\d+\): would need up to 2 more VMAs/);
      expect(attached).to.be.within(2, 7);
      expect(realNative.readMaps().length).to.be.at.most(limit);
      expectBackingMatchesMemory(esb);
    } finally {
      esb.close();
    }
  });

  it('credits a detach at once: the VMAs it gives back can be spent again', () => {
    const esb = EsbController.open(dev, { vmaLimit: realNative.readMaps().length + 12 });
    try {
      const { attached, err } = attachUntilRefused(esb, pt, 100);
      expect((err as RemapError).code).to.equal('E_VMA_BUDGET');
      expect(esb.detach(2 + 4 * (attached - 1))).to.equal(true);
      esb.attach(2 + 4 * (attached - 1), pt.pages(0));
      expectBackingMatchesMemory(esb);
    } finally {
      esb.close();
    }
  });

  it('does not read /proc/self/maps on the hot path when far from the limit', () => {
    const esb = EsbController.open(dev);
    const reads = (): number => realNative.counts.readMaps ?? 0;
    try {
      const before = reads(); // open read /proc/self/maps once; no change needs to
      esb.attach(1, pt.pages(0));
      for (let i = 0; i < 100; i++) {
        esb.attach(10 + 2 * i, pt.pages(i % 64));
        esb.detach(10 + 2 * i);
      }
      expect(reads()).to.equal(before);
    } finally {
      esb.close();
    }
  });

});
