/**
 * A hostile review of commit 7ae3e43 (region references counted on the PageSource, the IPI
 * handle's fixed fd mapped from directly by detach): source lifetimes at every point (several
 * interrupts and regions, slices of slices, cut runs, notifier callbacks, a failed close), faults
 * in the detach mmap that now goes straight to the fixed fd, and IPI handles whose `fd` lies.
 * Checked against memory (stamps read through the region), /proc/self/fd and /proc/self/maps;
 * what could kill the process runs in a child.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { EsbController, PageSource, RemapError, type EsbDevice, type EsbGeometry, type EsbNotifier, type IpiPages } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative, type FaultSpec } from 'xive-remap/native-stubs';
import { realNative } from '../src/internal.js';
import { expectBackingMatchesMemory, expectRemapError, expectStamps, forwardingDevice, inChild, thrownBy } from './helpers.js';
import { causeChain, openFds, regionHoles } from './model.js';

const fdIsOpen = (fd: number): boolean => existsSync(`/proc/self/fd/${fd}`);

/** A notifier that runs `hook` on each event (and may throw from it). */
const notifier = (name: string, hook: (kind: string) => void): EsbNotifier => ({
  name,
  handles: { pagesPerIrq: [1, 2] },
  unmap: () => hook('unmap'),
  map: () => hook('map'),
  destroy: () => hook('destroy'),
});

describe('review of the hot-path handles (commit 7ae3e43)', () => {
  let dev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  let bpi: bigint;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: 64 });
    pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 5 });
    bpi = pt.geometry.bytesPerIrq;
  });
  afterEach(() => {
    pt.close();
    dev.close();
  });

  /** Host interrupts [i, i + count) as a source with its own duplicate of the passthrough fd. */
  const own = (i: number, count = 1): PageSource => PageSource.fromFd(pt.fd, BigInt(i) * bpi, count, { geometry: pt.geometry });
  /** Guest irq → host irq of pt5 (every other interrupt reads its IPI pages). */
  const stamps = (esb: EsbController, pts: Record<number, number>): void => expectStamps(esb, new Map(Object.entries(pts).map(([g, h]) => [Number(g), `pt5:${h}`])));

  describe('region references on the source', () => {
    it('one source at several interrupts of two regions: its fd lives until the last run of either is gone, in any order', () => {
      const fds = openFds();
      const a = EsbController.open(dev);
      const b = EsbController.open(dev);
      const s = own(3);
      const fd = s.fd;
      a.attach(1, s);
      a.attachRange(2, 1, s);
      b.attach(7, s);
      s.close();
      s.close();
      expectRemapError(() => b.attach(8, s), 'E_SOURCE');
      expect(fdIsOpen(fd)).to.equal(true);
      stamps(a, { 1: 3, 2: 3 });
      stamps(b, { 7: 3 });
      a.close(); // drops two references; b still holds one
      expect(fdIsOpen(fd), 'held by b').to.equal(true);
      stamps(b, { 7: 3 });
      expect(b.detachRange(0, 64)).to.equal(1);
      expect(fdIsOpen(fd), 'the last reference').to.equal(false);
      expectStamps(b);
      b.close();
      expect(openFds()).to.equal(fds);
    });

    it('slices of slices, cut by detaches in two regions, the originals closed first: the fd closes with the last piece, no earlier', () => {
      const fds = openFds();
      const a = EsbController.open(dev);
      const b = EsbController.open(dev);
      const whole = own(0, 12);
      const fd = whole.fd;
      const mid = whole.slice(2, 8, bpi); // host 2..9
      const inner = mid.slice(1, 5, bpi); // host 3..7
      a.attachRange(10, 8, mid);
      b.attachRange(20, 5, inner);
      const last = inner.slice(4, 1, bpi); // host 7, closed only at the end
      b.attach(30, last);
      whole.close();
      mid.close();
      inner.close();
      expect(fdIsOpen(fd)).to.equal(true);
      expect(a.detach(12)).to.equal(true); // cut: [10, 12) and [13, 18)
      expect(a.detachRange(14, 2)).to.equal(2); // cut the tail piece: [13, 14) and [16, 18)
      expect(b.detach(22)).to.equal(true);
      stamps(a, { 10: 2, 11: 3, 13: 5, 16: 8, 17: 9 });
      stamps(b, { 20: 3, 21: 4, 23: 6, 24: 7, 30: 7 });
      expect(a.audit()).to.deep.equal([]);
      expect(b.audit()).to.deep.equal([]);
      a.close();
      expect(fdIsOpen(fd), 'b still holds pieces').to.equal(true);
      expect(b.detachRange(0, 30)).to.equal(4);
      expect(fdIsOpen(fd), 'the run at 30 still holds it').to.equal(true);
      expect(b.detach(30)).to.equal(true);
      expect(fdIsOpen(fd), 'the open slice still holds it').to.equal(true);
      expectStamps(b);
      b.close();
      last.close();
      expect(fdIsOpen(fd)).to.equal(false);
      expect(openFds()).to.equal(fds);
    });

    it('a source closed by an unmap handler of a detach whose mmap fails: the restore maps it back from its fd, which the next detach then closes', () => {
      const f = new FaultyNative(realNative, { hotPath: true });
      const d = FakeXiveDevice.create({ nrIrqs: 64, native: f });
      const esb = EsbController.open(d, { native: f });
      try {
        const s = own(6, 4);
        const fd = s.fd;
        esb.attachRange(8, 4, s);
        const h = esb.register(notifier('closer', (k) => k === 'unmap' && s.close()));
        f.inject({ call: 'mmap', errno: 'EIO', mode: 'hole' });
        const err = expectRemapError(() => esb.detach(9), 'E_MAP');
        expect(causeChain(err).some((e) => e instanceof Error && /injected/.test(e.message))).to.equal(true);
        expect(s.closed).to.equal(true);
        expect(fdIsOpen(fd), 'the run still holds it').to.equal(true);
        expect(regionHoles(esb)).to.deep.equal([]);
        stamps(esb, { 8: 6, 9: 7, 10: 8, 11: 9 });
        expect(esb.audit()).to.deep.equal([]);
        expect(esb.detach(9)).to.equal(true);
        expect(fdIsOpen(fd), 'the pieces hold it').to.equal(true);
        stamps(esb, { 8: 6, 10: 8, 11: 9 });
        h.dispose();
        expect(esb.detachRange(0, 64)).to.equal(3);
        expect(fdIsOpen(fd)).to.equal(false);
        expectStamps(esb);
      } finally {
        esb.close();
        d.close();
      }
    });

    it('a source closed by an unmap handler of an attach whose mmap fails: E_MAP, the fd is closed (not leaked), the region unchanged', () => {
      const f = new FaultyNative(realNative, { hotPath: true });
      const d = FakeXiveDevice.create({ nrIrqs: 64, native: f });
      const esb = EsbController.open(d, { native: f });
      const fds = openFds();
      try {
        const s = own(2);
        const fd = s.fd;
        esb.register(notifier('closer', (k) => k === 'unmap' && s.close()));
        f.inject({ call: 'mmap', errno: 'ENOMEM', mode: 'hole' });
        expectRemapError(() => esb.attach(40, s), 'E_MAP');
        expect(fdIsOpen(fd)).to.equal(false);
        expect(openFds()).to.equal(fds);
        expect(regionHoles(esb)).to.deep.equal([]);
        expectStamps(esb);
      } finally {
        esb.close();
        d.close();
      }
    });

    it('sources closed by destroy handlers of a close whose munmap fails keep their fds until the close that succeeds', () => {
      const f = new FaultyNative(realNative, { hotPath: true });
      const d = FakeXiveDevice.create({ nrIrqs: 64, native: f });
      const fds = openFds();
      const esb = EsbController.open(d, { native: f });
      const s = own(1, 3);
      const t = own(9);
      const [fs, ft] = [s.fd, t.fd];
      esb.attachRange(4, 3, s);
      esb.attach(20, t);
      esb.detach(5); // pieces
      esb.register(notifier('closer', (k) => {
        if (k === 'destroy') {
          s.close();
          t.close();
        }
      }));
      f.inject({ call: 'munmap', errno: 'EINVAL' });
      expectRemapError(() => esb.close(), 'E_MAP');
      expect([fdIsOpen(fs), fdIsOpen(ft)], 'still mapped: still open').to.deep.equal([true, true]);
      esb.close();
      expect([fdIsOpen(fs), fdIsOpen(ft)]).to.deep.equal([false, false]);
      d.close();
      expect(openFds()).to.equal(fds - 1); // the device's own memfd, made before the count, is closed too
    });

    for (const heldElsewhere of [false, true]) {
      it(`a source whose geometry getter closes it during the hot-path attach (${heldElsewhere ? 'held by another run' : 'held by no region'}): ${heldElsewhere ? 'attached, the fd closes with the last run' : 'E_SOURCE, nothing mapped or leaked'}`, () => {
        const esb = EsbController.open(dev);
        const fds = openFds();
        try {
          const armed: { src?: PageSource } = {};
          const g = pt.geometry;
          const closing = {
            get esbShift() {
              armed.src?.close();
              return g.esbShift;
            },
            pagesPerIrq: g.pagesPerIrq,
            esbPageSize: g.esbPageSize,
            bytesPerIrq: g.bytesPerIrq,
            hostPageSize: g.hostPageSize,
          } as EsbGeometry;
          const src = PageSource.fromFd(pt.fd, 4n * bpi, 1, { geometry: closing });
          const fd = src.fd;
          if (heldElsewhere) esb.attachRange(3, 1, src); // (the general path reads the getter too: not armed yet)
          armed.src = src;
          const err = thrownBy(() => esb.attach(12, src));
          expect(src.closed).to.equal(true);
          if (heldElsewhere) {
            expect(err).to.equal(undefined);
            stamps(esb, { 3: 4, 12: 4 });
            expect(esb.detach(3)).to.equal(true);
            expect(fdIsOpen(fd)).to.equal(true);
            expect(esb.detach(12)).to.equal(true);
          } else {
            expect(err).to.be.instanceOf(RemapError).with.property('code', 'E_SOURCE');
            expect(esb.backingOf(12)).to.deep.equal({ kind: 'ipi' });
          }
          expect(fdIsOpen(fd)).to.equal(false);
          expectStamps(esb);
          expect(openFds()).to.equal(fds);
        } finally {
          esb.close();
        }
      });
    }
  });

  describe("the IPI handle's fixed fd", () => {
    /** The fake's handle behind a plain object: withFd calls counted; `fd` read through `fd(inner, handed)` (none without it). */
    const wrapped = (base: FakeXiveDevice, opts: { fd?: (inner: IpiPages, handed: number[]) => unknown; withFd?: <T>(inner: IpiPages, map: (fd: number) => T, handed: number[]) => T } = {}) => {
      const stats = { withFd: 0, fdReads: 0 };
      const device: EsbDevice = forwardingDevice(base, {
        openIpiPages: (): IpiPages => {
          const inner = base.openIpiPages();
          const handed: number[] = [];
          const h = {
            offsetOf: (irq: number) => inner.offsetOf(irq),
            withFd<T>(map: (fd: number) => T): T {
              stats.withFd++;
              const m = (fd: number): T => {
                handed.push(fd);
                return map(fd);
              };
              return opts.withFd ? opts.withFd(inner, m, handed) : inner.withFd(m);
            },
            close: () => inner.close(),
          };
          const fdOf = opts.fd;
          if (fdOf) {
            Object.defineProperty(h, 'fd', {
              enumerable: true,
              get: () => {
                stats.fdReads++;
                return fdOf(inner, handed);
              },
            });
          }
          return h;
        },
      });
      return { device, stats };
    };

    it('is read once, at open, even from a getter that answers differently each time', () => {
      let n = 0;
      const { device, stats } = wrapped(dev, { fd: (inner) => (n++ === 0 ? inner.fd : 1000 + n) });
      const esb = EsbController.open(device);
      try {
        const s = pt.pages(2);
        for (let irq = 0; irq < 8; irq++) {
          esb.attach(irq, s);
          expect(esb.detach(irq)).to.equal(true);
        }
        s.close();
        expect(stats.fdReads).to.equal(1);
        expect(stats.withFd, 'the first answer was the handed fd: used').to.equal(1);
        expectStamps(esb);
      } finally {
        esb.close();
      }
    });

    it('a getter that throws a revoked Proxy or a Symbol is not used and does not fail open', () => {
      for (const thrown of [Symbol('x'), (() => { const p = Proxy.revocable({}, {}); p.revoke(); return p.proxy; })()]) {
        const { device, stats } = wrapped(dev, { fd: () => { throw thrown; } });
        const esb = EsbController.open(device);
        try {
          const s = pt.pages(1);
          esb.attach(3, s);
          esb.detach(3);
          s.close();
          expect(stats.withFd).to.equal(2);
          expectStamps(esb);
        } finally {
          esb.close();
        }
      }
    });

    it('withFd that hands a temporary duplicate the first time (the fixed fd afterwards) is not trusted: every restore goes through withFd', () => {
      const fds = openFds();
      let first = true;
      const { device, stats } = wrapped(dev, {
        fd: (inner) => inner.fd,
        withFd: (inner, map) =>
          inner.withFd((fd) => {
            if (!first) return map(fd);
            first = false;
            const tmp = realNative.dupCloexec(fd);
            try {
              return map(tmp);
            } finally {
              realNative.close(tmp);
            }
          }),
      });
      const esb = EsbController.open(device);
      try {
        const s = pt.pages(2);
        esb.attach(5, s);
        expect(esb.detach(5)).to.equal(true);
        esb.attachRange(5, 1, s);
        expect(esb.detachRange(0, 64)).to.equal(1);
        s.close();
        expect(stats.withFd).to.equal(3);
        expectStamps(esb);
      } finally {
        esb.close();
      }
      expect(openFds()).to.equal(fds);
    });

    it('a handle that maps each time from a fresh fd it closes, and names the last one as its fd: detach still maps the IPI pages, never a file that reused the number (child process)', () => {
      const r = inChild(`
        const dev = FakeXiveDevice.create({ nrIrqs: 16 });
        const pt = FakePassthroughDevice.create({ nrIrqs: 1, id: 7 });
        const device = {
          name: dev.name, nrIrqs: dev.nrIrqs, geometry: dev.geometry, contract: dev.contract, mergeable: dev.mergeable, native: dev.native,
          openIpiPages() {
            const inner = dev.openIpiPages();
            let last = -1;
            return {
              offsetOf: (irq) => inner.offsetOf(irq),
              get fd() { return last; },
              withFd(map) {
                return inner.withFd((fd) => {
                  const fresh = realNative.dupCloexec(fd);
                  last = fresh;
                  try { return map(fresh); } finally { realNative.close(fresh); }
                });
              },
              close: () => inner.close(),
            };
          },
        };
        const esb = EsbController.open(device);
        // The closed fresh fd's number is the lowest free one: the source's duplicate takes it.
        const s = PageSource.fromFd(pt.fd, 0n, 1, { geometry: pt.geometry });
        esb.attach(5, s);
        let err;
        try { esb.detach(5); } catch (e) { err = e; }
        if (err) { console.log('detach failed: ' + err.message); process.exit(3); }
        const got = readStamp(esb, 5); // an IPI page mapped from the 1-interrupt source would be past its end: SIGBUS
        if (got !== 'ipi:5:0') { console.log('read ' + got + ', want ipi:5:0'); process.exit(2); }
        esb.close(); s.close(); pt.close(); dev.close();
        console.log('ok');
      `);
      expect(r.signal, r.out).to.equal(null);
      expect(r.status, r.out).to.equal(0);
    });

    it('a handle that closes its fixed fd under the region (against its contract) cannot make a detach map another file (child process)', () => {
      const r = inChild(`
        const dev = FakeXiveDevice.create({ nrIrqs: 16 });
        const pt = FakePassthroughDevice.create({ nrIrqs: 1, id: 7 });
        let handle;
        const device = {
          name: dev.name, nrIrqs: dev.nrIrqs, geometry: dev.geometry, contract: dev.contract, mergeable: dev.mergeable, native: dev.native,
          openIpiPages() { return (handle = dev.openIpiPages()); },
        };
        const esb = EsbController.open(device);
        const fixed = handle.fd;
        handle.close(); // the device's bug: the region's handle closed under it
        const s = PageSource.fromFd(pt.fd, 0n, 1, { geometry: pt.geometry });
        if (s.fd !== fixed) { console.log('the number was not reused (' + s.fd + ' vs ' + fixed + '): nothing to test'); process.exit(0); }
        esb.attach(5, s);
        let err;
        try { esb.detach(5); } catch (e) { err = e; }
        if (err) { console.log('detach refused: ' + err.message); process.exit(0); }
        const got = readStamp(esb, 5);
        if (got !== 'ipi:5:0') { console.log('read ' + got + ', want ipi:5:0'); process.exit(2); }
        console.log('ok');
      `);
      expect(r.signal, r.out).to.equal(null);
      expect(r.status, r.out).to.equal(0);
    });

    it("the region's duplicate of it is closed by the close that unmaps (not by one whose munmap failed), and by an open that fails after mapping", () => {
      const f = new FaultyNative(realNative, { hotPath: true });
      const d = FakeXiveDevice.create({ nrIrqs: 16, native: f });
      const fds = openFds();
      try {
        const esb = EsbController.open(d, { native: f });
        expect(openFds(), 'the handle and the region\'s duplicate').to.equal(fds + 2);
        f.inject({ call: 'munmap', errno: 'EINVAL' });
        expectRemapError(() => esb.close(), 'E_MAP');
        expect(openFds(), 'still mapped: nothing closed').to.equal(fds + 2);
        esb.close();
        expect(openFds()).to.equal(fds);
        // Counting the process's VMAs fails after the region's mapping (and the duplicate) were made.
        Object.defineProperty(f, 'readMaps', { configurable: true, value: () => { throw new Error('no /proc'); } });
        expectRemapError(() => EsbController.open(d, { native: f }), 'E_VMA_BUDGET');
        expect(openFds()).to.equal(fds);
      } finally {
        d.close();
      }
    });

    it('a duplicate that cannot be made (EMFILE) leaves every restore to withFd, and the region works', () => {
      const f = new FaultyNative(realNative, { hotPath: true });
      const d = FakeXiveDevice.create({ nrIrqs: 16, native: f });
      const { device, stats } = wrapped(d, { fd: (inner) => inner.fd });
      const fds = openFds();
      f.inject({ call: 'dupCloexec', nth: 2, errno: 'EMFILE' }); // the first is the handle's own (the fake's openIpiPages)
      const esb = EsbController.open(device, { native: f });
      try {
        expect(f.fired.length).to.equal(1);
        const s = pt.pages(6);
        esb.attach(2, s);
        expect(esb.detach(2)).to.equal(true);
        s.close();
        expect(stats.withFd).to.equal(2);
        expectStamps(esb);
      } finally {
        esb.close();
        d.close();
      }
      expect(openFds()).to.equal(fds - 1);
    });

    describe('faults in the detach mmap that maps from it', () => {
      /** A region on a merging fake through a hot-path FaultyNative; runs 10..13, 30, 44..45; withFd counted. */
      const world = () => {
        const f = new FaultyNative(realNative, { hotPath: true });
        const d = FakeXiveDevice.create({ nrIrqs: 64, native: f });
        const { device, stats } = wrapped(d, { fd: (inner) => inner.fd });
        const esb = EsbController.open(device, { native: f });
        const p = FakePassthroughDevice.create({ nrIrqs: 32, id: 1, native: f });
        for (const [first, count, host] of [[10, 4, 0], [30, 1, 7], [44, 2, 20]] as const) {
          const s = p.pages(host, count);
          esb.attachRange(first, count, s);
          s.close();
        }
        return {
          f,
          esb,
          stats,
          dispose: () => {
            esb.close();
            p.close();
            d.close();
          },
        };
      };
      const ops: [string, (esb: EsbController) => unknown][] = [
        ['detach(30) (the hot path)', (esb) => esb.detach(30)],
        ['detach(11) (cuts a run)', (esb) => esb.detach(11)],
        ['detachRange(12, 34) (three runs, one cut)', (esb) => esb.detachRange(12, 34)],
      ];
      const faults: [string, FaultSpec[], string][] = [
        ['EIO', [{ call: 'mmap', errno: 'EIO' }], 'E_MAP'],
        ['hole + ENOMEM', [{ call: 'mmap', errno: 'ENOMEM', mode: 'hole' }], 'E_MAP'],
        ['hole, then the restore fails clean', [{ call: 'mmap', errno: 'EIO', mode: 'hole' }, { call: 'mmap', nth: 2, errno: 'EAGAIN' }], 'E_DEGRADED'],
        ['hole, then a hole in the restore', [{ call: 'mmap', errno: 'EIO', mode: 'hole' }, { call: 'mmap', nth: 2, errno: 'EAGAIN', mode: 'hole' }], 'E_DEGRADED'],
        ['clean, then the restore fails clean', [{ call: 'mmap', errno: 'EIO' }, { call: 'mmap', nth: 2, errno: 'EAGAIN' }], 'E_MAP'],
      ];
      for (const [name, run] of ops) {
        for (const [what, specs, code] of faults) {
          it(`${name} with ${what}: ${code}, and backingOf agrees with memory wherever it answers`, () => {
            const fds = openFds();
            const w = world();
            try {
              const before = w.esb.runs();
              for (const s of specs) w.f.inject(s);
              expectRemapError(() => run(w.esb), code);
              expect(w.f.fired.length).to.equal(specs.length);
              // Restores map from the fixed fd; only the kernel's view read after a failed restore (audit) goes through withFd.
              expect(w.stats.withFd, 'withFd calls since open').to.equal(specs.length > 1 ? 2 : 1);
              const d = w.esb.degraded;
              const ok = Array.from({ length: 64 }, (_, i) => i).filter((i) => !d || i < d.first || i >= d.end);
              for (const [a, b] of regionHoles(w.esb)) expect(d !== null && a >= d.first && b <= d.end, `hole ${a}..${b - 1} outside the broken span`).to.equal(true);
              expectBackingMatchesMemory(w.esb, ok);
              if (!d) {
                expect(w.esb.runs()).to.deep.equal(before);
                expect(w.esb.audit()).to.deep.equal([]);
                w.f.clear();
                expect(thrownBy(() => run(w.esb))).to.equal(undefined);
                expectBackingMatchesMemory(w.esb);
              }
            } finally {
              w.dispose();
            }
            expect(openFds(), 'fds').to.equal(fds);
          });
        }
      }
    });

    it('a never-merging device has no fixed fd: every restore goes through withFd, with a fresh file each time', () => {
      const never = FakeXiveDevice.create({ nrIrqs: 16, unmergeable: true });
      const { device, stats } = wrapped(never);
      const esb = EsbController.open(device);
      try {
        const s = pt.pages(4);
        esb.attach(3, s);
        esb.detach(3);
        s.close();
        expect(stats.withFd).to.equal(2);
        expectStamps(esb);
        expect(esb.audit()).to.deep.equal([]);
      } finally {
        esb.close();
        never.close();
      }
    });
  });
});
