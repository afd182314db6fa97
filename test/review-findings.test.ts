/**
 * Findings of a hostile review of the Number hot path (`remapShared`, `regionRefs`): each test
 * failed on the code as reviewed. Cases that could kill the process (SIGBUS) run in a child.
 */
import { expect } from 'chai';
import { EsbController, PageSource, RemapError } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative } from 'xive-remap/native-stubs';
import { realNative, type NativeLayer } from '../src/internal.js';
import { expectBackingMatchesMemory, expectStamps, inChild, thrownBy } from './helpers.js';

/** Try to give `obj` an own property (a frozen object refuses: that is a pass). Returns whether it took. */
function shadow(obj: object, key: string, desc: PropertyDescriptor): boolean {
  try {
    Object.defineProperty(obj, key, { configurable: true, ...desc });
    return true;
  } catch (e) {
    expect(e).to.be.instanceOf(TypeError);
    return false;
  }
}

describe('review findings: the hot path under hostile use', () => {
  describe('an attached PageSource is the caller\'s own object: own properties shadowing its getters', () => {
    it('an own offsetNumber past the file\'s end does not make attach map past it (SIGBUS on the next load)', () => {
      const r = inChild(`
        const dev = FakeXiveDevice.create({ nrIrqs: 16 });
        const pt = FakePassthroughDevice.create({ nrIrqs: 2, id: 7 });
        const esb = EsbController.open(dev);
        const src = pt.pages(1);
        try { Object.defineProperty(src, 'offsetNumber', { value: 64 * Number(esb.geometry.bytesPerIrq) }); } catch {}
        try { esb.attach(3, src); } catch (e) { if (!(e instanceof RemapError)) throw e; }
        const b = esb.backingOf(3);
        const want = b.kind === 'ipi' ? 'ipi:3:0' : b.source + ':0';
        const got = readStamp(esb, 3);
        if (got !== want) { console.log('read ' + got + ', want ' + want); process.exit(2); }
        console.log('ok');
      `);
      expect(r.signal, r.out).to.equal(null);
      expect(r.status, r.out).to.equal(0);
    });

    it('an own fd given to a source after attach does not change what a failed detach\'s restore maps back', () => {
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 7 });
      const other = FakePassthroughDevice.create({ nrIrqs: 4, id: 8 });
      const f = new FaultyNative(realNative, { hotPath: true });
      const esb = EsbController.open(dev, { native: f });
      try {
        const src = pt.pages(1);
        esb.attach(3, src);
        shadow(src, 'fd', { value: other.fd });
        f.inject({ call: 'mmap', errno: 'EIO' }); // the detach fails; its restore maps the run back
        const err = thrownBy(() => esb.detach(3));
        expect(err).to.be.instanceOf(RemapError);
        expectBackingMatchesMemory(esb);
        expect(esb.audit()).to.deep.equal([]);
      } finally {
        esb.close();
        other.close();
        pt.close();
        dev.close();
      }
    });

    it('an own slice() does not decide the kept pieces of a cut run (the table then disagrees with memory)', () => {
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 7 });
      const esb = EsbController.open(dev);
      try {
        const src = pt.pages(0, 4);
        esb.attachRange(4, 4, src);
        shadow(src, 'slice', { value: (): PageSource => pt.pages(5) });
        const err = thrownBy(() => esb.detachRange(5, 2)); // keeps [4, 5) and [7, 8) of the run
        expect(err === undefined || err instanceof RemapError, String(err)).to.equal(true);
        expectBackingMatchesMemory(esb);
        expect(esb.audit()).to.deep.equal([]);
      } finally {
        esb.close();
        pt.close();
        dev.close();
      }
    });

    it('a source whose prototype was swapped for one with lying getters is not mapped by them', () => {
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 7 });
      const esb = EsbController.open(dev);
      try {
        const src = pt.pages(1);
        const bpi = Number(esb.geometry.bytesPerIrq);
        const lying = Object.create(PageSource.prototype, { offsetNumber: { get: () => 2 * bpi } }) as object;
        try {
          Object.setPrototypeOf(src, lying);
        } catch (e) {
          expect(e).to.be.instanceOf(TypeError);
        }
        try {
          esb.attach(3, src);
        } catch (e) {
          expect(e).to.be.instanceOf(RemapError);
        }
        expectBackingMatchesMemory(esb);
      } finally {
        esb.close();
        pt.close();
        dev.close();
      }
    });
  });

  it('PageSource\'s (internal) constructor, reachable from the package entry, does not make a source of a forged fd handle (SIGBUS past its end)', () => {
    const r = inChild(`
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const pt = FakePassthroughDevice.create({ nrIrqs: 2, id: 7 });
      const esb = EsbController.open(dev);
      const handle = { fd: pt.fd, closed: false, retain() { return this; }, release() {} };
      let src;
      try { src = new PageSource(handle, 64n * esb.geometry.bytesPerIrq, 1, 2n ** 40n, 'forged', undefined, undefined); } catch (e) { console.log('refused: ' + e.message); process.exit(0); }
      try { esb.attach(3, src); } catch (e) { if (!(e instanceof RemapError)) throw e; console.log('attach refused'); process.exit(0); }
      readStamp(esb, 3);
      console.log('read past the end without SIGBUS?');
      process.exit(3);
    `);
    expect(r.signal, r.out).to.equal(null);
    expect(r.status, r.out).to.equal(0);
  });

  it('realNative.remapShared with a fractional address maps nothing (it mapped, then threw a NativeError with errno 0)', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 16 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 2, id: 7 });
    const esb = EsbController.open(dev);
    try {
      const remap = realNative.remapShared as NonNullable<NativeLayer['remapShared']>;
      const base = Number(esb.memslot.userspaceAddr);
      const bpi = Number(esb.geometry.bytesPerIrq);
      const err = thrownBy(() => remap.call(realNative, base + 2 * bpi + 0.5, bpi, pt.fd, 0));
      expect(err, 'a fractional address must be refused').to.be.instanceOf(Error);
      expect(err).to.not.have.property('errno', 0);
      expectStamps(esb); // every interrupt still reads its own IPI pages
      expect(esb.audit()).to.deep.equal([]);
    } finally {
      esb.close();
      pt.close();
      dev.close();
    }
  });
});
