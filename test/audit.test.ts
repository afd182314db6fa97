import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EsbController, PageSource, inspectMaps } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative } from 'xive-remap/native-stubs';
import { RemapError, NativeError, timaMappings } from 'xive-remap';
import { auditRegion, backingFile, type Discrepancy } from '../src/audit.js';
import {
  EFD_CLOEXEC,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  parseMaps,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  realNative,
  type MapsEntry,
} from '../src/internal.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PAGE = BigInt(realNative.pageSize);

for (const unmergeable of [false, true]) {
  describe(`esb.audit() on a ${unmergeable ? 'never-merging' : 'merging'} device`, () => {
    let dev: FakeXiveDevice;
    let pt: FakePassthroughDevice;
    let esb: EsbController;
    beforeEach(() => {
      dev = FakeXiveDevice.create({ nrIrqs: 64, unmergeable, esbShift: 13 });
      pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 3, esbShift: 13 });
      esb = EsbController.open(dev);
      esb.attachRange(10, 4, pt.pages(2, 4));
      esb.attach(20, pt.pages(9));
    });
    afterEach(() => {
      esb.close();
      dev.close();
      pt.close();
    });

    const bpi = (): bigint => esb.geometry.bytesPerIrq;
    const at = (irq: number): bigint => esb.memslot.userspaceAddr + BigInt(irq) * bpi();
    /** Tamper with the region behind the controller's back (the tests own the address range). */
    const overlay = (irq: number, len: bigint, fd: number, offset: bigint): void => {
      realNative.mmap(at(irq), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
    };

    it('finds nothing wrong after attaches and detaches', () => {
      expect(esb.audit()).to.deep.equal([]);
      esb.detach(11);
      esb.detach(20);
      expect(esb.audit()).to.deep.equal([]);
      esb.detachRange(0, 64);
      expect(esb.audit()).to.deep.equal([]);
    });

    it('reports pages from the wrong file', () => {
      overlay(30, bpi(), pt.fd, 0n);
      const d = esb.audit();
      expect(d.map((x) => [x.kind, x.first, x.last])).to.deep.include(['wrong-file', 30, 30]);
    });

    it('reports pages from the wrong offset of the right file', () => {
      overlay(11, bpi(), pt.fd, 7n * bpi());
      expect(esb.audit().map((x) => [x.kind, x.first, x.last])).to.deep.include(['wrong-offset', 11, 11]);
    });

    it('reports a hole, and a VMA boundary inside an interrupt', () => {
      realNative.munmap(at(40), bpi());
      overlay(50, esb.geometry.esbPageSize, pt.fd, 0n);
      const kinds = esb.audit().map((x) => [x.kind, x.first]);
      expect(kinds).to.deep.include(['hole', 40]);
      expect(kinds).to.deep.include(['split', 50]);
    });
  });
}

describe('esb.audit() when the kernel cannot be asked', () => {
  it('throws E_MAP with the errno error as cause, not a bare NativeError', () => {
    const f = new FaultyNative();
    const dev = FakeXiveDevice.create({ nrIrqs: 8, native: f });
    const esb = EsbController.open(dev, { native: f });
    try {
      f.inject({ call: 'fstat', errno: 'EMFILE' });
      let err: unknown;
      try {
        esb.audit();
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_MAP');
      expect((err as RemapError).cause).to.be.instanceOf(NativeError).with.property('code', 'EMFILE');
      expect(esb.audit()).to.deep.equal([]);
    } finally {
      esb.close();
      dev.close();
    }
  });
});

describe('xive-remap inspect --pid', () => {
  it('renders the ESB region of a running process from its /proc/PID/maps', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 256 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 32, id: 7 });
    const esb = EsbController.open(dev);
    try {
      esb.attachRange(64, 16, pt.pages(0, 16));
      esb.attach(200, pt.pages(20));
      const out = JSON.parse(execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid), '--json'], { encoding: 'utf8' })) as {
        regions: { base: string; nrIrqs: number; mappings: number; kernelManaged: boolean; ranges: { first: number; last: number; backing: string; ipi: boolean }[] }[];
        tima: unknown[];
      };
      const mine = out.regions.find((r) => BigInt(r.base) === esb.memslot.userspaceAddr);
      expect(mine, JSON.stringify(out)).to.not.equal(undefined);
      expect(mine?.ranges.map((r) => [r.first, r.last, r.ipi ? 'ipi' : r.backing.replace(/ \(deleted\)$/, '')])).to.deep.equal([
        [0, 63, 'ipi'],
        [64, 79, '/memfd:fake-pt7'],
        [80, 199, 'ipi'],
        [200, 200, '/memfd:fake-pt7'],
        [201, 255, 'ipi'],
      ]);
      expect([mine?.nrIrqs, mine?.mappings, mine?.kernelManaged]).to.deep.equal([256, 5, false]);
      expect(out.tima).to.deep.equal([]);
      const text = execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid)], { encoding: 'utf8' });
      expect(text).to.match(/64-79\s+\/memfd:fake-pt7/);
      expect(text).to.match(/: 256 interrupts, 5 mappings$/m);
    } finally {
      esb.close();
      dev.close();
      pt.close();
    }
  });
});

describe('auditRegion: pages mapped past the end of their file (issue 12, item 1)', () => {
  // One region of 16 interrupts, 2 pages each: IPI [0, 8), a run [8, 12) from file B at offset
  // 2 × bpi, IPI [12, 16). The VMAs match the table exactly, so the only finding is the size's.
  const page = 0x1000n;
  const bpi = 2n * page;
  const base = 0x7f0000000000n;
  const ipi = { dev: '00:01', ino: 10n };
  const b = { dev: '00:01', ino: 20n };
  const vma = (first: number, count: number, ino: bigint, offset: bigint): MapsEntry => ({
    start: base + BigInt(first) * bpi, end: base + BigInt(first + count) * bpi, perms: 'rw-s', offset, dev: '00:01', inode: ino, path: `/memfd:f${ino}`,
  });
  const maps = [vma(0, 8, 10n, 0n), vma(8, 4, 20n, 2n * bpi), vma(12, 4, 10n, 12n * bpi)];
  const cases: [what: string, ipiSize: bigint | undefined, bSize: bigint | undefined, found: [number, number][]][] = [
    ['sizes unknown (device fds): nothing to compare', undefined, undefined, []],
    ['both files as large as the pages', 16n * bpi, 6n * bpi, []],
    ['file B larger than the pages', 16n * bpi, 100n * bpi, []],
    ['file B ends after its 3rd interrupt', 16n * bpi, 5n * bpi, [[11, 11]]],
    ['file B ends inside its 2nd interrupt (the management page is gone)', 16n * bpi, 3n * bpi + page, [[9, 11]]],
    ['file B truncated to 0', 16n * bpi, 0n, [[8, 11]]],
    ['file B ends before the run starts', 16n * bpi, bpi, [[8, 11]]],
    ['the IPI file shrank to 10 interrupts', 10n * bpi, 6n * bpi, [[12, 15]]],
  ];
  for (const [what, ipiSize, bSize, found] of cases) {
    it(`${found.length ? 'reports' : 'finds nothing'}: ${what}`, () => {
      const sized = <T extends object>(f: T, size: bigint | undefined): T => (size === undefined ? f : { ...f, size });
      const segments = [
        { first: 0, count: 8, name: 'ipi', file: sized(ipi, ipiSize), offset: 0n },
        { first: 8, count: 4, name: 'fB+0', file: sized(b, bSize), offset: 2n * bpi },
        { first: 12, count: 4, name: 'ipi', file: sized(ipi, ipiSize), offset: 12n * bpi },
      ];
      const d = auditRegion({ base, bytesPerIrq: bpi, nrIrqs: 16, segments, runs: 1 }, maps);
      expect(d.map((x) => [x.first, x.last]), JSON.stringify(d, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))).to.deep.equal(found);
      for (const x of d) {
        expect(x.kind).to.equal('past-eof');
        expect(x.found).to.match(/ends at 0x[0-9a-f]+/);
      }
    });
  }
});

describe('a source truncated under an attached overlay (issue 12, item 1; nothing is loaded from its pages)', () => {
  let dev: FakeXiveDevice;
  let esb: EsbController;
  let fd: number;
  beforeEach(() => {
    dev = FakeXiveDevice.create({ nrIrqs: 64, esbShift: 13 });
    esb = EsbController.open(dev);
    // A caller that vouched for a plain memfd's size and then broke its word.
    fd = realNative.memfdCreate('audit-liar', MFD_CLOEXEC);
    realNative.ftruncate(fd, 8n * esb.geometry.bytesPerIrq);
    const src = PageSource.fromFd(fd, 2n * esb.geometry.bytesPerIrq, 3, { name: 'liar', sizeIsFixed: true });
    esb.attachRange(40, 3, src);
    src.close();
  });
  afterEach(() => {
    esb.close();
    dev.close();
    realNative.close(fd);
  });

  /** What esb.audit() checks, with the files described by `backingFile` (fstat now); `attached`: whether 40..42 are the liar's. */
  const auditNow = (attached: boolean): Discrepancy[] => {
    const bpi = esb.geometry.bytesPerIrq;
    const ipi = backingFile(realNative.fstat(dev.fd));
    const liar = backingFile(realNative.fstat(fd));
    const segments = attached
      ? [
          { first: 0, count: 40, name: 'ipi', file: ipi, offset: 0n },
          { first: 40, count: 3, name: 'liar+0', file: liar, offset: 2n * bpi },
          { first: 43, count: 21, name: 'ipi', file: ipi, offset: 43n * bpi },
        ]
      : [{ first: 0, count: 64, name: 'ipi', file: ipi, offset: 0n }];
    return auditRegion({ base: esb.memslot.userspaceAddr, bytesPerIrq: bpi, nrIrqs: 64, segments, runs: attached ? 1 : 0 }, realNative.readMaps());
  };

  it('auditRegion, given the files as fstat sees them now, reports the interrupts whose pages lie past the new end', () => {
    expect(auditNow(true)).to.deep.equal([]);
    realNative.ftruncate(fd, 3n * esb.geometry.bytesPerIrq + esb.geometry.esbPageSize); // into interrupt 41's pages
    const d = auditNow(true);
    expect(d.map((x) => [x.kind, x.first, x.last])).to.deep.equal([['past-eof', 41, 42]]);
    expect(d[0]?.expected).to.match(/liar\+0/);
    expect(esb.detachRange(40, 3)).to.equal(3); // no load: the pages are never touched
    expect(auditNow(false)).to.deep.equal([]);
  });

  it('the fake devices\' IPI memfd is sealed, so backingFile keeps its size; a device fd (anonymous inode) has none', () => {
    expect(backingFile(realNative.fstat(dev.fd)).size).to.equal(64n * esb.geometry.bytesPerIrq);
    const efd = realNative.eventfd(0, EFD_CLOEXEC);
    try {
      expect(backingFile(realNative.fstat(efd))).to.not.have.property('size');
    } finally {
      realNative.close(efd);
    }
  });

  // Needs the one-line change to EsbController#audit described in the sources branch's report
  // (`fileOf` returns `backingFile(fstat)`): src/controller.ts belongs to the lead.
  it('esb.audit() reports past-eof for a source truncated under the overlay', () => {
    realNative.ftruncate(fd, 3n * esb.geometry.bytesPerIrq);
    expect(esb.audit().map((x) => [x.kind, x.first, x.last])).to.deep.equal([['past-eof', 41, 42]]);
    expect(esb.detachRange(40, 3)).to.equal(3);
    expect(esb.audit()).to.deep.equal([]);
  });
});

describe('inspectMaps with two regions back to back (issue 12, item 10)', () => {
  // Two fake regions of 8 interrupts mapped adjacent inside one reservation the native layer owns
  // (as two EsbControllers may land), with passthrough pages mapped over interrupts at the seam.
  const NR = 8;
  let lowerDev: FakeXiveDevice;
  let upperDev: FakeXiveDevice;
  let pt: FakePassthroughDevice;
  let base: bigint;
  let size: bigint;
  let bpi: bigint;
  beforeEach(() => {
    lowerDev = FakeXiveDevice.create({ nrIrqs: NR, esbShift: 13 });
    upperDev = FakeXiveDevice.create({ nrIrqs: NR, esbShift: 13 });
    pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 9, esbShift: 13 });
    bpi = lowerDev.geometry.bytesPerIrq;
    size = BigInt(NR) * bpi;
    base = realNative.mmap(0n, 2n * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
    realNative.claim(base, 2n * size);
    realNative.mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, lowerDev.fd, 0n);
    realNative.mmap(base + size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, upperDev.fd, 0n);
  });
  afterEach(() => {
    realNative.munmap(base, 2n * size);
    realNative.release(base, 2n * size);
    lowerDev.close();
    upperDev.close();
    pt.close();
  });

  /** Map pt's host interrupt `host` over interrupt `irq` of the lower (0) or upper (1) region. */
  const overlay = (region: 0 | 1, irq: number, host: number): void => {
    realNative.mmap(base + BigInt(region) * size + BigInt(irq) * bpi, bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pt.fd, BigInt(host) * bpi);
  };
  type Row = [first: number, last: number, what: string];
  const rows = (ranges: readonly { first: number; last: number; ipi: boolean; backing: string; offset: bigint }[]): Row[] =>
    ranges.map((r) => [r.first, r.last, r.ipi ? 'ipi' : `${r.backing.replace(/ \(deleted\)$/, '')} @ ${r.offset / bpi}`]);
  const found = (): { lower: Row[] | undefined; upper: Row[] | undefined; all: number } => {
    const regions = inspectMaps(realNative.readMaps(), bpi, PAGE).filter((r) => r.base === base || r.base === base + size);
    return {
      lower: regions.filter((r) => r.base === base).flatMap((r) => rows(r.ranges)),
      upper: regions.filter((r) => r.base === base + size).flatMap((r) => rows(r.ranges)),
      all: regions.length,
    };
  };

  const cases: [what: string, lower: [irq: number, host: number][], upper: [irq: number, host: number][], expectLower: Row[], expectUpper: Row[]][] = [
    ['an overlay at interrupt 0 of the upper region', [], [[0, 3]], [[0, 7, 'ipi']], [[0, 0, '/memfd:fake-pt9 @ 3'], [1, 7, 'ipi']]],
    ['an overlay at the last interrupt of the lower region', [[7, 3]], [], [[0, 6, 'ipi'], [7, 7, '/memfd:fake-pt9 @ 3']], [[0, 7, 'ipi']]],
    [
      'overlays on both sides of the seam, merged by the kernel into one VMA across it',
      [[6, 2], [7, 3]],
      [[0, 4], [1, 5]],
      [[0, 5, 'ipi'], [6, 7, '/memfd:fake-pt9 @ 2']],
      [[0, 1, '/memfd:fake-pt9 @ 4'], [2, 7, 'ipi']],
    ],
    ['the whole upper region but its last interrupt overlaid', [], [[0, 0], [1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6]], [[0, 7, 'ipi']], [[0, 6, '/memfd:fake-pt9 @ 0'], [7, 7, 'ipi']]],
  ];
  for (const [what, lower, upper, expectLower, expectUpper] of cases) {
    it(`each region lists its own pages only: ${what}`, () => {
      for (const [irq, host] of lower) overlay(0, irq, host);
      for (const [irq, host] of upper) overlay(1, irq, host);
      const f = found();
      expect(f.all, 'two regions').to.equal(2);
      expect(f.lower, 'lower region').to.deep.equal(expectLower);
      expect(f.upper, 'upper region').to.deep.equal(expectUpper);
    });
  }

  it('xive-remap inspect --pid --json shows the same', () => {
    overlay(1, 0, 3);
    const out = JSON.parse(execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid), '--json', '--esb-shift', '13'], { encoding: 'utf8' })) as {
      regions: { base: string; end: string; ranges: { first: number; last: number; ipi: boolean }[] }[];
    };
    const mine = out.regions.filter((r) => BigInt(r.base) === base || BigInt(r.base) === base + size);
    expect(mine.map((r) => [BigInt(r.base) - base, BigInt(r.end) - base, r.ranges.map((x) => [x.first, x.last, x.ipi])])).to.deep.equal([
      [0n, size, [[0, 7, true]]],
      [size, 2n * size, [[0, 0, false], [1, 7, true]]],
    ]);
  });
});

describe('inspectMaps on maps text: size in interrupts, mappings, kernel-managed, TIMA', () => {
  // QEMU 7.2's mappings of its KVM XIVE device, as the emulated POWER9 showed them (64 KiB pages):
  // the ESB pages of 8,192 interrupts at page offset 4, the TIMA at page offset 0.
  const qemuEsb = '7fff13e00000-7fff53e00000 rw-s 00040000 00:0d 9129   anon_inode:kvm-xive-native';
  const qemuTima = '7fff80050000-7fff80090000 rw-s 00000000 00:0d 9129   anon_inode:kvm-xive-native';
  const page = 0x10000n;
  const bpi = 0x20000n; // esbShift 17: two 64 KiB pages per interrupt
  const cases: { name: string; maps: string[]; want: { base: bigint; nrIrqs: number; mappings: number; kernelManaged: boolean }[]; tima: number }[] = [
    { name: "QEMU's whole-range mapping and TIMA", maps: [qemuEsb, qemuTima], want: [{ base: 0x7fff13e00000n, nrIrqs: 8192, mappings: 1, kernelManaged: true }], tima: 1 },
    {
      name: 'a private anonymous mapping right after the region is not part of it',
      maps: [qemuEsb, '7fff53e00000-7fff53e10000 rw-p 00000000 00:00 0', qemuTima],
      want: [{ base: 0x7fff13e00000n, nrIrqs: 8192, mappings: 1, kernelManaged: true }],
      tima: 1,
    },
    {
      name: 'an overlay over interrupt 2 of a 16-interrupt KVM region',
      maps: [
        '7f0000000000-7f0000040000 rw-s 00040000 00:0d 77   anon_inode:kvm-xive-native',
        '7f0000040000-7f0000060000 rw-s 00000000 00:01 5   /memfd:pt (deleted)',
        '7f0000060000-7f0000200000 rw-s 000a0000 00:0d 77   anon_inode:kvm-xive-native',
      ],
      want: [{ base: 0x7f0000000000n, nrIrqs: 16, mappings: 3, kernelManaged: false }],
      tima: 0,
    },
    {
      name: "a fake device's single mapping is not a kernel's",
      maps: ['7f0000000000-7f0000100000 rw-s 00000000 00:01 9   /memfd:fake-xive-ipi (deleted)'],
      want: [{ base: 0x7f0000000000n, nrIrqs: 8, mappings: 1, kernelManaged: false }],
      tima: 0,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const maps = parseMaps(c.maps.join('\n'));
      const got = inspectMaps(maps, bpi, page).map((r) => ({ base: r.base, nrIrqs: r.nrIrqs, mappings: r.mappings, kernelManaged: r.kernelManaged }));
      expect(got).to.deep.equal(c.want);
      expect(timaMappings(maps)).to.have.length(c.tima);
    });
  }
  it('the TIMA is found by page offset 0 of a KVM XIVE device, with its size', () => {
    const [t] = timaMappings(parseMaps([qemuEsb, qemuTima].join('\n')));
    expect(t).to.deep.equal({ start: 0x7fff80050000n, end: 0x7fff80090000n, path: 'anon_inode:kvm-xive-native' });
  });
});
