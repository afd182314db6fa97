import { expect } from 'chai';
import { DEFAULT_VMA_SLACK, EsbController, PageSource, type RemapErrorCode } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';
import { O_RDONLY, realNative } from '../src/internal.js';
import { expectBackingMatchesMemory, expectRemapError, expectStamps, regionVmas } from './helpers.js';
import { openSync, closeSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

for (const unmergeable of [false, true]) {
  describe(`EsbController on a ${unmergeable ? 'never-merging (VM_PFNMAP-like)' : 'merging (memfd)'} fake XIVE device`, () => {
    let dev: FakeXiveDevice;
    let pt1: FakePassthroughDevice;
    let pt2: FakePassthroughDevice;
    let esb: EsbController;

    beforeEach(() => {
      dev = FakeXiveDevice.create({ nrIrqs: 512, unmergeable });
      pt1 = FakePassthroughDevice.create({ nrIrqs: 64, id: 1 });
      pt2 = FakePassthroughDevice.create({ nrIrqs: 64, id: 2 });
      esb = EsbController.open(dev);
    });
    afterEach(() => {
      esb.close();
      dev.close();
      pt1.close();
      pt2.close();
    });

    function expectVmaBound(): void {
      const { runs, vmas, vmaBound } = esb.stats();
      expect(vmaBound).to.equal(2 * runs + 1 + (unmergeable ? DEFAULT_VMA_SLACK : 0));
      expect(regionVmas(esb).length).to.be.at.most(vmas);
      expect(vmas).to.be.at.most(vmaBound);
      if (runs === 0) expect(regionVmas(esb).length, 'one VMA with no run').to.equal(1);
    }

    it('maps every IPI page once, as one VMA, readable through the region', () => {
      expect(regionVmas(esb)).to.have.length(1);
      expect(esb.memslot.size).to.equal(512n * esb.geometry.bytesPerIrq);
      expectStamps(esb);
    });

    it('attaches a single interrupt, an MSI block and detaches them, pages right after every step', () => {
      const slot = { ...esb.memslot };
      const want = new Map<number, string>();
      esb.attach(42, pt1.pages(3));
      want.set(42, 'pt1:3');
      expectStamps(esb, want);
      expectVmaBound();
      esb.attachRange(100, 16, pt2.pages(16, 16));
      for (let i = 0; i < 16; i++) want.set(100 + i, `pt2:${16 + i}`);
      expectStamps(esb, want);
      expectVmaBound();
      expect(esb.backingOf(105)).to.deep.equal({ kind: 'passthrough', source: 'pt2:21', sourceOffset: 21n * esb.geometry.bytesPerIrq, run: { first: 100, count: 16 } });
      expect(esb.detach(42)).to.equal(true);
      want.delete(42);
      expectStamps(esb, want);
      expectVmaBound();
      expect(esb.detach(42)).to.equal(false);
      expect(esb.detach(107)).to.equal(true);
      want.delete(107);
      expectStamps(esb, want);
      expectVmaBound();
      expect(esb.detachRange(0, 512)).to.equal(15);
      expectStamps(esb);
      expect(regionVmas(esb)).to.have.length(1);
      expect(esb.memslot).to.deep.equal(slot);
    });

    it('makes one mmap per attach, detach and range, and reads no /proc on those paths', () => {
      const mmaps = (): number => realNative.counts.mmap ?? 0;
      const src = pt1.pages(0, 8);
      let before = mmaps();
      esb.attachRange(8, 8, src);
      expect(mmaps() - before).to.equal(1);
      before = mmaps();
      esb.attach(300, pt1.pages(9));
      expect(mmaps() - before).to.equal(1);
      before = mmaps();
      esb.detach(300);
      expect(mmaps() - before).to.equal(1);
      before = mmaps();
      expect(esb.detachRange(0, 512)).to.equal(8);
      expect(mmaps() - before).to.equal(1);
      before = mmaps();
      expect(esb.detachRange(0, 512)).to.equal(0);
      expect(mmaps() - before).to.equal(0);
    });

    it('keeps the VMA bound through 300 random operations and gets back to one VMA', () => {
      let seed = 12345;
      const rnd = (n: number): number => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % n;
      };
      for (let i = 0; i < 300; i++) {
        const irq = rnd(500);
        const count = 1 + rnd(8);
        const kind = rnd(4);
        if (kind < 2) {
          try {
            esb.attachRange(irq, count, pt1.pages(rnd(56), count));
          } catch (e) {
            expect((e as { code: string }).code).to.equal('E_ALREADY_ATTACHED');
          }
        } else if (kind === 2) esb.detach(irq);
        else esb.detachRange(irq, count);
        expectVmaBound();
      }
      expectBackingMatchesMemory(esb);
      esb.detachRange(0, 512);
      expect(regionVmas(esb)).to.have.length(1);
      expectStamps(esb);
    });

    it('keeps working after the caller closes its sources and devices (invariant 7)', () => {
      const src = pt1.pages(5, 4);
      esb.attachRange(10, 4, src);
      src.close();
      pt1.close();
      expectStamps(esb, new Map([[10, 'pt1:5'], [11, 'pt1:6'], [12, 'pt1:7'], [13, 'pt1:8']]));
      expect(esb.detach(11)).to.equal(true);
      expectBackingMatchesMemory(esb, [9, 10, 11, 12, 13, 14]);
      expect(esb.detachRange(10, 4)).to.equal(3);
      expectStamps(esb);
    });

    describe('refuses bad input with a RemapError and leaves the region unchanged', () => {
      const badIrqs: unknown[] = [-1, 512, 1e9, 1.5, NaN, Infinity, '42', 42n, null, undefined];
      let tooSmall: PageSource; // made before the mmap count: fromFd's trial mmap is not the attach's
      beforeEach(() => {
        esb.attach(7, pt1.pages(1));
        tooSmall = PageSource.fromFd(pt2.fd, 63n * esb.geometry.bytesPerIrq + esb.geometry.esbPageSize);
      });
      afterEach(() => {
        tooSmall.close();
        expectStamps(esb, new Map([[7, 'pt1:1']]));
        expect(regionVmas(esb).length).to.be.at.most(3);
      });

      for (const irq of badIrqs) {
        it(`interrupt ${typeof irq === 'bigint' ? `${irq}n` : JSON.stringify(irq) ?? String(irq)} → E_IRQ_RANGE for attach, detach and backingOf`, () => {
          expectRemapError(() => esb.attach(irq as number, pt1.pages(2)), 'E_IRQ_RANGE');
          expectRemapError(() => esb.detach(irq as number), 'E_IRQ_RANGE');
          expectRemapError(() => esb.backingOf(irq as number), 'E_IRQ_RANGE');
          expectRemapError(() => esb.attachRange(irq as number, 1, pt1.pages(2)), 'E_IRQ_RANGE');
        });
      }

      const cases: [what: string, run: () => unknown, code: RemapErrorCode, message: RegExp][] = [
        ['a double attach', () => esb.attach(7, pt1.pages(2)), 'E_ALREADY_ATTACHED', /attach\(7\).*interrupt 7 is already backed by pt1:1/],
        ['a range over an attached interrupt', () => esb.attachRange(4, 4, pt2.pages(0, 4)), 'E_ALREADY_ATTACHED', /interrupt 7/],
        ['a range running off the end', () => esb.attachRange(510, 4, pt2.pages(0, 4)), 'E_IRQ_RANGE', /attachRange\(510, 4\)/],
        ['a zero count', () => esb.attachRange(10, 0, pt2.pages(0, 4)), 'E_IRQ_RANGE', /attachRange/],
        ['a fractional count', () => esb.detachRange(10, 2.5), 'E_IRQ_RANGE', /detachRange/],
        ['a source of another size', () => esb.attachRange(10, 2, pt2.pages(0, 4)), 'E_SOURCE', /holds 4 interrupt/],
        ['a multi-interrupt source to attach', () => esb.attach(10, pt2.pages(0, 4)), 'E_SOURCE', /use attachRange/],
        ['a closed source', () => { const s = pt2.pages(0); s.close(); esb.attach(10, s); }, 'E_SOURCE', /closed/],
        ['something that is not a source', () => esb.attach(10, {} as PageSource), 'E_SOURCE', /not a PageSource/],
        ['a source of another ESB layout', () => esb.attach(10, FakePassthroughDevice.create({ nrIrqs: 2, id: 9, esbShift: 16 }).pages(0)), 'E_GEOMETRY', /esbShift 16/],
        ['a fromFd source too small', () => esb.attach(10, tooSmall), 'E_SOURCE', /past the source/],
      ];
      for (const [what, run, code, message] of cases) {
        it(`${what} → ${code}`, () => {
          const mmaps = realNative.counts.mmap ?? 0;
          const err = expectRemapError(run, code);
          expect(err.message).to.match(message);
          expect(realNative.counts.mmap ?? 0).to.equal(mmaps);
        });
      }
    });

    it('refuses every call after close with E_CLOSED, and closing twice is harmless', () => {
      const addr = esb.memslot.userspaceAddr;
      esb.close();
      esb.close();
      expect(esb.closed).to.equal(true);
      expect(realNative.readMaps().some((m) => m.start <= addr && m.end > addr && m.path.includes('fake-xive'))).to.equal(false);
      expectRemapError(() => esb.attach(1, pt1.pages(0)), 'E_CLOSED');
      expectRemapError(() => esb.attachRange(1, 1, pt1.pages(0)), 'E_CLOSED');
      expectRemapError(() => esb.detach(1), 'E_CLOSED');
      expectRemapError(() => esb.detachRange(1, 1), 'E_CLOSED');
      expectRemapError(() => esb.backingOf(1), 'E_CLOSED');
      expectRemapError(() => esb.runs(), 'E_CLOSED');
      esb = EsbController.open(dev); // for afterEach
    });
  });
}

describe('devices that are not there', () => {
  it('refuses to open a region on something that is not a device, or with a nonsense VMA limit', () => {
    expect(expectRemapError(() => EsbController.open(undefined as unknown as FakeXiveDevice), 'E_DEVICE_UNAVAILABLE').message).to.match(/not an EsbDevice/);
    const dev = FakeXiveDevice.create({ nrIrqs: 4 });
    try {
      for (const vmaLimit of [NaN, 0, -5, 1.5]) expectRemapError(() => EsbController.open(dev, { vmaLimit }), 'E_VMA_BUDGET');
    } finally {
      dev.close();
    }
  });

  it('refuses a closed fake device instead of using its fd number, which may name another file by then', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 4 });
    dev.close();
    const other = FakePassthroughDevice.create({ nrIrqs: 4, id: 9 });
    try {
      expectRemapError(() => EsbController.open(dev), 'E_CLOSED');
      expectRemapError(() => dev.fd, 'E_CLOSED');
      other.close();
      expectRemapError(() => other.fd, 'E_CLOSED');
    } finally {
      other.close();
    }
  });
});

describe('the never-merging fake really never merges', () => {
  it('restoring only one interrupt\'s own pages would leave three VMAs (why detach remaps the gap there)', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 16, unmergeable: true, esbShift: 12 });
    const esb = EsbController.open(dev);
    const ipi = dev.openIpiPages();
    try {
      const len = esb.geometry.bytesPerIrq;
      ipi.withFd((fd) => realNative.mmap(esb.memslot.userspaceAddr + 5n * len, len, 3, 0x11, fd, 5n * len));
      expect(regionVmas(esb)).to.have.length(3);
      expect(readStamp(esb, 5)).to.equal('ipi:5:0');
    } finally {
      ipi.close();
      esb.close();
      dev.close();
    }
  });
});

describe('PageSource.fromFd', () => {
  let pt: FakePassthroughDevice;
  let dev: FakeXiveDevice;
  let esb: EsbController;
  before(() => {
    pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 5 });
    dev = FakeXiveDevice.create({ nrIrqs: 64 });
    esb = EsbController.open(dev);
  });
  after(() => {
    esb.close();
    dev.close();
    pt.close();
  });

  it('attaches pages of any read-write fd, and the caller may close its fd right away', () => {
    const fd = realNative.dupCloexec(pt.fd);
    const src = PageSource.fromFd(fd, 2n * esb.geometry.bytesPerIrq, 3, { name: 'vfio' });
    realNative.close(fd);
    esb.attachRange(20, 3, src);
    expect(esb.backingOf(21)).to.include({ kind: 'passthrough', source: 'vfio+1' });
    expectStamps(esb, new Map([[20, 'pt5:2'], [21, 'pt5:3'], [22, 'pt5:4']]));
    src.close();
    expect(esb.detachRange(20, 3)).to.equal(3);
    expectStamps(esb);
  });

  const dir = mkdtempSync(join(tmpdir(), 'xive-remap-'));
  const cases: [what: string, fd: () => number, offset: bigint, message: RegExp][] = [
    ['a closed fd', () => { const fd = realNative.dupCloexec(pt.fd); realNative.close(fd); return fd; }, 0n, /cannot duplicate.*EBADF/],
    ['a read-only fd', () => realNative.open(`/proc/self/fd/${pt.fd}`, O_RDONLY), 0n, /read-only/],
    ['a pipe (FIFO)', () => fifoFd(), 0n, /not a mappable file/],
    ['a directory', () => openSync(dir, 'r'), 0n, /not a mappable file/],
    ['a misaligned offset', () => realNative.dupCloexec(pt.fd), 100n, /not aligned/],
    ['an offset past the end', () => realNative.dupCloexec(pt.fd), 1n << 40n, /past the end/],
    ['a negative fd', () => -1, 0n, /not a file descriptor/],
  ];
  for (const [what, makeFd, offset, message] of cases) {
    it(`refuses ${what} with E_SOURCE`, () => {
      const fd = makeFd();
      try {
        expect(expectRemapError(() => PageSource.fromFd(fd, offset), 'E_SOURCE').message).to.match(message);
      } finally {
        if (fd >= 0) try { closeSync(fd); } catch { /* already closed */ }
      }
    });
  }

  it('refuses a { length } larger than the file: a load past its end would SIGBUS the guest', () => {
    const bpi = esb.geometry.bytesPerIrq;
    expect(expectRemapError(() => PageSource.fromFd(pt.fd, 0n, 2, { length: 64n * bpi }), 'E_SOURCE').message).to.match(/larger than the file/);
    expect(expectRemapError(() => PageSource.fromFd(pt.fd, 0n, 1, { length: -1n }), 'E_SOURCE').message).to.match(/not a positive bigint/);
    const narrowed = PageSource.fromFd(pt.fd, 0n, 2, { length: bpi });
    try {
      expect(expectRemapError(() => esb.attachRange(30, 2, narrowed), 'E_SOURCE').message).to.match(/past the source/);
    } finally {
      narrowed.close();
    }
  });

  it('asks for a length when fstat cannot tell the size (anonymous inodes such as VFIO fds)', () => {
    const fd = realNative.open('/dev/null', 2);
    try {
      expect(expectRemapError(() => PageSource.fromFd(fd), 'E_SOURCE').message).to.match(/pass \{ length \}/);
    } finally {
      realNative.close(fd);
    }
  });
});

/** A FIFO opened read-write (a pipe that has a path, so no child process is needed). */
function fifoFd(): number {
  const path = join(mkdtempSync(join(tmpdir(), 'xive-fifo-')), 'fifo');
  execFileSync('mkfifo', [path]);
  return openSync(path, 'r+');
}
