/**
 * Model-based random testing of `EsbController`, shared by `test/model.test.ts` (a short run in
 * `npm test`) and `bench/fuzz.ts` (the long one).
 *
 * The model is deliberately simple: a plain array, guest irq → what its pages must read (the stamp
 * prefix and the name `backingOf` gives), plus the range a failed restore broke. Data flow:
 *
 *   generate(config, seed, n)   runs the pure `Model` alone, so each random op is picked for the state
 *                               it will meet (attach where free, detach where attached, double
 *                               attaches, ranges off the end, closed sources, mmap faults, reopen)
 *        ↓ plain-data ops (printable as code, replayable in any order)
 *   replay(config, ops)         one real controller on a fake device, every syscall through a
 *                               `FaultyNative` over the real layer; for each op the model predicts the
 *                               outcome (value or error code), the controller runs it, then `check`
 *                               compares the region against the model through memory: no hole in
 *                               /proc/self/maps (checked before any read, so a hole fails instead of
 *                               crashing), the VMA bound, the run count, backingOf and the stamps of
 *                               every touched interrupt and a sample of the others
 *        ↓ on a mismatch: ModelFailure (op index, what differed)
 *   shrink(config, ops, failure)   delta-debugging (ddmin) down to a minimal failing op list
 *   reproduction(...)               that list printed as a mocha test calling `replay`
 */
import { readFileSync, readdirSync } from 'node:fs';
import { DEFAULT_VMA_SLACK, EsbController, NativeError, PageSource, RemapError, type RemapErrorCode } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative, readStamp, type FaultSpec } from 'xive-remap/native-stubs';
import { mapsIn, parseMaps, realNative, type MapsEntry } from '../src/internal.js';

// ---- ops ----

/** How an op gets its source: a device's `pages()`, `PageSource.fromFd` on a dup of the device fd, a source closed before use, or the pages of a device closed before use. */
export type Via = 'pages' | 'fd' | 'closed' | 'deadDevice';

/** The source of an attach: host interrupts [host, host + count) of passthrough device `pt`. */
export interface Src {
  /** Passthrough device id, 1..3 (9 for `deadDevice`, a fresh device closed before the attach). */
  readonly pt: number;
  /** First host interrupt. */
  readonly host: number;
  /** How the source is made. */
  readonly via: Via;
  /** Interrupts in the source when it differs from the op's count (a wrong-size source). */
  readonly count?: number;
}

/** A fault on the op's mmap (and optionally on the first mmap of the restore that follows). */
export interface FaultPlan {
  /** errno name of the op's mmap failure. */
  readonly errno: string;
  /** Whether the failed mmap has already unmapped the range (FaultyNative `hole` mode). */
  readonly hole: boolean;
  /** Fail the restore's first mmap too: the region must end up degraded. */
  readonly restore?: { readonly errno: string; readonly hole: boolean };
}

/** One step of a random test: plain data, so it prints as code and replays anywhere. */
export type Op =
  | { readonly op: 'attach'; readonly irq: number; readonly src: Src; readonly fault?: FaultPlan }
  | { readonly op: 'attachRange'; readonly first: number; readonly count: number; readonly src: Src; readonly fault?: FaultPlan }
  | { readonly op: 'detach'; readonly irq: number; readonly fault?: FaultPlan }
  | { readonly op: 'detachRange'; readonly first: number; readonly count: number; readonly fault?: FaultPlan }
  | { readonly op: 'reopen' };

/** What a replay runs on. */
export interface ModelConfig {
  /** Guest interrupts of the fake XIVE device. */
  readonly nrIrqs: number;
  /** `FakeXiveDevice.create({ unmergeable })`: IPI mappings that never merge (VM_PFNMAP-like). */
  readonly unmergeable: boolean;
  /** A fault armed under the harness from the start (tests of the tests: e.g. a `skip`ped mmap). */
  readonly sabotage?: FaultSpec;
  /** `OpenOptions.vmaSlack` (K of the amortized VMA bound on never-merging devices); default DEFAULT_VMA_SLACK. */
  readonly vmaSlack?: number;
  /** Whether the controller gets the Number hot path (`NativeLayer.remapShared`) or only bigint `mmap` calls (default: hot path). */
  readonly hotPath?: boolean;
}

/** Host interrupts of each fake passthrough device. */
export const PT_IRQS = 64;
const PT_IDS = [1, 2, 3] as const;
const DEAD_PT = 9;

// ---- PRNG ----

/** A small seeded PRNG (mulberry32): the same seed gives the same ops on every machine. */
export class Rng {
  #s: number;
  /** Seed with any integer (taken mod 2^32). */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

// ---- the model ----

interface Slot {
  /** Stamp prefix the pages read, e.g. `pt1:5`. */
  readonly stamp: string;
  /** What backingOf calls it, e.g. `pt1:5` or `vfio1+2`. */
  readonly name: string;
  /** File offset of the interrupt's pages in its source. */
  readonly offset: number;
  /** Which attach it came from: a controller run is a maximal stretch of one attach's slots. */
  readonly run: number;
}

/** What an op must do: return `value`, or throw a RemapError with `code`. */
export type Outcome = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly code: RemapErrorCode };

/** The model's prediction for one op. */
export interface Expectation {
  /** Value or error code. */
  readonly outcome: Outcome;
  /** Whether the op reaches its mmap, so an armed fault fires. */
  readonly faulted: boolean;
  /** Interrupts the op may have changed (clamped to the region): always checked. */
  readonly touched: readonly [number, number];
}

const isIrq = (v: number, limit: number): boolean => Number.isInteger(v) && v >= 0 && v < limit;

/** The simple model: irq → expected backing, and the degraded range. Pure: no system calls. */
export class Model {
  /** irq → what backs it (undefined: its own IPI pages). */
  readonly slots: (Slot | undefined)[];
  /** [first, end) broken by a failed restore; every change is refused while set. */
  degraded: readonly [number, number] | null = null;
  /** Never-merging devices: VMA boundaries inside IPI gaps that own-pages detaches left (the controller's StaleBoundaries). */
  readonly stale = new Set<number>();
  #nextRun = 0;

  constructor(
    /** Interrupts in the region. */
    readonly nrIrqs: number,
    /** Whether the device's mappings merge (decides how much a change remaps). */
    readonly mergeable: boolean,
    /** K of the amortized VMA bound (never-merging devices). */
    readonly slack = DEFAULT_VMA_SLACK,
  ) {
    this.slots = new Array<Slot | undefined>(nrIrqs).fill(undefined);
  }

  /** The most VMAs the region may have now (invariant 5). */
  vmaBound(): number {
    return 2 * this.runs() + 1 + (this.mergeable ? 0 : this.slack);
  }

  #forgetStale(a: number, b: number): void {
    for (const p of [...this.stale]) if (p >= a && p <= b) this.stale.delete(p);
  }

  /** Number of controller runs the table must have. */
  runs(): number {
    let n = 0;
    for (let i = 0; i < this.nrIrqs; i++) {
      const s = this.slots[i];
      if (s && s.run !== this.slots[i - 1]?.run) n++;
    }
    return n;
  }

  /** The run containing attached irq `irq`: [first, end). */
  runOf(irq: number): [number, number] {
    const run = (this.slots[irq] as Slot).run;
    let a = irq;
    let b = irq + 1;
    while (a > 0 && this.slots[a - 1]?.run === run) a--;
    while (b < this.nrIrqs && this.slots[b]?.run === run) b++;
    return [a, b];
  }

  /** The attached interrupts in [first, last). */
  attachedIn(first: number, last: number): number[] {
    const out: number[] = [];
    for (let i = Math.max(0, first); i < Math.min(last, this.nrIrqs); i++) if (this.slots[i]) out.push(i);
    return out;
  }

  /** Predict `op` and update the model as the controller must. */
  apply(op: Op): Expectation {
    const all: [number, number] = [0, this.nrIrqs];
    if (op.op === 'reopen') {
      this.slots.fill(undefined);
      this.degraded = null;
      this.stale.clear();
      return { outcome: { ok: true, value: undefined }, faulted: false, touched: all };
    }
    const [first, count] = op.op === 'attach' || op.op === 'detach' ? [op.irq, 1] : [op.first, op.count];
    const touched: [number, number] = isIrq(first, this.nrIrqs) ? [first, Math.min(this.nrIrqs, first + (Number.isInteger(count) && count > 0 ? count : 1))] : [0, 0];
    const fail = (code: RemapErrorCode): Expectation => ({ outcome: { ok: false, code }, faulted: false, touched });
    // The controller's order: degraded → range → source → overlap → the mmap.
    if (this.degraded) return fail('E_DEGRADED');
    if (!isIrq(first, this.nrIrqs) || !Number.isInteger(count) || count < 1 || first + count > this.nrIrqs) return fail('E_IRQ_RANGE');
    const last = first + count;
    if (op.op === 'attach' || op.op === 'attachRange') {
      if (op.src.via === 'closed' || (op.src.count ?? count) !== count) return fail('E_SOURCE');
      if (this.attachedIn(first, last).length > 0) return fail('E_ALREADY_ATTACHED');
      if (op.fault) return this.#faulted(op.fault, 'attach', first, last, touched);
      if (!this.mergeable) this.#forgetStale(first, last);
      const run = this.#nextRun++;
      for (let i = 0; i < count; i++) {
        const host = op.src.host + i;
        const stamp = `pt${op.src.pt}:${host}`;
        this.slots[first + i] = { stamp, name: op.src.via === 'fd' ? `vfio${op.src.pt}+${i}` : stamp, offset: host, run };
      }
      return { outcome: { ok: true, value: undefined }, faulted: false, touched };
    }
    const hit = this.attachedIn(first, last);
    if (hit.length > 0 && op.fault) return this.#faulted(op.fault, 'detach', first, last, touched);
    // A detach may remap more than the range on a never-merging device (the whole IPI gap): check it all.
    const wide = hit.length > 0 ? union(touched, this.#remapped('detach', first, last)) : touched;
    if (hit.length > 0 && !this.mergeable) {
      const [from, to] = this.#detachMaps(first, last);
      const [g0, g1] = this.#remapped('detach', first, last);
      this.#forgetStale(from, to);
      if (from > g0) this.stale.add(from);
      if (to < g1) this.stale.add(to);
    }
    for (const i of hit) this.slots[i] = undefined;
    return { outcome: { ok: true, value: op.op === 'detach' ? hit.length > 0 : hit.length }, faulted: false, touched: wide };
  }

  /**
   * The interrupts a change of [first, last) maps back if its mmap fails (for a detach, also what
   * its own mmap maps): the range itself, a detach's attached span on a merging device, or the
   * whole IPI gap around it on a never-merging one (remapped whole to keep one VMA).
   */
  /**
   * What a detach of [first, last) (which hits something) maps: on a never-merging device the
   * interrupts' own span [a, b), unless that leaves more than `slack` stale boundaries or no run at
   * all: then the whole IPI gap. On a merging device, [a, b).
   */
  #detachMaps(first: number, last: number): [number, number] {
    const hit = this.attachedIn(first, last);
    const own: [number, number] = [hit[0] as number, (hit[hit.length - 1] as number) + 1];
    if (this.mergeable) return own;
    const [a, b] = own;
    const [g0, g1] = this.#remapped('detach', first, last);
    let stale = Number(a > g0) + Number(b < g1);
    for (const p of this.stale) if (p <= a || p >= b) stale++;
    const empty = this.attachedIn(0, this.nrIrqs).length === hit.length;
    return stale > this.slack || empty ? [g0, g1] : own;
  }

  /**
   * What a failed change's restore maps back: `#remapped`, except a detach on a never-merging
   * device, whose restore covers what its own mmap covered (its interrupts' span, or the whole gap).
   */
  #restored(kind: 'attach' | 'detach', first: number, last: number): [number, number] {
    if (kind === 'attach' || this.mergeable) return this.#remapped(kind, first, last);
    return this.#detachMaps(first, last);
  }

  #remapped(kind: 'attach' | 'detach', first: number, last: number): [number, number] {
    if (kind === 'detach' && this.mergeable) {
      const hit = this.attachedIn(first, last);
      return [hit[0] as number, (hit[hit.length - 1] as number) + 1];
    }
    let [from, to] = [first, last];
    if (!this.mergeable) {
      while (from > 0 && !this.slots[from - 1]) from--;
      while (to < this.nrIrqs && !this.slots[to]) to++;
    }
    return [from, to];
  }

  /**
   * The op's mmap fails: E_MAP and nothing changes; or its restore's first mmap fails too: then
   * the interrupts whose pages are really gone are broken — the op's own mmap range if it failed
   * in hole mode, the restore's first mmap range if that did — and nothing else (E_DEGRADED over
   * their span); with no page gone the region is unchanged (E_MAP).
   */
  /** [from, to) grown to the whole runs it overlaps (what a failed change's restore maps). */
  #wholeRuns([from, to]: readonly [number, number]): [number, number] {
    const head = this.slots[from];
    if (head) while (from > 0 && this.slots[from - 1]?.run === head.run) from--;
    const tail = this.slots[to - 1];
    if (tail) while (to < this.nrIrqs && this.slots[to]?.run === tail.run) to++;
    return [from, to];
  }

  #faulted(fault: FaultPlan, kind: 'attach' | 'detach', first: number, last: number, touched: [number, number]): Expectation {
    const remapped = this.#restored(kind, first, last);
    const span = touched;
    if (fault.restore) {
      // The op's own mmap: an attach maps [first, last); a detach maps its own span or the whole gap.
      const own: [number, number] = kind === 'attach' ? [first, last] : this.#detachMaps(first, last);
      // The restore maps whole runs: [from, to) grows to the runs it overlaps. Its first mmap goes
      // from there to the next change of backing (IPI or one run).
      const [from, to] = this.#wholeRuns(remapped);
      const at = this.slots[from];
      let r0 = from + 1;
      while (r0 < to && (at ? this.slots[r0]?.run === at.run : !this.slots[r0])) r0++;
      const gone: (readonly [number, number])[] = [];
      if (fault.hole) gone.push(own);
      if (fault.restore.hole) gone.push([from, r0]);
      if (gone.length > 0) this.degraded = gone.reduce((a, b) => union(a, b));
    }
    // A restore that worked mapped [from, to) piece by piece: only run edges are boundaries there.
    if (!fault.restore && !this.mergeable) this.#forgetStale(remapped[0], remapped[1]);
    const code = this.degraded ? 'E_DEGRADED' : 'E_MAP';
    return { outcome: { ok: false, code }, faulted: true, touched: union(span, this.#wholeRuns(remapped)) };
  }
}

const union = (a: readonly [number, number], b: readonly [number, number]): [number, number] => [Math.min(a[0], b[0]), Math.max(a[1], b[1])];

// ---- the generator ----

/** Options of `generate`. */
export interface GenerateOptions {
  /** Probability that a change op gets an mmap fault (default 0). */
  faultRate?: number;
}

const ERRNOS = ['ENOMEM', 'EINVAL', 'EBADF', 'EAGAIN'] as const;

/** `n` random ops for `config` from `seed`, each picked for the model state it will meet. */
export function generate(config: ModelConfig, seed: number, n: number, options: GenerateOptions = {}): Op[] {
  const rng = new Rng(seed);
  const model = new Model(config.nrIrqs, !config.unmergeable, config.vmaSlack);
  const nr = config.nrIrqs;
  const ops: Op[] = [];
  let a: number[] = []; // the attached interrupts, refreshed once per op
  const pickIrq = (): number => {
    const r = rng.next();
    if (r < 0.35 && a.length > 0) return Math.min(nr - 1, Math.max(0, rng.pick(a) + rng.int(3) - 1)); // on or next to a run
    return rng.int(nr);
  };
  const pickCount = (): number => (rng.chance(0.15) ? 1 + rng.int(32) : 1 + rng.int(6));
  const pickFirst = (count: number): number => (rng.chance(0.04) ? nr - count + 1 + rng.int(3) : Math.min(pickIrq(), nr - count));
  const pickSrc = (count: number): Src => {
    const r = rng.next();
    const via: Via = r < 0.8 ? 'pages' : r < 0.9 ? 'fd' : r < 0.95 ? 'closed' : 'deadDevice';
    const src: Src = { pt: via === 'deadDevice' ? DEAD_PT : rng.pick(PT_IDS), host: rng.int(PT_IRQS - count + 1), via };
    return rng.chance(0.03) && count < PT_IRQS - src.host ? { ...src, count: count + 1 } : src;
  };
  const bad = [-1, nr, nr + 7, 1.5, NaN, 2 ** 53] as const;
  for (let i = 0; i < n; i++) {
    let op: Op;
    a = model.attachedIn(0, nr);
    const r = rng.next();
    if (model.degraded && rng.chance(0.5)) op = { op: 'reopen' };
    else if (r < 0.28) op = { op: 'attach', irq: pickIrq(), src: pickSrc(1) };
    else if (r < 0.48) {
      const count = pickCount();
      op = { op: 'attachRange', first: pickFirst(count), count, src: pickSrc(count) };
    } else if (r < 0.66) {
      op = { op: 'detach', irq: a.length > 0 && rng.chance(0.7) ? rng.pick(a) : rng.int(nr) };
    } else if (r < 0.85) {
      const count = pickCount() * (1 + rng.int(3));
      op = { op: 'detachRange', first: pickFirst(count), count };
    } else if (r < 0.94) {
      const b = rng.pick(bad);
      const k = rng.int(5);
      op =
        k === 0 ? { op: 'attach', irq: b, src: pickSrc(1) }
        : k === 1 ? { op: 'detach', irq: b }
        : k === 2 ? { op: 'attachRange', first: b, count: 2, src: pickSrc(2) }
        : k === 3 ? { op: 'detachRange', first: rng.int(nr), count: rng.pick([0, -2, 2.5, nr + 1]) }
        : { op: 'attachRange', first: rng.int(nr), count: rng.pick([0, 1.5]), src: { ...pickSrc(1), count: 1 } };
    } else if (r < 0.95) op = { op: 'reopen' };
    else {
      op = { op: 'attach', irq: a.length > 0 ? rng.pick(a) : rng.int(nr), src: pickSrc(1) }; // a double attach
    }
    if (op.op !== 'reopen' && options.faultRate && rng.chance(options.faultRate)) {
      const fault: FaultPlan = { errno: rng.pick(ERRNOS), hole: rng.chance(0.5) };
      op = { ...op, fault: rng.chance(0.2) ? { ...fault, restore: { errno: rng.pick(ERRNOS), hole: rng.chance(0.5) } } : fault };
    }
    model.apply(op);
    ops.push(op);
  }
  return ops;
}

// ---- checking memory ----

/** A mismatch between the controller and the model: which op (index into the list; `ops.length` for the final leak check) and what differed. */
export class ModelFailure extends Error {
  constructor(
    /** Index of the op after which the mismatch was seen. */
    readonly index: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ModelFailure';
  }
}

/** The parts of the region no ESB mapping covers (nothing, or an anonymous reservation), in interrupts [first, end) (rounded outwards), from /proc/self/maps. */
export function regionHoles(esb: EsbController, maps: readonly MapsEntry[] = realNative.readMaps()): [number, number][] {
  const { userspaceAddr: base, size } = esb.memslot;
  const bpi = esb.geometry.bytesPerIrq;
  const holes: [number, number][] = [];
  let pos = base;
  const add = (s: bigint, e: bigint): void => {
    holes.push([Number((s - base) / bpi), Number((e - base + bpi - 1n) / bpi)]);
  };
  // Anonymous VMAs in the region are FaultyNative's reserved holes (no ESB pages): holes too.
  for (const m of [...mapsIn(maps, base, base + size)].filter((x) => x.inode !== 0n).sort((x, y) => (x.start < y.start ? -1 : 1))) {
    if (m.start > pos) add(pos, m.start);
    if (m.end > pos) pos = m.end;
  }
  if (pos < base + size) add(pos, base + size);
  return holes;
}

/**
 * The VMAs overlapping [start, end), from /proc/self/maps, parsing only their lines: the check after
 * every op reads the maps, and a full parse of every line was most of a fuzz run's time.
 */
export function mapsOverlapping(start: bigint, end: bigint): MapsEntry[] {
  const text = readFileSync('/proc/self/maps', 'latin1');
  // User addresses are below 2^53 on every 64-bit Linux we run on: a Number compares them exactly.
  const [lo, hi] = [Number(start), Number(end)];
  const keep: string[] = [];
  for (let i = 0; i < text.length; ) {
    const found = text.indexOf('\n', i);
    const nl = found < 0 ? text.length : found;
    const dash = text.indexOf('-', i);
    if (dash > i && dash < nl) {
      const s = parseInt(text.slice(i, dash), 16);
      const e = parseInt(text.slice(dash + 1, text.indexOf(' ', dash)), 16);
      if (e > lo && s < hi) keep.push(text.slice(i, nl));
    }
    i = nl + 1;
  }
  return parseMaps(keep.join('\n'));
}

/** The errors in `err`'s cause chain. */
export function causeChain(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e: unknown = err; e !== undefined && out.length < 16; e = e instanceof Error ? e.cause : undefined) out.push(e);
  return out;
}

/** Open fds of this process. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

const lit = (v: unknown): string =>
  typeof v === 'number' ? (Number.isNaN(v) ? 'NaN' : v === 2 ** 53 ? '2 ** 53' : String(v))
  : typeof v === 'string' ? `'${v}'`
  : v && typeof v === 'object' ? `{ ${Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => `${k}: ${lit(x)}`).join(', ')} }`
  : String(v);

/** An op as a TypeScript literal (what `replay` takes). */
export function opLiteral(op: Op): string {
  return lit(op);
}

/** An op as the API call it makes, for comments and messages. */
export function opCall(op: Op): string {
  const src = (s: Src, count: number): string => {
    const n = s.count ?? count;
    const pages = `pt${s.pt}.pages(${s.host}${n === 1 ? '' : `, ${n}`})`;
    return s.via === 'pages' ? pages
      : s.via === 'fd' ? `PageSource.fromFd(dup(pt${s.pt}.fd), ${s.host} * bytesPerIrq, ${n}, { name: 'vfio${s.pt}' })`
      : s.via === 'closed' ? `closed(${pages})`
      : `${pages} /* device closed first */`;
  };
  const f = 'fault' in op && op.fault ? ` /* mmap fails ${op.fault.errno}${op.fault.hole ? ' + hole' : ''}${op.fault.restore ? `, restore fails ${op.fault.restore.errno}${op.fault.restore.hole ? ' + hole' : ''}` : ''} */` : '';
  switch (op.op) {
    case 'attach': return `esb.attach(${lit(op.irq)}, ${src(op.src, 1)})${f}`;
    case 'attachRange': return `esb.attachRange(${lit(op.first)}, ${lit(op.count)}, ${src(op.src, op.count)})${f}`;
    case 'detach': return `esb.detach(${lit(op.irq)})${f}`;
    case 'detachRange': return `esb.detachRange(${lit(op.first)}, ${lit(op.count)})${f}`;
    case 'reopen': return 'esb.close(); esb = EsbController.open(dev)';
  }
}

const showOutcome = (o: Outcome): string => (o.ok ? `→ ${o.value === undefined ? 'ok' : String(o.value)}` : `→ ${o.code}`);

// ---- the harness ----

/** Options of `replay`. */
export interface ReplayOptions {
  /** Check every interrupt (not a sample) after each op (default: every 50th op and the last). */
  full?: boolean;
  /** Extra interrupts sampled per op (default 6). */
  sample?: number;
}

/** What a replay did. */
export interface ReplayStats {
  /** Ops run. */
  ops: number;
  /** Ops that threw, by code. */
  errors: Record<string, number>;
  /** Faults that fired. */
  faults: number;
}

/** One real controller on fakes, every syscall through a FaultyNative. */
class Harness {
  readonly f: FaultyNative;
  readonly dev: FakeXiveDevice;
  readonly pts = new Map<number, FakePassthroughDevice>();
  readonly devIno: bigint;
  esb: EsbController;
  /** After a reopen: whether the closed region's pages were still mapped between close and open. */
  leftMapped = false;

  constructor(readonly config: ModelConfig) {
    const inner = config.sabotage ? new FaultyNative() : realNative;
    this.f = new FaultyNative(inner, { hotPath: config.hotPath ?? true });
    this.dev = FakeXiveDevice.create({ nrIrqs: config.nrIrqs, unmergeable: config.unmergeable, native: this.f });
    this.devIno = realNative.fstat(this.dev.fd).ino;
    for (const id of PT_IDS) this.pts.set(id, FakePassthroughDevice.create({ nrIrqs: PT_IRQS, id, native: this.f }));
    this.esb = EsbController.open(this.dev, { native: this.f, vmaSlack: this.config.vmaSlack });
    if (config.sabotage) (inner as FaultyNative).inject(config.sabotage);
  }

  source(s: Src, count: number): PageSource {
    const n = s.count ?? count;
    if (s.via === 'deadDevice') {
      const d = FakePassthroughDevice.create({ nrIrqs: PT_IRQS, id: DEAD_PT, native: this.f });
      const src = d.pages(s.host, n);
      d.close();
      return src;
    }
    const pt = this.pts.get(s.pt) as FakePassthroughDevice;
    if (s.via === 'fd') {
      const dup = this.f.dupCloexec(pt.fd);
      try {
        return PageSource.fromFd(dup, BigInt(s.host) * this.esb.geometry.bytesPerIrq, n, { native: this.f, name: `vfio${s.pt}` });
      } finally {
        this.f.close(dup); // the source holds its own dup (invariant 7)
      }
    }
    const src = pt.pages(s.host, n);
    if (s.via === 'closed') src.close();
    return src;
  }

  /** Run one op; faults of its plan are armed around the controller call only. */
  exec(op: Op): { ok: true; value: unknown } | { ok: false; error: unknown } {
    if (op.op === 'reopen') {
      const { userspaceAddr: a, size } = this.esb.memslot;
      this.esb.close();
      this.leftMapped = mapsIn(realNative.readMaps(), a, a + size).some((m) => m.inode === this.devIno);
      this.esb = EsbController.open(this.dev, { native: this.f, vmaSlack: this.config.vmaSlack });
      return { ok: true, value: undefined };
    }
    const src = op.op === 'attach' ? this.source(op.src, 1) : op.op === 'attachRange' ? this.source(op.src, op.count) : undefined;
    if (op.fault) {
      this.f.inject({ call: 'mmap', errno: op.fault.errno, mode: op.fault.hole ? 'hole' : 'fail' });
      if (op.fault.restore) this.f.inject({ call: 'mmap', nth: 2, errno: op.fault.restore.errno, mode: op.fault.restore.hole ? 'hole' : 'fail' });
    }
    try {
      const esb = this.esb;
      switch (op.op) {
        case 'attach': return { ok: true, value: esb.attach(op.irq, src as PageSource) };
        case 'attachRange': return { ok: true, value: esb.attachRange(op.first, op.count, src as PageSource) };
        case 'detach': return { ok: true, value: esb.detach(op.irq) };
        case 'detachRange': return { ok: true, value: esb.detachRange(op.first, op.count) };
      }
      throw new Error(`unknown op ${opLiteral(op)}`);
    } catch (error) {
      return { ok: false, error };
    } finally {
      this.f.clear();
      src?.close();
    }
  }

  dispose(): void {
    this.esb.close();
    this.dev.close();
    for (const pt of this.pts.values()) pt.close();
  }
}

/** Compare the region with the model: holes first (a read of a hole would crash), then table, then memory. */
function check(h: Harness, model: Model, irqs: Iterable<number>, memslot: EsbController['memslot']): string | undefined {
  const esb = h.esb;
  const maps = mapsOverlapping(memslot.userspaceAddr, memslot.userspaceAddr + memslot.size);
  const d = model.degraded;
  const inBroken = (i: number): boolean => d !== null && i >= d[0] && i < d[1];
  const holes = regionHoles(esb, maps).filter(([a, b]) => !(d && a >= d[0] && b <= d[1]));
  if (holes.length > 0) return `hole in the region at interrupts ${holes.map(([a, b]) => `${a}..${b - 1}`).join(', ')} (not covered by any VMA)`;
  if (esb.memslot.userspaceAddr !== memslot.userspaceAddr || esb.memslot.size !== memslot.size) return 'the memslot moved';
  const deg = esb.degraded;
  if ((deg === null) !== (d === null) || (deg && d && (deg.first !== d[0] || deg.end !== d[1]))) {
    return `esb.degraded is ${deg ? `[${deg.first}, ${deg.end})` : 'null'}, the model says ${d ? `[${d[0]}, ${d[1]})` : 'null'}`;
  }
  const runs = esb.stats().runs;
  if (runs !== model.runs()) return `the controller has ${runs} runs, the model ${model.runs()}`;
  if (!d) {
    const vmas = mapsIn(maps, memslot.userspaceAddr, memslot.userspaceAddr + memslot.size).length;
    const bound = model.vmaBound();
    if (vmas > bound) return `${vmas} VMAs in the region, more than 2 × ${runs} runs + 1${model.mergeable ? '' : ` + ${model.slack}`} = ${bound} (invariant 5)`;
    if (runs === 0 && vmas !== 1) return `${vmas} VMAs in a region with no run, not 1 (invariant 5)`;
    const st = esb.stats();
    if (st.vmaBound !== bound) return `esb.stats().vmaBound is ${st.vmaBound}, the model says ${bound}`;
    if (vmas > st.vmas) return `${vmas} VMAs in the region, more than the controller's count ${st.vmas}`;
    if (!model.mergeable && st.vmas - (2 * runs + 1) > model.stale.size) return `the controller counts ${st.vmas} VMAs, the model at most 2 × ${runs} + 1 + ${model.stale.size} stale boundaries`;
  }
  const bpi = esb.geometry.bytesPerIrq;
  for (const irq of irqs) {
    const slot = model.slots[irq];
    if (inBroken(irq)) {
      try {
        esb.backingOf(irq);
        return `backingOf(${irq}) answered inside the broken range`;
      } catch (e) {
        if (!(e instanceof RemapError) || e.code !== 'E_DEGRADED') return `backingOf(${irq}) threw ${String(e)}, not E_DEGRADED`;
      }
      continue;
    }
    const b = esb.backingOf(irq);
    if (!slot) {
      if (b.kind !== 'ipi') return `backingOf(${irq}) is ${b.source}, the model says ipi`;
    } else {
      if (b.kind !== 'passthrough') return `backingOf(${irq}) is ipi, the model says ${slot.name}`;
      if (b.source !== slot.name) return `backingOf(${irq}).source is ${b.source}, the model says ${slot.name}`;
      if (b.sourceOffset !== BigInt(slot.offset) * bpi) return `backingOf(${irq}).sourceOffset is ${b.sourceOffset}, the model says ${BigInt(slot.offset) * bpi}`;
      const [a, e] = model.runOf(irq);
      if (b.run.first !== a || b.run.count !== e - a) return `backingOf(${irq}).run is ${b.run.first}+${b.run.count}, the model says ${a}+${e - a}`;
    }
    for (let p = 0; p < esb.geometry.pagesPerIrq; p++) {
      const want = `${slot?.stamp ?? `ipi:${irq}`}:${p}`;
      const got = readStamp(esb, irq, p as 0 | 1);
      if (got !== want) return `interrupt ${irq} page ${p} reads ${JSON.stringify(got)}, the model says ${JSON.stringify(want)}`;
    }
  }
  return undefined;
}

/**
 * Run `ops` on a fresh controller and a fresh model, checking after every op.
 * @throws ModelFailure at the first mismatch (or a leaked fd or mapping at the end)
 */
export function replay(config: ModelConfig, ops: readonly Op[], options: ReplayOptions = {}): ReplayStats {
  const fds = openFds();
  const stats: ReplayStats = { ops: 0, errors: {}, faults: 0 };
  const model = new Model(config.nrIrqs, !config.unmergeable, config.vmaSlack);
  const sampler = new Rng(ops.length * 7919 + config.nrIrqs);
  const h = new Harness(config);
  let i = 0;
  try {
    let memslot = h.esb.memslot;
    for (; i < ops.length; i++) {
      const op = ops[i] as Op;
      const fired = h.f.fired.length;
      const want = model.apply(op);
      const got = h.exec(op);
      stats.ops++;
      const newFaults = h.f.fired.slice(fired);
      stats.faults += newFaults.length;
      const where = `op ${i} ${opCall(op)} (model ${showOutcome(want.outcome)})`;
      if (got.ok && !want.outcome.ok) throw new ModelFailure(i, `${where}: succeeded${got.value === undefined ? '' : ` with ${String(got.value)}`}`);
      if (!got.ok) {
        const e = got.error;
        if (!(e instanceof RemapError)) throw new ModelFailure(i, `${where}: threw ${String(e)}, not a RemapError`, { cause: e });
        stats.errors[e.code] = (stats.errors[e.code] ?? 0) + 1;
        if (want.outcome.ok || want.outcome.code !== e.code) throw new ModelFailure(i, `${where}: threw ${e.code}: ${e.message}`, { cause: e });
      } else if (want.outcome.ok && got.value !== want.outcome.value) {
        throw new ModelFailure(i, `${where}: returned ${String(got.value)}`);
      }
      if (want.faulted !== (newFaults.length > 0)) throw new ModelFailure(i, `${where}: ${newFaults.length} injected fault(s) fired, the model expected ${want.faulted ? 'some' : 'none'}`);
      if (want.faulted && !got.ok) {
        const chain = causeChain(got.error);
        const native = (newFaults[0] as (typeof newFaults)[number]).error as NativeError;
        if (!chain.includes(native)) throw new ModelFailure(i, `${where}: the injected ${native.code} is not in the error's cause chain`);
      }
      if (op.op === 'reopen') {
        if (h.leftMapped) throw new ModelFailure(i, `${where}: the closed region was still mapped after close()`);
        memslot = h.esb.memslot;
      }
      const full = options.full || i % 50 === 49 || i === ops.length - 1 || want.touched[1] - want.touched[0] === config.nrIrqs;
      const irqs = new Set<number>();
      if (full) for (let k = 0; k < config.nrIrqs; k++) irqs.add(k);
      else {
        for (let k = Math.max(0, want.touched[0] - 1); k < Math.min(config.nrIrqs, want.touched[1] + 1); k++) irqs.add(k);
        for (let k = 0; k < (options.sample ?? 6); k++) irqs.add(sampler.int(config.nrIrqs));
      }
      const problem = check(h, model, irqs, memslot);
      if (problem) throw new ModelFailure(i, `after ${where}: ${problem}`);
    }
  } catch (e) {
    if (e instanceof ModelFailure) throw e;
    throw new ModelFailure(i, `op ${i} ${ops[i] ? opCall(ops[i] as Op) : ''}: the harness threw ${e instanceof Error ? (e.stack ?? e.message).split('\n').slice(0, 3).join('\n') : String(e)}`, { cause: e });
  } finally {
    h.dispose();
  }
  const left = realNative.readMaps().filter((m) => m.inode === h.devIno).length;
  if (left > 0) throw new ModelFailure(ops.length, `${left} mapping(s) of the fake device left after close`);
  const leaked = openFds() - fds;
  if (leaked !== 0) throw new ModelFailure(ops.length, `${leaked} fd(s) leaked over the run`);
  return stats;
}

// ---- shrinking and printing ----

/** Options of `shrink`. */
export interface ShrinkOptions {
  /** Give up refining after this many milliseconds (default 60 000); the best list so far is returned. */
  timeMs?: number;
}

/**
 * Delta-debug (Zeller's ddmin, complements only) `ops` down to a list that still fails and from
 * which no single op can be dropped (unless time runs out). Every candidate is replayed with full
 * checks, so a failure that a sample missed is still seen.
 */
export function shrink(config: ModelConfig, ops: readonly Op[], failure: ModelFailure, options: ShrinkOptions = {}): { ops: Op[]; failure: ModelFailure; replays: number } {
  const deadline = Date.now() + (options.timeMs ?? 60_000);
  let best = { ops: ops.slice(0, Math.min(ops.length, failure.index + 1)), failure };
  let replays = 0;
  const attempt = (cand: Op[]): ModelFailure | undefined => {
    replays++;
    try {
      replay(config, cand, { full: true });
      return undefined;
    } catch (e) {
      return e instanceof ModelFailure ? e : undefined;
    }
  };
  let n = 2;
  while (best.ops.length >= 2 && Date.now() < deadline) {
    const len = best.ops.length;
    const chunk = Math.ceil(len / n);
    let reduced = false;
    for (let start = 0; start < len && Date.now() < deadline; start += chunk) {
      const cand = [...best.ops.slice(0, start), ...best.ops.slice(start + chunk)];
      const f = attempt(cand);
      if (f) {
        best = { ops: cand.slice(0, Math.min(cand.length, f.index + 1)), failure: f };
        n = Math.max(n - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (n >= len) break;
      n = Math.min(len, n * 2);
    }
  }
  return { ...best, replays };
}

/** A failing op list as a mocha test: what the failure report prints. */
export function reproduction(config: ModelConfig, ops: readonly Op[], failure: ModelFailure, title: string): string {
  const cfg = lit({ nrIrqs: config.nrIrqs, unmergeable: config.unmergeable, sabotage: config.sabotage, vmaSlack: config.vmaSlack });
  const lines = ops.map((op) => `    ${opLiteral(op)}, // ${opCall(op)}`);
  return [
    `// ${title}`,
    `// ${failure.message.split('\n')[0]}`,
    `// Minimal reproduction (${ops.length} op${ops.length === 1 ? '' : 's'}): paste into test/model.test.ts`,
    `it('reproduces ${title.replace(/'/g, '')}', () => {`,
    `  replay(${cfg}, [`,
    ...lines,
    '  ]);',
    '});',
  ].join('\n');
}

/** What a seeded run is: a device kind and size, how many ops, how often faults are injected. */
export interface SeedRun extends GenerateOptions, ShrinkOptions, ReplayOptions {
  /** The seed of the op list. */
  seed: number;
  /** How many ops. */
  ops: number;
}

/**
 * Generate, replay and, on a mismatch, shrink and report.
 * @throws Error whose message is the whole report: seed, the failure, and the minimal failing op
 *   list printed as a test (the `ModelFailure` is its cause)
 */
export function runSeed(config: ModelConfig, run: SeedRun): ReplayStats {
  const ops = generate(config, run.seed, run.ops, run);
  try {
    return replay(config, ops, run);
  } catch (e) {
    if (!(e instanceof ModelFailure)) throw e;
    const title = `seed ${run.seed} (${config.unmergeable ? 'unmergeable' : 'merging'} device, ${config.nrIrqs} irqs, ${run.ops} ops${run.faultRate ? `, fault rate ${run.faultRate}` : ''})`;
    const small = shrink(config, ops, e, run);
    throw new Error(
      `model failure, ${title}, at op ${e.index}: ${e.message}\n` +
        `shrunk from ${Math.min(ops.length, e.index + 1)} to ${small.ops.length} ops in ${small.replays} replays:\n\n` +
        `${reproduction(config, small.ops, small.failure, title)}\n`,
      { cause: e },
    );
  }
}
