/**
 * The controller's Number hot path (`NativeLayer.remapShared`, issue 14): the real layer's entry
 * maps what `mmap(MAP_SHARED | MAP_FIXED)` maps, refuses what it refuses, and fails as it fails;
 * the controller takes it only from a layer that defines it as its own property, and gives layers
 * copied or derived from the real one (which override `mmap` to watch or fault it) `mmap` calls.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { EsbController, RemapError } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';
import { MAP_FIXED, MAP_SHARED, NativeError, PROT_READ, PROT_WRITE, mapsIn, parseMaps, realNative, type NativeLayer } from '../src/internal.js';
import { expectBackingMatchesMemory, expectRemapError, expectStamps, regionVmas, thrownBy } from './helpers.js';

const remap = realNative.remapShared as NonNullable<NativeLayer['remapShared']>;

describe('NativeLayer.remapShared: the Number hot path', () => {
  const page = realNative.pageSize;
  let dev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: 16 });
    pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 7 });
  });
  afterEach(() => {
    pt.close();
    dev.close();
  });

  it('is the real layer\'s own, non-enumerable property (copies and derivations of the layer do not carry it as theirs)', () => {
    const d = Object.getOwnPropertyDescriptor(realNative, 'remapShared');
    expect(d?.enumerable).to.equal(false);
    expect(typeof d?.value).to.equal('function');
    expect(Object.prototype.hasOwnProperty.call({ ...realNative }, 'remapShared')).to.equal(false);
    expect(Object.prototype.hasOwnProperty.call(Object.create(realNative) as object, 'remapShared')).to.equal(false);
  });

  it('maps a file\'s pages shared over a claimed range, as mmap(MAP_SHARED | MAP_FIXED) does; refuses outside it; an errno failure is a NativeError and changes nothing', () => {
    const esb = EsbController.open(dev);
    try {
      const bpi = Number(esb.geometry.bytesPerIrq);
      const base = Number(esb.memslot.userspaceAddr);
      const before = realNative.counts.mmap ?? 0;
      remap.call(realNative, base + 5 * bpi, bpi, pt.fd, 2 * bpi); // pt interrupt 2 over guest interrupt 5
      expect((realNative.counts.mmap ?? 0) - before).to.equal(1);
      const at = esb.memslot.userspaceAddr + 5n * esb.geometry.bytesPerIrq;
      expect(readStamp(esb, 5)).to.equal('pt7:2:0');
      const maps = mapsIn(parseMaps(readFileSync('/proc/self/maps', 'utf8')), at, at + esb.geometry.bytesPerIrq);
      expect(maps.map((m) => [m.perms, m.path])).to.deep.equal([['rw-s', maps[0]?.path]]);
      expect(maps[0]?.path).to.match(/fake-pt7/);
      // Outside every claimed range: refused before the kernel sees it.
      const err = thrownBy(() => remap.call(realNative, base - page, page, pt.fd, 0));
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_NOT_OWNED');
      // A bad fd: EBADF, and interrupt 6's IPI pages are untouched.
      const six = esb.memslot.userspaceAddr + 6n * esb.geometry.bytesPerIrq;
      expect(readStamp(esb, 6)).to.equal('ipi:6:0');
      const bad = thrownBy(() => remap.call(realNative, base + 6 * bpi, bpi, -1, 0));
      expect(bad).to.be.instanceOf(NativeError);
      expect((bad as NativeError).syscall).to.equal('mmap');
      expect((bad as NativeError).code).to.equal('EBADF');
      expect(readStamp(esb, 6)).to.equal('ipi:6:0');
      expect(mapsIn(parseMaps(readFileSync('/proc/self/maps', 'utf8')), six, six + esb.geometry.bytesPerIrq)[0]?.path).to.match(/fake-xive-ipi/);
      // Put interrupt 5 back as the controller's table says (nothing there) so its audit agrees.
      realNative.mmap(at, esb.geometry.bytesPerIrq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dev.fd, 5n * esb.geometry.bytesPerIrq);
      expect(esb.audit()).to.deep.equal([]);
    } finally {
      esb.close();
    }
  });

  it('the controller on the real layer takes it (one remapShared per change, no mmap) and maps what backingOf says', () => {
    const calls: string[] = [];
    const native = Object.create(realNative, {
      mmap: {
        value: (...a: Parameters<NativeLayer['mmap']>): bigint => {
          if (a[3] & MAP_FIXED) calls.push('mmap');
          return realNative.mmap(...a);
        },
      },
      remapShared: {
        value: (addr: number, length: number, fd: number, offset: number): void => {
          calls.push('remapShared');
          remap.call(realNative, addr, length, fd, offset);
        },
      },
    }) as NativeLayer;
    const esb = EsbController.open(dev, { native });
    try {
      esb.attach(3, pt.pages(1));
      esb.attachRange(8, 2, pt.pages(2, 2));
      esb.detach(3);
      esb.detachRange(8, 1);
      expect(calls).to.deep.equal(['remapShared', 'remapShared', 'remapShared', 'remapShared']);
      expectStamps(esb, new Map([[9, 'pt7:3']]));
      expectBackingMatchesMemory(esb);
      expect(regionVmas(esb).every((v) => v.perms === 'rw-s')).to.equal(true);
    } finally {
      esb.close();
    }
  });

  for (const [how, make] of [
    ['copied ({ ...realNative, mmap })', (mmap: NativeLayer['mmap']): NativeLayer => ({ ...realNative, mmap })],
    ['derived (Object.create(realNative, { mmap }))', (mmap: NativeLayer['mmap']): NativeLayer => Object.create(realNative, { mmap: { value: mmap } }) as NativeLayer],
  ] as const) {
    it(`a layer ${how} gets every change as an mmap call it can watch`, () => {
      let fixed = 0;
      const native = make((addr, length, prot, flags, fd, offset) => {
        if (flags & MAP_FIXED) fixed++;
        return realNative.mmap(addr, length, prot, flags, fd, offset);
      });
      const esb = EsbController.open(dev, { native });
      try {
        esb.attach(3, pt.pages(1));
        esb.detach(3);
        expect(fixed).to.equal(2);
        expectBackingMatchesMemory(esb);
      } finally {
        esb.close();
      }
    });
  }

  it('a Proxy over the real layer sees every call the controller makes through it, remapShared included', () => {
    const seen: string[] = [];
    const native = new Proxy(realNative, {
      get(target, prop, receiver) {
        const v: unknown = Reflect.get(target, prop, receiver);
        if (typeof v !== 'function' || typeof prop !== 'string') return v;
        return (...args: unknown[]): unknown => {
          if (prop === 'mmap' || prop === 'remapShared') seen.push(prop);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const esb = EsbController.open(dev, { native });
    try {
      esb.attach(3, pt.pages(1));
      esb.detach(3);
      expect(seen).to.deep.equal(['mmap', 'remapShared', 'remapShared']); // open's mapping, then one per change
      expectBackingMatchesMemory(esb);
    } finally {
      esb.close();
    }
  });

  for (const [what, thrown] of [
    ['an Error', new Error('boom')],
    ['null', null],
    ['a Symbol', Symbol('boom')],
    ['a Proxy whose every trap throws', new Proxy({}, { get: () => { throw new Error('trap'); }, getPrototypeOf: () => { throw new Error('trap'); }, has: () => { throw new Error('trap'); }, ownKeys: () => { throw new Error('trap'); } })],
  ] as const) {
    it(`a Proxy layer whose remapShared lookup throws ${what}: E_MAP, nothing degraded, the region as it was`, () => {
      let armed = false;
      const native = new Proxy(realNative, {
        get(target, prop, receiver) {
          if (armed && prop === 'remapShared') throw thrown;
          return Reflect.get(target, prop, receiver) as unknown;
        },
      });
      const esb = EsbController.open(dev, { native });
      try {
        esb.attach(2, pt.pages(0));
        armed = true;
        const err = expectRemapError(() => esb.attach(6, pt.pages(1)), 'E_MAP');
        expect(err.cause === thrown).to.equal(true); // (not chai's equal: it describes a trapping Proxy eagerly)
        expectRemapError(() => esb.detach(2), 'E_MAP');
        armed = false;
        expect(esb.degraded).to.equal(null);
        expectStamps(esb, new Map([[2, 'pt7:0']]));
        expectBackingMatchesMemory(esb);
        expect(esb.detach(2)).to.equal(true);
        expect(esb.audit()).to.deep.equal([]);
      } finally {
        esb.close();
      }
    });
  }

  it('a failure on the hot path is E_MAP with the errno error as cause, and the region is as it was', () => {
    let fail = false;
    const native = Object.create(realNative, {
      remapShared: {
        value: (addr: number, length: number, fd: number, offset: number): void => {
          if (fail) throw new NativeError('mmap', 12, 'injected'); // ENOMEM, nothing changed
          remap.call(realNative, addr, length, fd, offset);
        },
      },
    }) as NativeLayer;
    const esb = EsbController.open(dev, { native });
    try {
      esb.attach(4, pt.pages(0));
      fail = true;
      const err = expectRemapError(() => esb.attach(5, pt.pages(1)), 'E_MAP');
      expect(err.message).to.match(/attach\(5\)/);
      expect(err.cause).to.be.instanceOf(NativeError);
      const err2 = expectRemapError(() => esb.detach(4), 'E_MAP');
      expect(err2.cause).to.be.instanceOf(NativeError);
      fail = false;
      expect(esb.degraded).to.equal(null);
      expectStamps(esb, new Map([[4, 'pt7:0']]));
      expectBackingMatchesMemory(esb);
      expect(esb.audit()).to.deep.equal([]);
    } finally {
      esb.close();
    }
  });
});
