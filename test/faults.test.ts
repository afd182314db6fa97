/**
 * Failure-proof (issue 5): every step of every public operation, every fault.
 *
 * For each operation (open, attach, attachRange, detach, detachRange, close, PageSource.fromFd,
 * creating the fake devices) on a merging and a never-merging device, the operation is first run
 * on a `FaultyNative` that only records, which lists the system calls it makes. Then, on a fresh
 * world each time, a fault is armed at each position in turn (ENOMEM, EINVAL, EBADF, EAGAIN, and
 * the `hole` mode at each mmap), the operation runs, and the world is checked:
 * - it failed with a RemapError whose cause chain holds the injected NativeError, or (a failed
 *   close(2), which Linux completes anyway) it succeeded exactly as without the fault;
 * - the region has no hole (/proc/self/maps, checked before any read), every interrupt's stamp is
 *   what backingOf says, the table is as before, the VMA bound holds, no fd leaked;
 * - the same operation succeeds when run again without the fault.
 * Then the restore itself is broken too (a second fault at each call the restore makes): the
 * region must be degraded, say which interrupts, keep the others intact and refuse changes.
 * The last part breaks sources for real (closed, read-only, pipe, directory, truncated memfd,
 * closed device) through the public API only.
 */
import { expect } from 'chai';
import { mkdtempSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { EsbController, NativeError, PageSource, RemapError, esbOffset, type Backing, type RemapErrorCode } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative, type FaultSpec, type CallRecord } from 'xive-remap/native-stubs';
import { MFD_CLOEXEC, O_RDONLY, realNative } from '../src/internal.js';
import { expectBackingMatchesMemory, expectRemapError, expectStamps, regionVmas } from './helpers.js';
import { causeChain, openFds, regionHoles } from './model.js';

const ERRNOS = ['ENOMEM', 'EINVAL', 'EBADF', 'EAGAIN'] as const;
const NR = 64;
const irqsOf = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
const ALL = irqsOf(0, NR);

/** A fake XIVE device, a passthrough device, and (unless `region: false`) a region with three runs: 10..13, 30, 44..45. */
interface World {
  readonly f: FaultyNative;
  readonly dev: FakeXiveDevice;
  readonly pt: FakePassthroughDevice;
  readonly unmergeable: boolean;
  readonly ino: bigint;
  esb: EsbController | undefined;
}

function makeWorld(unmergeable: boolean, region = true): World {
  const f = new FaultyNative();
  const dev = FakeXiveDevice.create({ nrIrqs: NR, unmergeable, native: f });
  const pt = FakePassthroughDevice.create({ nrIrqs: 32, id: 1, native: f });
  const w: World = { f, dev, pt, unmergeable, ino: realNative.fstat(dev.fd).ino, esb: undefined };
  if (region) {
    const esb = (w.esb = EsbController.open(dev, { native: f }));
    for (const [first, count, host] of [[10, 4, 0], [30, 1, 7], [44, 2, 20]] as const) {
      const s = pt.pages(host, count);
      esb.attachRange(first, count, s);
      s.close();
    }
  }
  return w;
}

/** Close everything; a region whose munmap was made to fail is unmapped by hand. */
function disposeWorld(w: World): void {
  const slot = w.esb?.memslot;
  w.esb?.close();
  if (slot && realNative.readMaps().some((m) => m.inode === w.ino && m.start < slot.userspaceAddr + slot.size && m.end > slot.userspaceAddr)) {
    realNative.munmap(slot.userspaceAddr, slot.size);
  }
  w.dev.close();
  w.pt.close();
  expect(realNative.readMaps().filter((m) => m.inode === w.ino), 'a mapping of the device outlived dispose').to.deep.equal([]);
}

const table = (esb: EsbController): Backing[] => ALL.map((i) => esb.backingOf(i));

/** No hole (checked first: reading one would crash the run), stamps as backingOf says, the VMA bound. */
function expectRegionIntact(esb: EsbController, what: string): void {
  expect(regionHoles(esb), `${what}: hole in the region`).to.deep.equal([]);
  expectBackingMatchesMemory(esb);
  const { runs, vmas, vmaBound } = esb.stats();
  expect(regionVmas(esb).length, `${what}: VMAs within the controller's count`).to.be.at.most(vmas);
  expect(vmas, `${what}: VMA bound`).to.be.at.most(vmaBound);
  if (runs === 0) expect(regionVmas(esb).length, `${what}: one VMA with no run`).to.equal(1);
}

/** One public operation: prepare it (no faults armed yet), run it, clean up what it made. */
interface Scenario {
  readonly name: string;
  /** Whether the world has a region before the operation. */
  readonly region: boolean;
  /** Codes the operation may fail with. */
  readonly codes: readonly RemapErrorCode[];
  /** Build the call; `done` releases what the call made or used (given its result, undefined if it failed). */
  prepare(w: World): { run: () => unknown; done?: (result: unknown) => void };
  /** The interrupts a failed change's restore covers: a degraded range must lie inside. */
  readonly affected?: (unmergeable: boolean) => [number, number];
}

const change = (name: string, affected: Scenario['affected'], make: (w: World) => { run: () => unknown; done?: () => void }): Scenario => ({
  name,
  region: true,
  codes: ['E_MAP'],
  prepare: make,
  affected,
});

const scenarios: Scenario[] = [
  { name: 'EsbController.open', region: false, codes: ['E_MAP', 'E_DEVICE_UNAVAILABLE'], prepare: (w) => ({ run: () => (w.esb = EsbController.open(w.dev, { native: w.f })) }) },
  change('attach(20)', (u) => (u ? [14, 30] : [20, 21]), (w) => {
    const s = w.pt.pages(5);
    return { run: () => w.esb?.attach(20, s), done: () => s.close() };
  }),
  change('attachRange(32, 4)', (u) => (u ? [31, 44] : [32, 36]), (w) => {
    const s = w.pt.pages(8, 4);
    return { run: () => w.esb?.attachRange(32, 4, s), done: () => s.close() };
  }),
  change('detach(30)', (u) => (u ? [14, 44] : [30, 31]), (w) => ({ run: () => w.esb?.detach(30) })),
  change('detachRange(12, 34) over three runs, splitting one', (u) => (u ? [10, 64] : [10, 46]), (w) => ({ run: () => w.esb?.detachRange(12, 34) })),
  { name: 'close', region: true, codes: ['E_MAP'], prepare: (w) => ({ run: () => w.esb?.close() }) },
  {
    name: 'PageSource.fromFd',
    region: true,
    codes: ['E_SOURCE'],
    prepare: (w) => ({ run: () => PageSource.fromFd(w.pt.fd, 2n * w.pt.geometry.bytesPerIrq, 2, { native: w.f }), done: (s) => (s as PageSource | undefined)?.close() }),
  },
  {
    name: 'FakeXiveDevice.create',
    region: false,
    codes: ['E_SOURCE'],
    prepare: (w) => ({ run: () => FakeXiveDevice.create({ nrIrqs: 8, unmergeable: w.unmergeable, native: w.f }), done: (d) => (d as FakeXiveDevice | undefined)?.close() }),
  },
  {
    name: 'FakePassthroughDevice.create',
    region: false,
    codes: ['E_SOURCE'],
    prepare: (w) => ({ run: () => FakePassthroughDevice.create({ nrIrqs: 4, id: 7, native: w.f }), done: (d) => (d as FakePassthroughDevice | undefined)?.close() }),
  },
];

/** What the operation does without faults: its calls and the table after it. */
interface Reference {
  readonly calls: readonly CallRecord[];
  readonly after: Backing[] | undefined;
}

function reference(sc: Scenario, unmergeable: boolean): Reference {
  const w = makeWorld(unmergeable, sc.region);
  try {
    const { run, done } = sc.prepare(w);
    const rec = w.f.record(run);
    if (!rec.ok) throw rec.error;
    done?.(rec.value);
    const after = w.esb && !w.esb.closed ? table(w.esb) : undefined;
    if (w.esb && !w.esb.closed) expectRegionIntact(w.esb, `${sc.name} without faults`);
    return { calls: rec.calls, after };
  } finally {
    disposeWorld(w);
  }
}

const describeFault = (s: FaultSpec): string => `${s.call} #${s.nth ?? 1} ${s.mode === 'hole' ? 'hole + ' : ''}${String(s.errno)}`;

const casesRun = { single: 0, hole: 0, restore: 0 };

/** Arm `faults`, run the operation once on a fresh world, check everything; return the world's error, if any. */
function runCase(sc: Scenario, unmergeable: boolean, ref: Reference, faults: FaultSpec[]): void {
  casesRun[faults.length > 1 ? 'restore' : faults[0]?.mode === 'hole' ? 'hole' : 'single']++;
  const what = `${sc.name} with ${faults.map(describeFault).join(' then ')}`;
  const fds = openFds();
  const w = makeWorld(unmergeable, sc.region);
  try {
    const before = w.esb ? table(w.esb) : undefined;
    const { run, done } = sc.prepare(w);
    for (const spec of faults) w.f.inject(spec);
    const rec = w.f.record(run);
    w.f.clear();
    expect(w.f.fired.length, `${what}: faults fired`).to.equal(faults.length);
    const [first, second] = w.f.fired;
    const mustFail = first?.spec.call !== 'close';
    if (rec.ok) {
      expect(mustFail, `${what}: succeeded`).to.equal(false);
      done?.(rec.value);
      if (ref.after && w.esb) expect(table(w.esb), `${what}: table after success`).to.deep.equal(ref.after);
      if (w.esb && !w.esb.closed) expectRegionIntact(w.esb, what);
      return;
    }
    done?.(undefined);
    const err = rec.error;
    expect(err, `${what}: ${String(err)}`).to.be.instanceOf(RemapError);
    expect(causeChain(err), `${what}: the injected error in the cause chain`).to.include(first?.error);
    expect(mustFail, `${what}: failed although only close(2) failed: ${(err as Error).message}`).to.equal(true);
    const code = (err as RemapError).code;
    // A failed restore degrades the region only where a page is really gone: where one of the two
    // failed mmaps had already unmapped its range (hole mode). Two clean failures leave it unchanged.
    const degradedExpected = second !== undefined && second.spec.call !== 'close' && faults.some((s) => s.mode === 'hole');
    if (degradedExpected) {
      expect(code, `${what}: ${(err as Error).message}`).to.equal('E_DEGRADED');
      expectDegraded(sc, w, before as Backing[], what, faults);
      return;
    }
    expect(sc.codes, `${what}: ${(err as Error).message}`).to.include(code);
    if (sc.name === 'close') {
      expect(w.esb?.closed).to.equal(true);
      expectRemapError(() => w.esb?.detach(1), 'E_CLOSED');
      return;
    }
    if (before && w.esb) {
      expect(w.esb.degraded, what).to.equal(null);
      expect(table(w.esb), `${what}: the table changed`).to.deep.equal(before);
      expectRegionIntact(w.esb, what);
    } else if (sc.name === 'EsbController.open') {
      expect(w.esb).to.equal(undefined);
      expect(realNative.readMaps().filter((m) => m.inode === w.ino), `${what}: a mapping left`).to.deep.equal([]);
    }
    // The failure changed nothing: the same operation now succeeds and ends where it should.
    const again = sc.prepare(w);
    const ok = w.f.record(again.run);
    expect(ok.ok, `${what}: the retry failed: ${ok.ok ? '' : String(ok.error)}`).to.equal(true);
    again.done?.(ok.ok ? ok.value : undefined);
    if (ref.after && w.esb) {
      expect(table(w.esb), `${what}: table after the retry`).to.deep.equal(ref.after);
      expectRegionIntact(w.esb, `${what}, retried`);
    }
  } finally {
    disposeWorld(w);
    expect(openFds(), `${what}: fds leaked`).to.equal(fds);
  }
}

/** A failed change whose restore failed too: degraded, exactly where, the rest intact, changes refused. */
function expectDegraded(sc: Scenario, w: World, before: Backing[], what: string, faults: FaultSpec[]): void {
  const esb = w.esb as EsbController;
  const d = esb.degraded;
  expect(d, `${what}: degraded`).to.not.equal(null);
  const { first, end } = d as NonNullable<typeof d>;
  const [from, to] = (sc.affected as NonNullable<Scenario['affected']>)(w.unmergeable);
  expect(first, `${what}: degraded ${first}..${end - 1} inside the restored range ${from}..${to - 1}`).to.be.within(from, to - 1);
  expect(end, what).to.be.within(first + 1, to);
  // Pages may be missing only inside the broken range. When both failures left holes (a kernel
  // that unmaps before failing), the hole is exactly the broken range.
  const holes = regionHoles(esb);
  for (const [a, b] of holes) expect(a >= first && b <= end, `${what}: hole ${a}..${b - 1} outside the broken ${first}..${end - 1}`).to.equal(true);
  if (faults.every((s) => s.mode === 'hole')) expect(holes, `${what}: the hole is the broken range`).to.deep.equal([[first, end]]);
  const outside = ALL.filter((i) => i < first || i >= end);
  expectBackingMatchesMemory(esb, outside);
  for (const i of outside) expect(esb.backingOf(i), `${what}: backingOf(${i})`).to.deep.equal(before[i]);
  for (const i of irqsOf(first, end)) expectRemapError(() => esb.backingOf(i), 'E_DEGRADED');
  const s = w.pt.pages(30);
  const refused = w.f.record(() => {
    expectRemapError(() => esb.attach(0, s), 'E_DEGRADED');
    expectRemapError(() => esb.attachRange(1, 1, s), 'E_DEGRADED');
    expectRemapError(() => esb.detach(10), 'E_DEGRADED');
    expectRemapError(() => esb.detachRange(0, NR), 'E_DEGRADED');
  });
  s.close();
  if (!refused.ok) throw refused.error;
  expect(refused.calls, `${what}: a refused change made system calls`).to.deep.equal([]);
}

describe('every step, every fault (FaultyNative over the real layer)', function () {
  after(function () {
    if (process.env.FAULTS_VERBOSE) console.log(`      fault cases: ${casesRun.single} errno, ${casesRun.hole} hole, ${casesRun.restore} with a failed restore`);
  });

  for (const unmergeable of [false, true]) {
    describe(`on a ${unmergeable ? 'never-merging' : 'merging'} device`, () => {
      for (const sc of scenarios) {
        describe(sc.name, () => {
          let ref: Reference;
          before(() => {
            ref = reference(sc, unmergeable);
          });

          it('makes the system calls we think it makes', () => {
            const mmaps = ref.calls.filter((c) => c.call === 'mmap').length;
            if (sc.affected || sc.name === 'EsbController.open') expect(mmaps, 'one mmap (invariant 4)').to.equal(1);
            if (sc.name === 'close') expect(ref.calls.filter((c) => c.call === 'munmap')).to.have.length(1);
            expect(ref.calls.length).to.be.greaterThan(0);
          });

          for (const errno of ERRNOS) {
            it(`fails cleanly with ${errno} at each of its system calls`, () => {
              for (const c of ref.calls) runCase(sc, unmergeable, ref, [{ call: c.call, nth: c.nth, errno }]);
            });
          }

          it('fails cleanly when a failed mmap has already unmapped the range (hole mode)', () => {
            const mmaps = ref.calls.filter((c) => c.call === 'mmap');
            for (const c of mmaps) runCase(sc, unmergeable, ref, [{ call: 'mmap', nth: c.nth, errno: 'ENOMEM', mode: 'hole' }]);
          });

          if (sc.affected) {
            it('degrades, exactly where, when the restore fails too (a second fault at each call of the restore)', () => {
              const opMmap = ref.calls.find((c) => c.call === 'mmap' && c.fixed) as CallRecord;
              for (const firstMode of ['fail', 'hole'] as const) {
                const firstFault: FaultSpec = { call: 'mmap', nth: opMmap.nth, errno: 'ENOMEM', mode: firstMode };
                // Record what the restore does after the op's mmap fails.
                const w = makeWorld(unmergeable);
                let restore: CallRecord[];
                try {
                  const { run, done } = sc.prepare(w);
                  w.f.inject(firstFault);
                  const rec = w.f.record(run);
                  done?.(undefined);
                  const failedAt = rec.calls.findIndex((c) => c.fault);
                  restore = rec.calls.slice(failedAt + 1);
                } finally {
                  disposeWorld(w);
                }
                expect(restore.filter((c) => c.call === 'mmap').length, 'the restore maps').to.be.greaterThan(0);
                for (const c of restore) {
                  runCase(sc, unmergeable, ref, [firstFault, { call: c.call, nth: c.nth, errno: 'EAGAIN' }]);
                  if (c.call === 'mmap') runCase(sc, unmergeable, ref, [firstFault, { call: 'mmap', nth: c.nth, errno: 'EINVAL', mode: 'hole' }]);
                }
              }
            });
          }
        });
      }
    });
  }
});

describe('FaultyNative', () => {
  it('fails exactly the nth call it was armed for, with a NativeError carrying the errno, and records every call', () => {
    const f = new FaultyNative();
    const fd = f.memfdCreate('faulty-test', MFD_CLOEXEC);
    try {
      f.inject({ call: 'fstat', nth: 2, errno: 'EAGAIN' });
      const rec = f.record(() => {
        f.fstat(fd);
        f.fstat(fd);
      });
      expect(rec.ok).to.equal(false);
      expect((rec as { error: unknown }).error).to.be.instanceOf(NativeError).and.include({ syscall: 'fstat', code: 'EAGAIN' });
      expect(rec.calls.map((c) => [c.call, c.nth, c.fault !== undefined])).to.deep.equal([['fstat', 1, false], ['fstat', 2, true]]);
      expect(f.pending).to.deep.equal([]);
      expect(f.counts.fstat).to.equal(2);
      expect(() => f.inject({ call: 'open', mode: 'hole' })).to.throw(/mmap only/);
    } finally {
      f.close(fd);
    }
  });

  it('in hole mode takes the old pages of the target range away before failing, as a kernel that fails MAP_FIXED late does', () => {
    const f = new FaultyNative();
    const dev = FakeXiveDevice.create({ nrIrqs: 8, native: f });
    const esb = EsbController.open(dev, { native: f });
    const bpi = esb.geometry.bytesPerIrq;
    try {
      f.inject({ call: 'mmap', errno: 'ENOMEM', mode: 'hole' });
      expect(() => f.mmap(esb.memslot.userspaceAddr + 2n * bpi, bpi, 3, 0x11, dev.fd, 2n * bpi)).to.throw(NativeError, /ENOMEM/);
      expect(regionHoles(esb)).to.deep.equal([[2, 3]]);
      expect(() => f.mmap(esb.memslot.userspaceAddr + 2n * bpi, bpi, 3, 0x11, dev.fd, 2n * bpi)).to.not.throw();
      expectStamps(esb);
    } finally {
      esb.close();
      dev.close();
    }
  });

  it('keeps its state per instance: a fault armed on one layer never fires on another', () => {
    const a = new FaultyNative();
    const b = new FaultyNative();
    a.inject({ call: 'dupCloexec', errno: 'EBADF' });
    const fd = b.dupCloexec(1);
    b.close(fd);
    expect(a.pending).to.have.length(1);
    expect(b.fired).to.deep.equal([]);
    expect(() => a.dupCloexec(1)).to.throw(NativeError, /EBADF/);
  });
});

describe('real faults through the public API leave the region intact', () => {
  for (const unmergeable of [false, true]) {
    describe(`on a ${unmergeable ? 'never-merging' : 'merging'} device`, () => {
      let dev: FakeXiveDevice;
      let pt: FakePassthroughDevice;
      let esb: EsbController;
      let fds: number;
      beforeEach(() => {
        fds = openFds();
        dev = FakeXiveDevice.create({ nrIrqs: NR, unmergeable });
        pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 4 });
        esb = EsbController.open(dev);
        const s = pt.pages(0, 3);
        esb.attachRange(20, 3, s);
        s.close();
      });
      afterEach(() => {
        expectRegionIntact(esb, 'after the case');
        esb.close();
        dev.close();
        pt.close();
        expect(openFds(), 'fds leaked').to.equal(fds);
      });
      const bpi = (): bigint => esb.geometry.bytesPerIrq;

      it('a source whose fd the caller closed before attach: attaches (the source holds a dup)', () => {
        const fd = realNative.dupCloexec(pt.fd);
        const src = PageSource.fromFd(fd, 5n * bpi(), 1, { name: 'early' });
        realNative.close(fd);
        esb.attach(40, src);
        src.close();
        expectStamps(esb, new Map([[20, 'pt4:0'], [21, 'pt4:1'], [22, 'pt4:2'], [40, 'pt4:5']]));
        expect(esb.detach(40)).to.equal(true);
      });

      const refused: [what: string, fd: () => number, message: RegExp][] = [
        ['an fd closed before PageSource.fromFd', () => { const fd = realNative.dupCloexec(pt.fd); realNative.close(fd); return fd; }, /EBADF/],
        ['an fd opened read-only', () => realNative.open(`/proc/self/fd/${pt.fd}`, O_RDONLY), /read-only/],
        ['a pipe (a FIFO opened read-write)', () => fifo(), /not a mappable file/],
        ['a directory', () => openSync(mkdtempSync(join(tmpdir(), 'xive-dir-')), 'r'), /not a mappable file/],
      ];
      for (const [what, makeFd, message] of refused) {
        it(`${what}: E_SOURCE, and nothing is mapped`, () => {
          const fd = makeFd();
          const mmaps = realNative.counts.mmap ?? 0;
          try {
            const err = expectRemapError(() => esb.attach(40, PageSource.fromFd(fd, 0)), 'E_SOURCE');
            expect(err.message).to.match(message);
          } finally {
            try { closeSync(fd); } catch { /* already closed */ }
          }
          expect(realNative.counts.mmap ?? 0).to.equal(mmaps);
        });
      }

      it('a memfd truncated after attach: detach still restores the IPI pages (the passthrough pages are never read: they would SIGBUS)', () => {
        const fd = realNative.memfdCreate('xive-truncated', MFD_CLOEXEC);
        try {
          realNative.ftruncate(fd, 4n * bpi());
          for (let irq = 0; irq < 4; irq++) for (let p = 0; p < esb.geometry.pagesPerIrq; p++) {
            realNative.pwrite(fd, Buffer.from(`mf:${irq}:${p}\0`), esbOffset(esb.geometry, irq, p as 0 | 1));
          }
          const src = PageSource.fromFd(fd, bpi(), 2, { name: 'mf', sizeIsFixed: true }); // a promise the test then breaks
          esb.attachRange(50, 2, src);
          src.close();
          expectStamps(esb, new Map([[50, 'mf:1'], [51, 'mf:2']]), [50, 51]);
          realNative.ftruncate(fd, 0n);
          expect(regionHoles(esb)).to.deep.equal([]);
          expectBackingMatchesMemory(esb, ALL.filter((i) => i < 50 || i > 51));
          expect(esb.detachRange(50, 2)).to.equal(2);
          expectStamps(esb, new Map([[20, 'pt4:0'], [21, 'pt4:1'], [22, 'pt4:2']]));
        } finally {
          realNative.close(fd);
        }
      });

      it('a source whose device was closed: attaches (sources hold a reference)', () => {
        const src = pt.pages(9, 2);
        const other = FakePassthroughDevice.create({ nrIrqs: 4, id: 6 });
        const lone = other.pages(3);
        other.close();
        esb.attachRange(30, 2, src);
        esb.attach(33, lone);
        src.close();
        lone.close();
        expectStamps(esb, new Map([[20, 'pt4:0'], [21, 'pt4:1'], [22, 'pt4:2'], [30, 'pt4:9'], [31, 'pt4:10'], [33, 'pt6:3']]));
        expect(esb.detachRange(30, 4)).to.equal(3);
      });
    });
  }
});

/** A FIFO opened read-write: a pipe with a path, so no second process is needed. */
function fifo(): number {
  const path = join(mkdtempSync(join(tmpdir(), 'xive-fifo-')), 'fifo');
  execFileSync('mkfifo', [path]);
  return openSync(path, 'r+');
}
