/**
 * `npm run bench`: the performance claims of xive-remap, measured side by side in one run.
 *
 * These machines are small and noisy, so every claim is a ratio of two things measured in the
 * same run, interleaved round by round, each round summarised by its median; absolute times are
 * printed only for context. This is a benchmark, not a timed test: it exits 0 whether or not a
 * target is met, and says which were (`targets` in `--json`).
 *
 *   overlayVsC          attach+detach through EsbController ÷ the same two mmap(MAP_FIXED) calls
 *                       from C (bench/overlay.c, built with `cc` into dist/bench/), both on a
 *                       memfd region whose pages are all populated, as a running guest has them;
 *                       a third column makes the two calls through the native layer without the
 *                       controller, to tell the FFI's share of the gap from the controller's
 *   syscallsPerOp       system calls of attach / detach / attachRange, counted by a proxy around the
 *                       native layer and by `realNative.counts`, and reads of /proc through node:fs
 *                       (must be 0); on a controller past its first change, which is shown apart
 *   rangeVsSingles      2048 single attaches ÷ one attachRange of 2048, on IPI pages the guest has
 *                       not touched (a freshly plugged MSI block); also shown with them populated
 *   approach2VsOverlay  with a real KVM guest: a change until the guest's first load sees it,
 *                       approach 2 (the interrupt's pages as their own memslot, deleted and
 *                       re-added) ÷ the overlay (one mmap, KVM told by its MMU notifiers)
 *   scale               open + 1,000 mixed operations on regions of 4Ki, 64Ki and 1Mi interrupts
 *                       (one plan, spread over each region): per-operation cost, open time, heap
 *                       growth (must follow runs, not nrIrqs)
 *   vmas                VMAs after 10,000 random operations and after detaching all, on a merging
 *                       and a never-merging backing; and the cost behind the controller's choice
 *                       of remapping the whole IPI gap on detach (non-merging, populated)
 *
 * Geometry: esbShift 13 unless said otherwise: two 4 KiB ESB pages per interrupt, which on an
 * x86 host is the same number of host pages per interrupt (two) as KVM's esbShift 17 (two 64 KiB
 * pages) on a 64 KiB-page POWER host.
 *
 * usage: node --expose-gc dist/bench/bench.js [--json] [--quick] [SECTION...]
 *   SECTION: --overlay --syscalls --range --kvm --scale --vmas (default: all)
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { arch, platform } from 'node:os';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { EsbController, type PageSource } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, expectedStamp, readStamp } from 'xive-remap/native-stubs';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';
import { MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, mapsIn, realNative, type IpiPages, type NativeLayer } from '../src/internal.js';

// ---------------------------------------------------------------- command line

const argv = process.argv.slice(2);
const JSON_OUT = argv.includes('--json');
const QUICK = argv.includes('--quick');
const SECTIONS = ['overlay', 'syscalls', 'range', 'kvm', 'scale', 'vmas'] as const;
type Section = (typeof SECTIONS)[number];
const chosen = SECTIONS.filter((s) => argv.includes(`--${s}`));
const unknown = argv.filter((a) => !['--json', '--quick', ...SECTIONS.map((s) => `--${s}`)].includes(a));
if (unknown.length > 0) {
  process.stderr.write(`bench: unknown argument(s) ${unknown.join(' ')}\nusage: bench [--json] [--quick] [${SECTIONS.map((s) => `--${s}`).join(' ')}]\n`);
  process.exit(2);
}
const runs = (s: Section): boolean => chosen.length === 0 || chosen.includes(s);
/** Scale a repetition count down for --quick. */
const reps = (n: number): number => (QUICK ? Math.max(3, Math.ceil(n / 3)) : n);

/** Progress goes to stderr, so stdout stays one JSON object with --json. */
function progress(msg: string): void {
  if (!JSON_OUT) process.stderr.write(`  … ${msg}\n`);
}

// ---------------------------------------------------------------- small tools

const ESB_SHIFT = 13;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Monotonic nanoseconds. */
const now = (): number => Number(process.hrtime.bigint());

function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

const round = (x: number, digits = 2): number => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
const us = (ns: number): number => round(ns / 1e3, 1);

/** A small seeded PRNG (mulberry32): the same operations every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A full garbage collection (node --expose-gc; else turned on here, as v8 allows). */
const gc: () => void = (() => {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  v8.setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

function heapUsed(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** Read every host page of [addr, addr+bytes): maps them all, as a running guest's loads have. */
function populate(addr: bigint, bytes: bigint): void {
  const chunk = 8n << 20n;
  for (let off = 0n; off < bytes; off += chunk) realNative.peek(addr + off, Number(bytes - off < chunk ? bytes - off : chunk));
}

/** Read one byte of every host page of [addr, addr+bytes): maps them, as overlay.c's touch() does. */
function touchPages(addr: bigint, bytes: bigint): void {
  const page = BigInt(realNative.pageSize);
  for (let off = 0n; off < bytes; off += page) realNative.peek(addr + off, 1);
}

function irqAddr(esb: EsbController, irq: number): bigint {
  return esb.memslot.userspaceAddr + BigInt(irq) * esb.geometry.bytesPerIrq;
}

/** VMAs inside the region, from /proc/self/maps (the bench reads it; the library must not). */
function regionVmas(esb: EsbController): number {
  const { userspaceAddr, size } = esb.memslot;
  return mapsIn(realNative.readMaps(), userspaceAddr, userspaceAddr + size).length;
}

/** The methods of a NativeLayer that are system calls (peek/poke are memcpy; claim/release bookkeeping). */
const SYSCALL_METHODS = new Set(['mmap', 'munmap', 'memfdCreate', 'ftruncate', 'fstat', 'dupCloexec', 'accessMode', 'open', 'close', 'pwrite', 'ioctl', 'readMaps']);

/** A native layer that counts every call made through it, by method. */
function countingNative(base: NativeLayer): { native: NativeLayer; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const native = new Proxy(base, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      return (...args: unknown[]): unknown => {
        calls.set(prop, (calls.get(prop) ?? 0) + 1);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { native, calls };
}

/**
 * Count reads of /proc made through node:fs by anyone in this process (the native layer's
 * readMaps included) while `fn` runs: the fs functions are wrapped, and the wrappers pushed into
 * the ESM bindings with syncBuiltinESMExports.
 */
function countProcAccess<T>(fn: () => T): { result: T; procAccesses: number } {
  const mod = fs as unknown as Record<string, unknown>;
  const names = ['readFileSync', 'openSync', 'readSync', 'readdirSync', 'readlinkSync', 'statSync'];
  const saved = new Map(names.map((n) => [n, mod[n]]));
  let procAccesses = 0;
  let depth = 0; // readFileSync calls openSync: count the outer call only
  for (const n of names) {
    const orig = mod[n] as (...a: unknown[]) => unknown;
    mod[n] = function (this: unknown, ...a: unknown[]): unknown {
      if (depth === 0 && String(a[0]).startsWith('/proc')) procAccesses++;
      depth++;
      try {
        return orig.apply(this, a);
      } finally {
        depth--;
      }
    };
  }
  syncBuiltinESMExports();
  try {
    return { result: fn(), procAccesses };
  } finally {
    for (const [n, f] of saved) mod[n] = f;
    syncBuiltinESMExports();
  }
}

// ---------------------------------------------------------------- results

interface Row {
  what: string;
  value: string;
  target: string;
  met: boolean | null;
}
const rows: Row[] = [];
const targets: Record<string, boolean | null> = {};
const notes: Record<string, string> = {};
const details: Record<string, unknown> = {};

function target(key: string, what: string, value: string, goal: string, met: boolean | null): void {
  targets[key] = met;
  rows.push({ what, value, target: goal, met });
}

// ---------------------------------------------------------------- 1. overlay vs C

/** Build bench/overlay.c with the system compiler, cached by content hash in dist/bench/. */
function buildOverlayC(): string {
  const src = `${ROOT}bench/overlay.c`;
  const text = fs.readFileSync(src);
  const bin = `${ROOT}dist/bench/overlay-${createHash('sha256').update(text).digest('hex').slice(0, 12)}`;
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(`${ROOT}dist/bench`, { recursive: true });
    const cc = spawnSync('cc', ['-O2', '-Wall', '-o', `${bin}.tmp`, src], { encoding: 'utf8' });
    if (cc.error) throw new Error(`cannot run the system compiler cc: ${cc.error.message}`);
    if (cc.status !== 0) throw new Error(`cc failed on bench/overlay.c: ${cc.stderr.trim()}`);
    fs.renameSync(`${bin}.tmp`, bin);
  }
  return bin;
}

interface CResult {
  median_ns: number;
}

function runOverlayC(bin: string, nrIrqs: number, bytesPerIrq: bigint, ptIrqs: number, cycles: number, extraVmas = 0): CResult {
  const r = spawnSync(bin, [String(nrIrqs), String(bytesPerIrq), String(ptIrqs), String(cycles), String(extraVmas)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${bin} failed: ${r.stderr || r.error?.message || `status ${r.status}`}`);
  return JSON.parse(r.stdout) as CResult;
}

interface OverlayRig {
  esb: EsbController;
  pt: FakePassthroughDevice;
  /** The bench's own handle on the IPI pages, for the raw (controller-less) batch. */
  ipi: IpiPages;
  close(): void;
}

function overlayRig(esbShift: number, nrIrqs: number, ptIrqs: number): OverlayRig {
  const dev = FakeXiveDevice.create({ nrIrqs, esbShift, stamp: false });
  const pt = FakePassthroughDevice.create({ nrIrqs: ptIrqs, id: 1, esbShift });
  const esb = EsbController.open(dev);
  const ipi = dev.openIpiPages();
  dev.close();
  populate(esb.memslot.userspaceAddr, esb.memslot.size);
  return {
    esb,
    pt,
    ipi,
    close() {
      ipi.close();
      esb.close();
      pt.close();
    },
  };
}

/**
 * The same two mmap(MAP_FIXED) calls as overlay.c, through the native layer (koffi) but without
 * the controller: splits the gap to C into the FFI's share and the controller's.
 */
function rawBatch(rig: OverlayRig, cycles: number): number {
  const { esb, pt, ipi } = rig;
  const bpi = esb.geometry.bytesPerIrq;
  const ns: number[] = [];
  const flags = MAP_SHARED | MAP_FIXED;
  for (let c = 0; c < cycles; c++) {
    const irq = c % esb.nrIrqs;
    const at = irqAddr(esb, irq);
    touchPages(at, bpi);
    const t0 = now();
    realNative.mmap(at, bpi, PROT_READ | PROT_WRITE, flags, pt.fd, BigInt(c % pt.nrIrqs) * bpi);
    ipi.withFd((fd) => realNative.mmap(at, bpi, PROT_READ | PROT_WRITE, flags, fd, ipi.offsetOf(irq)));
    ns.push(now() - t0);
  }
  return median(ns);
}

/**
 * The controller's own cost per attach+detach pair: the same pairs on a native layer whose
 * MAP_FIXED mmap returns at once (everything else real), mean ns over `cycles`.
 */
function controllerJsOnly(esbShift: number, nrIrqs: number, ptIrqs: number, cycles: number): number {
  const fast: NativeLayer = Object.create(realNative, {
    mmap: {
      value: (addr: bigint, len: bigint, prot: number, flags: number, fd: number, off: bigint): bigint =>
        flags & MAP_FIXED ? addr : realNative.mmap(addr, len, prot, flags, fd, off),
    },
  }) as NativeLayer;
  const dev = FakeXiveDevice.create({ nrIrqs, esbShift, stamp: false });
  const pt = FakePassthroughDevice.create({ nrIrqs: ptIrqs, id: 1, esbShift });
  const esb = EsbController.open(dev, { native: fast });
  try {
    const sources = Array.from({ length: ptIrqs }, (_, i) => pt.pages(i));
    const pair = (c: number): void => {
      esb.attach(c % nrIrqs, sources[c % ptIrqs] as PageSource);
      esb.detach(c % nrIrqs);
    };
    for (let c = 0; c < cycles; c++) pair(c); // JIT warm-up
    const t0 = now();
    for (let c = 0; c < cycles; c++) pair(c);
    const ns = (now() - t0) / cycles;
    for (const s of sources) s.close();
    return ns;
  } finally {
    esb.close();
    dev.close();
    pt.close();
  }
}

/** Median ns of `cycles` attach+detach pairs, each on freshly populated IPI pages (exactly what overlay.c does). */
function overlayBatch(rig: OverlayRig, cycles: number): number {
  const { esb, pt } = rig;
  const bpi = esb.geometry.bytesPerIrq;
  const ns: number[] = [];
  for (let c = 0; c < cycles; c++) {
    const irq = c % esb.nrIrqs;
    const source = pt.pages(c % pt.nrIrqs);
    touchPages(irqAddr(esb, irq), bpi);
    const t0 = now();
    esb.attach(irq, source);
    esb.detach(irq);
    ns.push(now() - t0);
    source.close();
  }
  return median(ns);
}

function benchOverlayVsC(): void {
  progress('overlayVsC: EsbController attach+detach vs two mmap(MAP_FIXED) calls from C');
  let bin: string;
  try {
    bin = buildOverlayC();
  } catch (e) {
    notes.overlayVsC = (e as Error).message;
    details.overlayVsC = null;
    target('overlayVsC', 'attach+detach ÷ C mmap pair', 'n/a', '≤ 1.25', null);
    return;
  }
  const nrIrqs = 256;
  const ptIrqs = 64;
  const cycles = 400;
  const rounds = reps(11);
  const shifts = [ESB_SHIFT, 17];
  const out: Record<string, unknown> = {};
  let primary = NaN;
  for (const shift of shifts) {
    const rig = overlayRig(shift, nrIrqs, ptIrqs);
    try {
      for (let i = 0; i < 4; i++) {
        overlayBatch(rig, cycles); // JIT warm-up
        rawBatch(rig, cycles);
      }
      const kinds = ['controller', 'koffi', 'c', 'cVmas'] as const;
      const t: Record<(typeof kinds)[number], number[]> = { controller: [], koffi: [], c: [], cVmas: [] };
      // Context, not the target: the C program with as many VMAs as this process has.
      const processVmas = realNative.readMaps().length;
      const ratios: number[] = [];
      const ffi: number[] = [];
      for (let r = 0; r < rounds; r++) {
        // Rotate the order, so drift in the machine's load hits all three alike.
        const got: Partial<Record<(typeof kinds)[number], number>> = {};
        for (let k = 0; k < kinds.length; k++) {
          const kind = kinds[(r + k) % kinds.length] as (typeof kinds)[number];
          got[kind] =
            kind === 'controller'
              ? overlayBatch(rig, cycles)
              : kind === 'koffi'
                ? rawBatch(rig, cycles)
                : runOverlayC(bin, nrIrqs, rig.esb.geometry.bytesPerIrq, ptIrqs, cycles, kind === 'cVmas' ? processVmas : 0).median_ns;
        }
        for (const kind of kinds) t[kind].push(got[kind] as number);
        ratios.push((got.controller as number) / (got.c as number));
        ffi.push((got.koffi as number) / (got.c as number));
      }
      const ratio = median(ratios);
      if (shift === ESB_SHIFT) primary = ratio;
      out[`esbShift${shift}`] = {
        hostPagesPerIrq: Number(rig.esb.geometry.bytesPerIrq / BigInt(realNative.pageSize)),
        controllerUs: us(median(t.controller)),
        koffiOnlyUs: us(median(t.koffi)),
        cUs: us(median(t.c)),
        ratio: round(ratio),
        koffiOnlyVsC: round(median(ffi)),
        cWithProcessVmas: { vmas: processVmas, cUs: us(median(t.cVmas)), ratio: round(median(t.controller) / median(t.cVmas)) },
        controllerJsUs: us(controllerJsOnly(shift, nrIrqs, ptIrqs, cycles * 10)),
        roundRatios: ratios.map((x) => round(x)),
      };
    } finally {
      rig.close();
    }
  }
  details.overlayVsC = { nrIrqs, cyclesPerRound: cycles, rounds, ...out };
  const other = out.esbShift17 as { ratio: number } | undefined;
  target('overlayVsC', 'attach+detach ÷ C mmap pair', `${round(primary)}× (esbShift 17: ${other?.ratio ?? 'n/a'}×)`, '≤ 1.25', primary <= 1.25);
  results.overlayVsC = round(primary);
}

// ---------------------------------------------------------------- 2. system calls per operation

function benchSyscalls(): void {
  progress('syscallsPerOp: counting the native layer');
  const { native, calls } = countingNative(realNative);
  const dev = FakeXiveDevice.create({ nrIrqs: 4096, esbShift: ESB_SHIFT });
  const pt = FakePassthroughDevice.create({ nrIrqs: 64, id: 1, esbShift: ESB_SHIFT });
  const snapshot = (): { proxy: Map<string, number>; real: Record<string, number> } => ({ proxy: new Map(calls), real: { ...realNative.counts } });
  const delta = (before: ReturnType<typeof snapshot>): { syscalls: number; byCall: Record<string, number>; realCounts: number } => {
    const byCall: Record<string, number> = {};
    let syscalls = 0;
    for (const [k, v] of calls) {
      const d = v - (before.proxy.get(k) ?? 0);
      if (d > 0 && SYSCALL_METHODS.has(k)) {
        byCall[k] = d;
        syscalls += d;
      }
    }
    let realCounts = 0;
    for (const [k, v] of Object.entries(realNative.counts)) realCounts += v - (before.real[k] ?? 0);
    return { syscalls, byCall, realCounts };
  };
  const measure = <T>(fn: () => T): { syscalls: number; byCall: Record<string, number>; realCounts: number; procAccesses: number; result: T } => {
    const before = snapshot();
    const { result, procAccesses } = countProcAccess(fn);
    return { ...delta(before), procAccesses, result };
  };

  const opened = measure(() => EsbController.open(dev, { native }));
  const esb = opened.result;
  // The first change after open is measured on its own: anything lazy in the controller shows here.
  const s0 = pt.pages(1);
  const firstAttach = measure(() => esb.attach(7, s0));
  const firstDetach = measure(() => esb.detach(7));
  s0.close();
  const s1 = pt.pages(3);
  const s16 = pt.pages(16, 16);
  const attach = measure(() => esb.attach(42, s1));
  const detach = measure(() => esb.detach(42));
  const detachIpi = measure(() => esb.detach(42));
  const attachRange = measure(() => esb.attachRange(100, 16, s16));
  const detachRange = measure(() => esb.detachRange(100, 16));
  s1.close();
  s16.close();
  const check = [42, ...Array.from({ length: 16 }, (_, i) => 100 + i)].every((irq) => readStamp(esb, irq) === `ipi:${irq}:0`);
  esb.close();

  // The never-merging fake: the controller still issues one mmap; the fake itself opens a fresh
  // file description (/proc/self/fd/N) around each IPI mapping, as its way of defeating merges.
  const um = FakeXiveDevice.create({ nrIrqs: 4096, esbShift: ESB_SHIFT, unmergeable: true });
  const esb2 = EsbController.open(um, { native });
  const s2w = pt.pages(1);
  esb2.attach(7, s2w); // past the first change, as above
  esb2.detach(7);
  s2w.close();
  const s2 = pt.pages(3);
  const umAttach = measure(() => esb2.attach(42, s2));
  const umDetach = measure(() => esb2.detach(42));
  s2.close();
  esb2.close();
  um.close();
  dev.close();
  pt.close();

  const strip = (m: { syscalls: number; byCall: Record<string, number>; realCounts: number; procAccesses: number }): object => ({
    syscalls: m.syscalls,
    byCall: m.byCall,
    realNativeCounts: m.realCounts,
    procAccesses: m.procAccesses,
  });
  results.syscallsPerOp = { attach: attach.syscalls, detach: detach.syscalls, attachRange: attachRange.syscalls };
  details.syscallsPerOp = {
    note: 'attach / detach / attachRange are measured on a controller that has made one change already; firstAttach is the first change after open',
    open: strip(opened),
    firstAttach: strip(firstAttach),
    firstDetach: strip(firstDetach),
    attach: strip(attach),
    detach: strip(detach),
    detachOfIpi: strip(detachIpi),
    attachRange: strip(attachRange),
    detachRange: strip(detachRange),
    nonMerging: { attach: strip(umAttach), detach: strip(umDetach), note: 'realNativeCounts includes the fake device opening /proc/self/fd/N for a fresh file description (its emulation of VM_PFNMAP never merging); the controller issues the one mmap' },
    stampsAfter: check,
  };
  const ops = [attach, detach, attachRange];
  const procFree = [...ops, detachIpi, detachRange, umAttach, umDetach].every((m) => m.procAccesses === 0);
  const ones = ops.every((m) => m.syscalls === 1 && m.realCounts === 1 && m.byCall.mmap === 1);
  target(
    'syscallsPerOp',
    'syscalls attach / detach / attachRange',
    `${attach.syscalls} / ${detach.syscalls} / ${attachRange.syscalls}, /proc reads ${ops.reduce((n, m) => n + m.procAccesses, 0)}`,
    '1 / 1 / 1, no /proc',
    ones && procFree && detachIpi.syscalls === 0,
  );
  const firstCalls = Object.entries(firstAttach.byCall).map(([k, v]) => `${k}${v > 1 ? `×${v}` : ''}`).join(' + ');
  target('firstChangeSyscalls', 'first attach after open', `${firstAttach.syscalls} (${firstCalls}), /proc reads ${firstAttach.procAccesses}`, '1, no /proc', firstAttach.syscalls === 1 && firstAttach.procAccesses === 0);
}

// ---------------------------------------------------------------- 3. attachRange vs singles

function benchRange(): void {
  progress('rangeVsSingles: attachRange(2048) vs 2048 attaches');
  const count = 2048;
  const first = 1024;
  const dev = FakeXiveDevice.create({ nrIrqs: 4096, esbShift: ESB_SHIFT, stamp: false });
  const pt = FakePassthroughDevice.create({ nrIrqs: count, id: 1, esbShift: ESB_SHIFT });
  const esb = EsbController.open(dev);
  dev.close();
  const bpi = esb.geometry.bytesPerIrq;
  const span = BigInt(count) * bpi;
  const range = (populated: boolean): number => {
    if (populated) populate(irqAddr(esb, first), span);
    const source = pt.pages(0, count);
    const t0 = now();
    esb.attachRange(first, count, source);
    const t = now() - t0;
    source.close();
    esb.detachRange(first, count);
    return t;
  };
  const singles = (populated: boolean): number => {
    if (populated) populate(irqAddr(esb, first), span);
    const sources: PageSource[] = Array.from({ length: count }, (_, i) => pt.pages(i));
    const t0 = now();
    for (let i = 0; i < count; i++) esb.attach(first + i, sources[i] as PageSource);
    const t = now() - t0;
    for (const s of sources) s.close();
    esb.detachRange(first, count);
    return t;
  };
  const out: Record<string, unknown> = {};
  let primary = NaN;
  try {
    range(true);
    singles(true); // warm-up
    for (const populated of [true, false]) {
      const r: number[] = [];
      const s: number[] = [];
      const ratios: number[] = [];
      for (let i = 0; i < reps(7); i++) {
        const a = i % 2 === 0 ? range(populated) : NaN;
        const b = singles(populated);
        const c = i % 2 === 0 ? a : range(populated);
        r.push(c);
        s.push(b);
        ratios.push(b / c);
      }
      const ratio = median(ratios);
      if (!populated) primary = ratio;
      out[populated ? 'populated' : 'unpopulated'] = { rangeUs: us(median(r)), singlesUs: us(median(s)), perSingleUs: us(median(s) / count), ratio: round(ratio, 1) };
    }
  } finally {
    esb.close();
    pt.close();
  }
  details.rangeVsSingles = {
    count,
    ...out,
    note: 'headline: unpopulated IPI pages, as at the hot-plug of an MSI block (the guest has never loaded from interrupts it was not given yet). populated: every IPI page mapped first; both sides then pay the same kernel work of zapping 2 × 2048 PTEs, which bounds the ratio whatever the library does',
  };
  results.rangeVsSingles = round(primary, 1);
  const pop = out.populated as { ratio: number };
  target('rangeVsSingles', `2048 attaches ÷ attachRange(2048)`, `${round(primary, 1)}× (IPI pages populated: ${pop.ratio}×)`, '≥ 50×', primary >= 50);
}

// ---------------------------------------------------------------- 4. approach 2 vs overlay, in a KVM guest

/** The little-endian u32 the guest loads from a page stamped `text`. */
const word = (text: string): number => Buffer.from(`${text}\0\0\0\0`, 'latin1').readUInt32LE(0);

async function benchKvm(): Promise<void> {
  progress('approach2VsOverlay: a real KVM guest');
  const unusable = KvmX86Guest.usable();
  if (unusable !== null) {
    notes.approach2VsOverlay = unusable;
    results.approach2VsOverlay = null;
    target('approach2VsOverlay', 'guest sees change: approach 2 ÷ overlay', 'n/a', '≥ 2×', null);
    return;
  }
  const irq = 5;
  const hostIrq = 3;
  const dev = FakeXiveDevice.create({ nrIrqs: 64, esbShift: ESB_SHIFT });
  const pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 1, esbShift: ESB_SHIFT });
  const esb = EsbController.open(dev);
  dev.close();
  const bpi = esb.geometry.bytesPerIrq;
  const offset = BigInt(irq) * bpi;
  const ipiWord = word(`ipi:${irq}`);
  const ptWord = word(`pt1:${hostIrq}`);
  // Approach 2's host side: the device's pages mapped once at an address of their own (untimed,
  // as a VMM would at device-add), and the IPI pages of the interrupt at theirs (the region).
  const ptAddr = realNative.mmap(0n, bpi, PROT_READ | PROT_WRITE, MAP_SHARED, pt.fd, BigInt(hostIrq) * bpi);
  const ipiAddr = irqAddr(esb, irq);
  const undo: (() => void)[] = [() => realNative.munmap(ptAddr, bpi), () => esb.close(), () => pt.close()];
  try {
    const overlayGuest = KvmX86Guest.create({ memslot: esb.memslot });
    undo.unshift(() => overlayGuest.close());
    // Approach 2: the interrupt's pages are a memslot of their own; a change deletes and re-adds it.
    const a2Guest = KvmX86Guest.create({ memslot: { userspaceAddr: ipiAddr, size: bpi } });
    undo.unshift(() => a2Guest.close());
    const moveSlot = (addr: bigint): void => a2Guest.remapRegion(addr);
    const expect = (got: number, want: number, what: string): void => {
      if (got !== want) throw new Error(`${what}: the guest loaded 0x${got.toString(16)}, want 0x${want.toString(16)}`);
    };
    const overlayChange = (): number => {
      const source = pt.pages(hostIrq);
      const t0 = now();
      esb.attach(irq, source);
      const v1 = overlayGuest.read32(offset);
      const t1 = now();
      source.close();
      expect(v1, ptWord, 'overlay attach');
      const t2 = now();
      esb.detach(irq);
      const v2 = overlayGuest.read32(offset);
      const t3 = now();
      expect(v2, ipiWord, 'overlay detach');
      return (t1 - t0 + (t3 - t2)) / 2;
    };
    const approach2Change = (): number => {
      const t0 = now();
      moveSlot(ptAddr);
      const v1 = a2Guest.read32(0n);
      const t1 = now();
      expect(v1, ptWord, 'approach 2 attach');
      const t2 = now();
      moveSlot(ipiAddr);
      const v2 = a2Guest.read32(0n);
      const t3 = now();
      expect(v2, ipiWord, 'approach 2 detach');
      return (t1 - t0 + (t3 - t2)) / 2;
    };
    const idleLoad = (): number => {
      const t0 = now();
      overlayGuest.read32(offset);
      return now() - t0;
    };
    expect(overlayGuest.read32(offset), ipiWord, 'first load');
    expect(a2Guest.read32(0n), ipiWord, 'first load (approach 2)');
    for (let i = 0; i < 20; i++) {
      overlayChange();
      approach2Change();
    }
    const o: number[] = [];
    const a: number[] = [];
    const idle: number[] = [];
    const ratios: number[] = [];
    const rounds = reps(15);
    const perRound = 20;
    for (let r = 0; r < rounds; r++) {
      const ro: number[] = [];
      const ra: number[] = [];
      for (let i = 0; i < perRound; i++) {
        if ((r + i) % 2 === 0) {
          ro.push(overlayChange());
          ra.push(approach2Change());
        } else {
          ra.push(approach2Change());
          ro.push(overlayChange());
        }
        idle.push(idleLoad());
      }
      o.push(median(ro));
      a.push(median(ra));
      ratios.push(median(ra) / median(ro));
    }
    const ratio = median(ratios);
    results.approach2VsOverlay = round(ratio);
    details.approach2VsOverlay = {
      overlayUs: us(median(o)),
      approach2Us: us(median(a)),
      idleLoadUs: us(median(idle)),
      ratioNetOfIdleLoad: round((median(a) - median(idle)) / (median(o) - median(idle))),
      rounds,
      changesPerRound: perRound,
      note: 'each figure: one change (attach or detach) until the guest\'s next load returns the new page, including that KVM_RUN; approach 2 is given its best case (one small slot, the device pages already mapped)',
      memslotMover: 'KvmX86Guest.remapRegion: KVM_SET_USER_MEMORY_REGION size 0, then re-added at the same guest address',
    };
    target('approach2VsOverlay', 'guest sees change: approach 2 ÷ overlay', `${round(ratio)}× (overlay ${us(median(o))} µs, approach 2 ${us(median(a))} µs)`, '≥ 2×', ratio >= 2);
  } finally {
    // Best effort: everything is released; a failure is reported, not thrown over the result.
    for (const f of undo) {
      try {
        f();
      } catch (e) {
        notes.approach2VsOverlayTeardown ??= (e as Error).message;
      }
    }
  }
}

// ---------------------------------------------------------------- 5. scale to 1Mi interrupts

type Op =
  | { kind: 'attach'; irq: number; src: number }
  | { kind: 'attachRange'; irq: number; count: number; src: number }
  | { kind: 'detach'; irq: number }
  | { kind: 'detachRange'; irq: number; count: number };

/** A random set of attached interrupts with O(1) pick and remove. */
class IrqSet {
  readonly list: number[] = [];
  readonly #at = new Map<number, number>();
  has(irq: number): boolean {
    return this.#at.has(irq);
  }
  add(irq: number): void {
    if (this.#at.has(irq)) return;
    this.#at.set(irq, this.list.length);
    this.list.push(irq);
  }
  delete(irq: number): void {
    const i = this.#at.get(irq);
    if (i === undefined) return;
    const last = this.list.pop() as number;
    this.#at.delete(irq);
    if (last !== irq) {
      this.list[i] = last;
      this.#at.set(last, i);
    }
  }
  pick(rand: () => number): number {
    return this.list[Math.floor(rand() * this.list.length)] as number;
  }
}

/**
 * `n` mixed operations over [0, nrIrqs): attach (35%), attachRange of 2–32 (15%), detach of an
 * attached interrupt (35%, which may split a range), detachRange of 1–64 around one (15%).
 * Generated against a model, so every operation is valid; the same seed gives the same mix. No
 * range crosses a multiple of `block`, so `spread` can move blocks apart without changing the plan.
 */
function mixedOps(nrIrqs: number, ptIrqs: number, n: number, seed: number, block = nrIrqs): { ops: Op[]; touched: number[] } {
  const rand = prng(seed);
  const on = new IrqSet();
  const touched = new Set<number>();
  const ops: Op[] = [];
  const free = (first: number, count: number): boolean => {
    for (let i = first; i < first + count; i++) if (on.has(i)) return false;
    return true;
  };
  while (ops.length < n) {
    const r = rand();
    if (on.list.length === 0 || r < 0.5) {
      const count = r < 0.15 ? 2 + Math.floor(rand() * 31) : 1;
      let placed = false;
      for (let tries = 0; tries < 32 && !placed; tries++) {
        const irq = Math.floor(rand() * (nrIrqs - count + 1));
        if (Math.floor(irq / block) !== Math.floor((irq + count - 1) / block) || !free(irq, count)) continue;
        const src = Math.floor(rand() * (ptIrqs - count + 1));
        ops.push(count === 1 ? { kind: 'attach', irq, src } : { kind: 'attachRange', irq, count, src });
        for (let i = irq; i < irq + count; i++) {
          on.add(i);
          touched.add(i);
        }
        placed = true;
      }
      if (placed || on.list.length === 0) continue;
    }
    const irq = on.pick(rand);
    if (rand() < 0.7) {
      ops.push({ kind: 'detach', irq });
      on.delete(irq);
    } else {
      const first = Math.max(irq - (irq % block), irq - Math.floor(rand() * 8));
      const count = Math.min(1 + Math.floor(rand() * 64), block - (first % block), nrIrqs - first);
      ops.push({ kind: 'detachRange', irq: first, count });
      for (let i = first; i < first + count; i++) on.delete(i);
    }
  }
  return { ops, touched: [...touched] };
}

/**
 * The same plan over `factor` times as many interrupts: block b of the plan moves to b × factor
 * blocks, so the operations reach across the whole region, with the same runs, splits and merges.
 */
function spread(plan: { ops: Op[]; touched: number[] }, block: number, factor: number): { ops: Op[]; touched: number[] } {
  const at = (irq: number): number => Math.floor(irq / block) * block * factor + (irq % block);
  return { ops: plan.ops.map((op) => ({ ...op, irq: at(op.irq) })), touched: plan.touched.map(at) };
}

function apply(esb: EsbController, pt: FakePassthroughDevice, op: Op): void {
  switch (op.kind) {
    case 'attach': {
      const s = pt.pages(op.src);
      esb.attach(op.irq, s);
      s.close();
      return;
    }
    case 'attachRange': {
      const s = pt.pages(op.src, op.count);
      esb.attachRange(op.irq, op.count, s);
      s.close();
      return;
    }
    case 'detach':
      esb.detach(op.irq);
      return;
    case 'detachRange':
      esb.detachRange(op.irq, op.count);
  }
}

/** Stamps of `irqs` read through the region match backingOf: the numbers are of a correct overlay. */
function stampsMatch(esb: EsbController, irqs: readonly number[]): boolean {
  return irqs.every((irq) => readStamp(esb, irq, 0) === expectedStamp(esb, irq, 0) && readStamp(esb, irq, 1) === expectedStamp(esb, irq, 1));
}

interface ScaleSample {
  openUs: number;
  /** Mean µs per operation without the slowest 2% (preemption by other processes on a 2-CPU machine; the one /proc read of the first change). */
  perOpUs: number;
  perOpMedianUs: number;
  perOpMeanUs: number;
  heapOpen: number;
  heapOps: number;
  runs: number;
  verified: boolean;
  /** /proc/self/maps reads the controller made during the operations. */
  procReads: number;
}

function benchScale(): void {
  progress('scale: 4Ki / 64Ki / 1Mi interrupts, 1,000 mixed operations each');
  const sizes = [4096, 65536, 1 << 20];
  const nOps = 1000;
  const ptIrqs = 4096;
  const pt = FakePassthroughDevice.create({ nrIrqs: ptIrqs, id: 1, esbShift: ESB_SHIFT });
  // One plan, made on the smallest region and spread over the others: every size sees the same
  // operations (same runs, splits and merges), reaching across its whole region.
  const block = 64;
  const base = mixedOps(4096, ptIrqs, nOps, 0x5eed, block);
  const plans = new Map(sizes.map((n) => [n, spread(base, block, n / 4096)]));
  const samples = new Map<number, ScaleSample[]>(sizes.map((n) => [n, []]));
  const one = (n: number): ScaleSample => {
    const plan = plans.get(n) as { ops: Op[]; touched: number[] };
    const dev = FakeXiveDevice.create({ nrIrqs: n, esbShift: ESB_SHIFT, stamp: false });
    for (const irq of plan.touched) dev.stampIrq(irq);
    const h0 = heapUsed();
    const t0 = now();
    const esb = EsbController.open(dev);
    const openNs = now() - t0;
    dev.close();
    const h1 = heapUsed();
    const reads0 = realNative.counts.readMaps ?? 0;
    const each: number[] = [];
    const t1 = now();
    for (const op of plan.ops) {
      const t = now();
      apply(esb, pt, op);
      each.push(now() - t);
    }
    const opsNs = now() - t1;
    const procReads = (realNative.counts.readMaps ?? 0) - reads0;
    const h2 = heapUsed();
    const runs = esb.stats().runs;
    const verified = stampsMatch(esb, plan.touched.slice(0, 2000));
    esb.close();
    const kept = [...each].sort((a, b) => a - b).slice(0, Math.ceil(each.length * 0.98));
    const trimmed = kept.reduce((a, b) => a + b, 0) / kept.length;
    return { openUs: openNs / 1e3, perOpUs: trimmed / 1e3, perOpMedianUs: median(each) / 1e3, perOpMeanUs: opsNs / nOps / 1e3, heapOpen: h1 - h0, heapOps: h2 - h0, runs, verified, procReads };
  };
  try {
    for (const n of sizes) one(n); // warm-up
    const rounds = reps(9);
    for (let r = 0; r < rounds; r++) {
      // Rotate the order, so no size always runs first after a GC or last on a warm cache.
      for (let k = 0; k < sizes.length; k++) {
        const n = sizes[(r + k) % sizes.length] as number;
        samples.get(n)?.push(one(n));
      }
    }
  } finally {
    pt.close();
  }
  const summary: Record<string, unknown> = {};
  const med = (n: number, f: (s: ScaleSample) => number): number => median((samples.get(n) ?? []).map(f));
  for (const n of sizes) {
    const s = samples.get(n) ?? [];
    summary[label(n)] = {
      nrIrqs: n,
      openUs: round(med(n, (x) => x.openUs), 1),
      perOpUs: round(med(n, (x) => x.perOpUs)),
      perOpMedianUs: round(med(n, (x) => x.perOpMedianUs)),
      perOpMeanUs: round(med(n, (x) => x.perOpMeanUs)),
      heapAfterOpenBytes: Math.round(med(n, (x) => x.heapOpen)),
      heapAfterOpsBytes: Math.round(med(n, (x) => x.heapOps)),
      runs: s[0]?.runs,
      procReadsPer1000Ops: s[0]?.procReads,
      stampsVerified: s.every((x) => x.verified),
    };
  }
  // Per-op ratio from paired rounds: each round ran all three sizes back to back.
  const small = samples.get(4096) ?? [];
  const big = samples.get(1 << 20) ?? [];
  const ratio = median(big.map((b, i) => b.perOpUs / (small[i]?.perOpUs ?? NaN)));
  const ratioMedian = median(big.map((b, i) => b.perOpMedianUs / (small[i]?.perOpMedianUs ?? NaN)));
  const ratioMean = median(big.map((b, i) => b.perOpMeanUs / (small[i]?.perOpMeanUs ?? NaN)));
  const heapGap = med(1 << 20, (x) => x.heapOps) - med(4096, (x) => x.heapOps);
  const openGap = med(1 << 20, (x) => x.heapOpen) - med(4096, (x) => x.heapOpen);
  const runsAt = (summary[label(4096)] as { runs: number }).runs;
  // Memory must follow runs, not nrIrqs: 256× more interrupts may not cost a byte per interrupt.
  const heapFlat = Math.abs(heapGap) < (1 << 20) / 8 && Math.abs(openGap) < (1 << 20) / 8;
  results.scale = { perOpRatio1Mi4Ki: round(ratio), perOpRatioOfMedians: round(ratioMedian), perOpRatioOfMeans: round(ratioMean), heapGapBytes1Mi4Ki: Math.round(heapGap), heapOpenGapBytes1Mi4Ki: Math.round(openGap), runsAfterOps: runsAt, ...summary };
  const verified = sizes.every((n) => (summary[label(n)] as { stampsVerified: boolean }).stampsVerified);
  target('scalePerOp', 'per-op cost 1Mi ÷ 4Ki', `${round(ratio)}× (${(summary[label(4096)] as { perOpUs: number }).perOpUs} → ${(summary[label(1 << 20)] as { perOpUs: number }).perOpUs} µs/op)`, '≤ 1.2', ratio <= 1.2 && verified);
  target('scaleHeap', 'heap 1Mi − 4Ki (open / +1,000 ops)', `${kib(openGap)} / ${kib(heapGap)} (${runsAt} runs: ${kib(med(4096, (x) => x.heapOps))} at 4Ki)`, '< 1 bit per irq', heapFlat);
  const open = sizes.map((n) => (summary[label(n)] as { openUs: number }).openUs);
  rows.push({ what: 'open 4Ki / 64Ki / 1Mi irqs', value: `${open.join(' / ')} µs`, target: 'report', met: null });
  details.scale = { operations: nOps, rounds: reps(9), note: 'perOpUs: mean of the fastest 98% of the operations of a round (the slowest 2% are preemptions on this shared 2-CPU machine, 1-40 ms each, and the first change\'s /proc read); medians over rounds. heap: v8 heapUsed after two full GCs, relative to before open; the op list and fakes exist before the first reading' };
}

function label(n: number): string {
  return n >= 1 << 20 ? `${n >> 20}Mi` : `${n >> 10}Ki`;
}

function kib(bytes: number): string {
  return `${round(bytes / 1024, 1)} KiB`;
}

// ---------------------------------------------------------------- 6. VMAs

interface VmaResult {
  vmas: number;
  runs: number;
  bound: number;
  worstDuringOps: { vmas: number; runs: number; afterOp: number } | null;
  afterDetachAll: number;
  stampsVerified: boolean;
  /** /proc/self/maps reads the controller made during the operations (the bench's own are not counted). */
  procReadsDuringOps: number;
}

function vmaRun(unmergeable: boolean, nrIrqs: number, ptIrqs: number, nOps: number): VmaResult {
  const dev = FakeXiveDevice.create({ nrIrqs, esbShift: ESB_SHIFT, unmergeable });
  const pt = FakePassthroughDevice.create({ nrIrqs: ptIrqs, id: 2, esbShift: ESB_SHIFT });
  const { native, calls } = countingNative(realNative);
  const esb = EsbController.open(dev, { native });
  dev.close();
  calls.delete('readMaps'); // open reads /proc/self/maps once for the VMA budget; count the operations' reads only
  const { ops } = mixedOps(nrIrqs, ptIrqs, nOps, unmergeable ? 0xbad : 0x600d);
  let worst: VmaResult['worstDuringOps'] = null;
  try {
    ops.forEach((op, i) => {
      apply(esb, pt, op);
      if (i % 250 === 249) {
        const vmas = regionVmas(esb);
        const runs = esb.stats().runs;
        if (vmas > 2 * runs + 1 && (!worst || vmas - 2 * runs > worst.vmas - 2 * worst.runs)) worst = { vmas, runs, afterOp: i + 1 };
      }
    });
    const procReadsDuringOps = calls.get('readMaps') ?? 0;
    const vmas = regionVmas(esb);
    const runs = esb.stats().runs;
    const sample = Array.from({ length: 512 }, (_, i) => (i * 7919) % nrIrqs);
    const stampsVerified = stampsMatch(esb, sample);
    // Detach every run on its own, in a scrambled order: each detach must keep the bound.
    const rand = prng(7);
    const all = esb.runs().sort(() => rand() - 0.5);
    for (const r of all) esb.detachRange(r.first, r.count);
    return { vmas, runs, bound: 2 * runs + 1, worstDuringOps: worst, afterDetachAll: regionVmas(esb), stampsVerified: stampsVerified && stampsMatch(esb, sample), procReadsDuringOps };
  } finally {
    esb.close();
    pt.close();
  }
}

/**
 * The controller's choice on never-merging backings, measured: with every page populated, a
 * detach that remaps the whole IPI gap around the interrupt (what the controller does, keeping
 * the gap one VMA) versus remapping only the interrupt's own pages (cheaper, but leaves the gap in
 * three VMAs with no passthrough run: the VMA bound broken).
 */
function gapCost(nrIrqs: number): Record<string, number> {
  const dev = FakeXiveDevice.create({ nrIrqs, esbShift: ESB_SHIFT, unmergeable: true, stamp: false });
  const pt = FakePassthroughDevice.create({ nrIrqs: 1, id: 3, esbShift: ESB_SHIFT });
  const esb = EsbController.open(dev);
  const ipi = dev.openIpiPages(); // the same path to the IPI pages the controller uses
  dev.close();
  const irq = nrIrqs >> 1;
  const bpi = esb.geometry.bytesPerIrq;
  const at = irqAddr(esb, irq);
  const whole = (): number => {
    const s = pt.pages(0);
    esb.attach(irq, s);
    s.close();
    populate(esb.memslot.userspaceAddr, esb.memslot.size);
    const t0 = now();
    esb.detach(irq);
    return now() - t0;
  };
  let vmasOwnOnly = 0;
  const own = (): number => {
    const s = pt.pages(0);
    esb.attach(irq, s);
    s.close();
    populate(esb.memslot.userspaceAddr, esb.memslot.size);
    const t0 = now();
    ipi.withFd((fd) => realNative.mmap(at, bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, ipi.offsetOf(irq)));
    const t = now() - t0;
    vmasOwnOnly = regionVmas(esb);
    esb.detach(irq); // back in step with the controller's table (untimed)
    return t;
  };
  try {
    whole();
    own();
    const w: number[] = [];
    const o: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < reps(7); i++) {
      const a = i % 2 ? own() : NaN;
      const b = whole();
      const c = i % 2 ? a : own();
      w.push(b);
      o.push(c);
      ratios.push(b / c);
    }
    return { gapIrqs: nrIrqs, gapPages: Number((BigInt(nrIrqs) * bpi) / BigInt(realNative.pageSize)), wholeGapUs: us(median(w)), ownPagesUs: us(median(o)), ratio: round(median(ratios), 1), vmasAfterOwnPagesOnly: vmasOwnOnly, vmasAfterWholeGap: regionVmas(esb) };
  } finally {
    ipi.close();
    esb.close();
    pt.close();
  }
}

function benchVmas(): void {
  progress('vmas: 10,000 random operations on merging and never-merging backings');
  const nOps = 10000;
  const merging = vmaRun(false, 4096, 4096, nOps);
  const nonMerging = vmaRun(true, 4096, 4096, nOps);
  progress('vmas: detach cost, whole IPI gap vs own pages (never-merging, populated)');
  const gaps = [1024, 16384].map(gapCost);
  results.vmas = { operations: nOps, merging, nonMerging, detachCostNonMerging: gaps };
  const ok = (r: VmaResult): boolean => r.vmas <= r.bound && r.worstDuringOps === null && r.afterDetachAll === 1 && r.stampsVerified;
  const show = (r: VmaResult): string => `${r.vmas} ≤ ${r.bound}, then ${r.afterDetachAll} (/proc reads by the controller: ${r.procReadsDuringOps})`;
  target('vmasMerging', 'VMAs after 10k ops, merging', show(merging), '≤ 2·runs+1, then 1', ok(merging));
  target('vmasNonMerging', 'VMAs after 10k ops, never-merging', show(nonMerging), '≤ 2·runs+1, then 1', ok(nonMerging));
  for (const g of gaps) {
    rows.push({
      what: `detach in a ${g.gapIrqs}-irq populated gap, never-merging`,
      value: `whole gap ${g.wholeGapUs} µs (1 VMA) vs own pages ${g.ownPagesUs} µs (${g.vmasAfterOwnPagesOnly} VMAs, 0 runs)`,
      target: 'report',
      met: null,
    });
  }
}

// ---------------------------------------------------------------- main

const results: {
  overlayVsC?: number | null;
  syscallsPerOp?: { attach: number; detach: number; attachRange: number };
  rangeVsSingles?: number | null;
  approach2VsOverlay?: number | null;
  scale?: object;
  vmas?: object;
} = {};

async function main(): Promise<void> {
  const started = now();
  if (platform() !== 'linux') throw new Error('the benchmark needs Linux (memfd, /proc/self/maps)');
  const sections: [Section, () => void | Promise<void>][] = [
    ['overlay', benchOverlayVsC],
    ['syscalls', benchSyscalls],
    ['range', benchRange],
    ['kvm', benchKvm],
    ['scale', benchScale],
    ['vmas', benchVmas],
  ];
  for (const [name, fn] of sections) {
    if (!runs(name)) continue;
    try {
      await fn();
    } catch (e) {
      // A section that breaks is reported, and the others still run.
      notes[name] = `failed: ${e instanceof Error ? e.message : String(e)}`;
      targets[name] ??= null;
      process.exitCode = 1;
    }
  }
  const seconds = round((now() - started) / 1e9, 1);
  const env = { node: process.version, arch: arch(), cpus: (await import('node:os')).cpus().length, pageSize: realNative.pageSize, quick: QUICK, seconds };
  if (JSON_OUT) {
    process.stdout.write(`${JSON.stringify({ ...results, targets, notes, details, env }, null, 2)}\n`);
    return;
  }
  const w = [0, 0, 0];
  const cells = rows.map((r) => [r.what, r.value, r.target, r.met === null ? (r.target === 'report' ? '' : 'n/a') : r.met ? 'met' : 'MISSED']);
  for (const c of [['measure', 'value', 'target', ''], ...cells]) for (let i = 0; i < 3; i++) w[i] = Math.max(w[i] as number, (c[i] as string).length);
  const line = (c: string[]): string => c.map((x, i) => (i < 3 ? x.padEnd(w[i] as number) : x)).join('  ');
  const out = [line(['measure', 'value', 'target', '']), line(w.map((n) => '-'.repeat(n)).concat('')), ...cells.map(line)];
  for (const [k, v] of Object.entries(notes)) out.push(`note ${k}: ${v}`);
  out.push(`(${env.seconds} s, node ${env.node}, ${env.cpus} CPUs, ${env.pageSize}-byte pages; ratios come from the same run, interleaved; --json for every figure)`);
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
