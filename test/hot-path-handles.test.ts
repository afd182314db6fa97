/**
 * What the hot path reads instead of the handles behind a source and the IPI pages (issue 14):
 * the regions' references counted on the `PageSource` itself (its one reference on the shared fd
 * lasts while it is open or held), and the IPI handle's fixed fd (`IpiPages.fd`), used only where
 * it is the fd `withFd` handed to the region's own mapping. Checked against the fds the process
 * really has open (/proc/self/fd) and against the pages (stamps read from the region).
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { EsbController, PageSource, type EsbDevice, type IpiPages } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';
import { realNative } from '../src/internal.js';
import { expectBackingMatchesMemory, expectStamps, forwardingDevice } from './helpers.js';
import { openFds } from './model.js';

const fdIsOpen = (fd: number): boolean => existsSync(`/proc/self/fd/${fd}`);

describe('hot-path handles: region references on the source, the IPI handle\'s fixed fd', () => {
  let dev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: 32 });
    pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 3 });
  });
  afterEach(() => {
    pt.close();
    dev.close();
  });

  describe('region references counted on the source', () => {
    /** Host interrupts [i, i + count) of the passthrough device, as a source with its own duplicate of the fd. */
    const own = (i: number, count = 1): PageSource => PageSource.fromFd(pt.fd, BigInt(i) * pt.geometry.bytesPerIrq, count, { geometry: pt.geometry });
    /** Guest interrupts whose pages read passthrough interrupt stamps (`irq → host irq`); every other one reads IPI. */
    const expectPt = (esb: EsbController, pts: Record<number, number>): void => expectStamps(esb, new Map(Object.entries(pts).map(([g, h]) => [Number(g), `pt3:${h}`])));
    it('a source closed while attached twice keeps its fd until the last detach, which closes it', () => {
      const esb = EsbController.open(dev);
      try {
        const s = own(2);
        const fd = s.fd;
        esb.attach(4, s);
        esb.attach(9, s);
        s.close();
        expect(fdIsOpen(fd), 'held by two runs').to.equal(true);
        expectPt(esb, { 4: 2, 9: 2 });
        expect(esb.detach(4)).to.equal(true);
        expect(fdIsOpen(fd), 'held by one run').to.equal(true);
        expectPt(esb, { 9: 2 });
        expect(esb.detach(9)).to.equal(true);
        expect(fdIsOpen(fd), 'closed with the last reference').to.equal(false);
        expectStamps(esb);
      } finally {
        esb.close();
      }
    });

    it('a source never closed keeps its fd after every detach; close() then closes it', () => {
      const esb = EsbController.open(dev);
      try {
        const s = own(1);
        for (let i = 0; i < 3; i++) {
          esb.attach(7, s);
          esb.detach(7);
        }
        expect(fdIsOpen(s.fd)).to.equal(true);
        const fd = s.fd;
        s.close();
        expect(fdIsOpen(fd)).to.equal(false);
      } finally {
        esb.close();
      }
    });

    it('slices share one fd: it closes when the last of them is both closed and detached', () => {
      const esb = EsbController.open(dev);
      try {
        const whole = own(0, 4);
        const fd = whole.fd;
        const a = whole.slice(1, 1, esb.geometry.bytesPerIrq);
        const b = whole.slice(2, 2, esb.geometry.bytesPerIrq);
        esb.attach(3, a);
        esb.attachRange(10, 2, b);
        whole.close();
        a.close();
        b.close();
        expect(fdIsOpen(fd)).to.equal(true);
        expectPt(esb, { 3: 1, 10: 2, 11: 3 });
        esb.detach(3);
        expect(fdIsOpen(fd), 'still held by the run at 10').to.equal(true);
        expect(esb.detachRange(10, 2)).to.equal(2);
        expect(fdIsOpen(fd)).to.equal(false);
      } finally {
        esb.close();
      }
    });

    it('the kept pieces of a cut run hold the fd of a closed source until the last of them is detached', () => {
      const esb = EsbController.open(dev);
      try {
        const s = own(0, 5);
        const fd = s.fd;
        esb.attachRange(20, 5, s);
        s.close();
        expect(esb.detach(22)).to.equal(true); // cut: pieces [20, 22) and [23, 25)
        expect(fdIsOpen(fd)).to.equal(true);
        expectPt(esb, { 20: 0, 21: 1, 23: 3, 24: 4 });
        expect(esb.runs().map((r) => [r.first, r.count])).to.deep.equal([[20, 2], [23, 2]]);
        expect(esb.detach(20)).to.equal(true); // cuts the first piece again
        expect(esb.detachRange(21, 4)).to.equal(3);
        expect(fdIsOpen(fd)).to.equal(false);
        expectStamps(esb);
      } finally {
        esb.close();
      }
    });

    it('closing the region drops its references: a closed source\'s fd closes with it, an open one\'s stays', () => {
      const esb = EsbController.open(dev);
      const closed = own(4);
      const open = own(5);
      const [fc, fo] = [closed.fd, open.fd];
      esb.attach(1, closed);
      esb.attach(2, open);
      closed.close();
      esb.close();
      expect(fdIsOpen(fc)).to.equal(false);
      expect(fdIsOpen(fo)).to.equal(true);
      open.close();
      expect(fdIsOpen(fo)).to.equal(false);
    });

    it('a closed source is refused before anything is held or mapped, on both paths', () => {
      const esb = EsbController.open(dev);
      try {
        const s = own(6, 2);
        s.close();
        expect(() => esb.attach(1, s)).to.throw().with.property('code', 'E_SOURCE');
        expect(() => esb.attachRange(1, 2, s)).to.throw().with.property('code', 'E_SOURCE');
        expectStamps(esb);
      } finally {
        esb.close();
      }
    });
  });

  describe('IpiPages.fd', () => {
    /** The fake's handle with withFd calls counted, and an `fd` getter answering `fd(inner)` (none without it). */
    const counted = (fd?: (inner: IpiPages) => unknown): { device: EsbDevice; calls: () => number } => {
      let calls = 0;
      const device = forwardingDevice(dev, {
        openIpiPages: (): IpiPages => {
          const inner = dev.openIpiPages();
          const h = {
            offsetOf: (irq: number) => inner.offsetOf(irq),
            withFd<T>(map: (fd: number) => T): T {
              calls++;
              return inner.withFd(map);
            },
            close: () => inner.close(),
          };
          if (fd) Object.defineProperty(h, 'fd', { get: () => fd(inner), enumerable: true });
          return h;
        },
      });
      return { device, calls: () => calls };
    };

    /** Attach and detach interrupts 5 and 6 three times, checking the pages after each step. */
    const cycle = (esb: EsbController): void => {
      const s = pt.pages(3);
      try {
        for (let i = 0; i < 3; i++) {
          for (const irq of [5, 6]) {
            esb.attach(irq, s);
            expect(readStamp(esb, irq)).to.equal('pt3:3:0');
            expect(esb.detach(irq)).to.equal(true);
            expectStamps(esb);
          }
        }
      } finally {
        s.close();
      }
    };

    it('the fake and XiveKvmDevice-style handles name the fd withFd hands over; the fake leaves it out where every mapping needs a fresh file', () => {
      const h = dev.openIpiPages();
      try {
        expect(h.fd).to.be.a('number');
        expect(h.withFd((fd) => fd)).to.equal(h.fd);
      } finally {
        h.close();
      }
      const never = FakeXiveDevice.create({ nrIrqs: 4, unmergeable: true });
      const n = never.openIpiPages();
      try {
        expect('fd' in n).to.equal(false);
      } finally {
        n.close();
        never.close();
      }
    });

    it('with a fixed fd, detaches map from it: withFd is asked once, for the region\'s own mapping; without one, once per detach', () => {
      for (const [fd, perDetach] of [[(inner: IpiPages): unknown => inner.fd, 0], [undefined, 1]] as const) {
        const { device, calls } = counted(fd);
        const esb = EsbController.open(device);
        try {
          expect(calls()).to.equal(1);
          cycle(esb);
          expect(calls() - 1, fd ? 'fixed fd' : 'no fixed fd').to.equal(6 * perDetach);
          expectBackingMatchesMemory(esb);
        } finally {
          esb.close();
        }
      }
    });

    for (const [what, fd] of [
      ['names another open file (a passthrough fd)', (): unknown => pt.fd],
      ['is a fraction', (inner: IpiPages): unknown => (inner.fd as number) + 0.5],
      ['is a bigint', (inner: IpiPages): unknown => BigInt(inner.fd as number)],
      ['is a string', (inner: IpiPages): unknown => String(inner.fd)],
      ['is a negative number', (): unknown => -1],
      ['is a getter that throws', (): unknown => {
        throw new Error('no fd for you');
      }],
      ['is a getter that throws a Proxy whose traps throw', (): unknown => {
        throw new Proxy({}, { get: () => { throw new Error('trap'); }, getPrototypeOf: () => { throw new Error('trap'); } });
      }],
    ] as const) {
      it(`an fd that ${what} is not used: every detach goes through withFd and maps the IPI pages`, () => {
        const { device, calls } = counted(fd);
        const esb = EsbController.open(device);
        try {
          cycle(esb);
          expect(calls()).to.equal(1 + 6);
          expectBackingMatchesMemory(esb);
        } finally {
          esb.close();
        }
      });
    }

    it('the region keeps its own duplicate only where it maps from it: one fd more than the handle\'s with linear offsets, none with offsets it cannot compute', () => {
      const bpi = dev.geometry.bytesPerIrq;
      for (const [what, device, extra] of [
        ['linear offsets', forwardingDevice(dev), 1],
        ['offsets that are not linear', forwardingDevice(dev, { openIpiPages: () => ({ ...dev.openIpiPages(), offsetOf: (irq: number) => BigInt(irq ^ 1) * bpi }) }), 0],
      ] as const) {
        const before = openFds();
        const esb = EsbController.open(device);
        try {
          expect(openFds() - before, what).to.equal(1 + extra); // the handle's own duplicate, and the region's
        } finally {
          esb.close();
        }
        expect(openFds(), `${what}: every fd closed with the region`).to.equal(before);
      }
    });

    it('the fixed fd is not used by a region on the bigint path (a layer without remapShared)', () => {
      const { device, calls } = counted((inner) => inner.fd);
      const layer = { ...realNative };
      const d: EsbDevice = { ...device, native: layer };
      const esb = EsbController.open(d, { native: layer });
      try {
        cycle(esb);
        expect(calls()).to.equal(1 + 6);
      } finally {
        esb.close();
      }
    });
  });
});
