/**
 * The ESB remap controller: approach 3 of seeds/004. `open` maps every IPI ESB page of a device
 * once, as one range (the memslot the VMM registers with KVM, never touched again). `attach` maps a
 * passthrough source's ESB pages over the IPI pages of guest interrupts with one mmap(MAP_FIXED);
 * `detach` maps the IPI pages back with one mmap(MAP_FIXED). KVM sees each change through its MMU
 * notifiers, so the guest's next load reaches the new page.
 *
 * Data flow of every change: validate (bad input changes nothing) → build the next run table (an
 * immutable sorted array, O(passthrough runs)) → one mmap → commit the table. If the mmap fails,
 * the pages of the touched range are put back to what the old table says *before* the error
 * leaves (some kernels unmap first and then fail, leaving a hole); if even that fails, the
 * controller is degraded and refuses further changes. Registered notifiers (src/notifiers.ts)
 * hear `unmap` after validation and before anything is built or mapped (a veto or a surviving pin
 * stops the change there, with nothing to undo), and `map` after the commit.
 *
 * VMA budget (invariant 5: at most 2 × runs + 1 VMAs): where the kernel merges adjacent mappings
 * of consecutive offsets of one file (memfd), restoring an interrupt's own pages is enough: they
 * merge with the IPI pages around them. Where it never merges (real ESB mappings are
 * VM_IO|VM_PFNMAP), a detach remaps the whole IPI gap around the interrupt in its one mmap, so the
 * gap stays one VMA. Why not compact instead (restore the interrupt's own pages, merge later)?
 * The bound must hold after every call, and a region with no runs must be one VMA, so any scheme
 * has to make that one big mapping at some point: compaction only defers the same cost. What it
 * costs is measured by `npm run bench -- --vmas` (figures in the README, Performance): with every
 * page populated as a running guest has them, the kernel zaps the gap's PTEs (and KVM its own) and
 * the guest faults them back in, so a detach costs in proportion to the gap: ~6× an own-pages
 * restore for a 1,024-interrupt gap, ~60× for a 16,384-interrupt one on the machine measured.
 * Hot-unplug is rare next to the guest's interrupt traffic; this is the price of invariant 5.
 */
import { auditRegion, devString, type Discrepancy, type ExpectedSegment, type FileId } from './audit.js';
import { RemapError, errnoOf, errnoValue } from './errors.js';
import type { DeviceContract, EsbDevice, IpiPages } from './device.js';
import { sameLayout, type EsbGeometry } from './geometry.js';
import { realNative, MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, type NativeLayer } from './native/index.js';
import { PageSource, checkFits } from './source.js';
import { checkIrq, checkIrqRange, show } from './validate.js';
import { VmaBudget, systemMaxMapCount } from './vma-budget.js';
import { NotifierHub, notifierName, type EsbNotifier, type NotifierHandle, type PendingChange, type Pin, type PinInfo, type RegisterOptions } from './notifiers.js';
import { disposeSymbol } from './dispose.js';
import { tableVmas, traceAttach, traceDetach, traceFailure, type ControllerStats } from './tracing.js';

const ENOMEM = errnoValue('ENOMEM');

/** How the controller changes pages. */
export type ControllerMode = 'overlay' | 'kernel-managed' | 'auto';

/** Options of `EsbController.open`. */
export interface OpenOptions {
  /**
   * `overlay` (approach 3: map passthrough pages over IPI pages), `kernel-managed` (track and
   * notify, never map over the range: for fixed-offset devices whose kernel swaps pages itself), or
   * `auto` (default: overlay if the device meets the per-irq-offsets contract, else kernel-managed).
   */
  mode?: ControllerMode;
  /** Native layer (the fault-injecting one in tests). */
  native?: NativeLayer;
  /**
   * The most VMAs the process may have before a change is refused with E_VMA_BUDGET (default:
   * vm.max_map_count). A VMM that needs room for other mappings may set it lower.
   */
  vmaLimit?: number;
}

/** The one range the VMM registers as a KVM memslot: constant from open to close (invariant 1). */
export interface Memslot {
  /** Address of the first IPI ESB page in this process. */
  readonly userspaceAddr: bigint;
  /** Bytes: nrIrqs × bytesPerIrq. */
  readonly size: bigint;
}

/** What backs one guest interrupt's ESB pages. */
export type Backing =
  | { readonly kind: 'ipi' }
  | {
      readonly kind: 'passthrough';
      /** The source's name for this interrupt, e.g. `pt1:3` (device pt1, host interrupt 3). */
      readonly source: string;
      /** File offset of this interrupt's first page in the source. */
      readonly sourceOffset: bigint;
      /** The attached run this interrupt belongs to. */
      readonly run: { readonly first: number; readonly count: number };
    };

/** One contiguous run of passthrough interrupts, as `runs()` lists them. */
export interface RunInfo {
  /** First guest interrupt. */
  readonly first: number;
  /** Number of interrupts. */
  readonly count: number;
  /** Source name of the first interrupt (e.g. `pt1:16`). */
  readonly source: string;
  /** Source name without the interrupt index (e.g. `pt1`). */
  readonly device: string;
}

/** Why a controller refuses further changes after a restore failed. */
export interface Degraded {
  /** The broken interrupts: [first, end); their pages may be a hole. */
  readonly first: number;
  /** One past the last broken interrupt. */
  readonly end: number;
  /** What failed. */
  readonly reason: string;
}

interface Run {
  readonly first: number;
  readonly count: number;
  /** A slice owned by the table: its fd stays open while the run exists. */
  readonly source: PageSource;
}

const end = (r: Run): number => r.first + r.count;

/** Index of the first run whose first interrupt is ≥ irq (binary search). */
function lowerBound(runs: readonly Run[], irq: number): number {
  let lo = 0;
  let hi = runs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((runs[mid] as Run).first < irq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first run overlapping [first, last), if any (no allocation: the attach path's check). */
function firstOverlap(runs: readonly Run[], first: number, last: number): Run | undefined {
  const i = lowerBound(runs, first);
  const before = runs[i - 1];
  if (before && end(before) > first) return before;
  const at = runs[i];
  return at && at.first < last ? at : undefined;
}

/** The runs overlapping [first, last), in order. */
function overlapping(runs: readonly Run[], first: number, last: number): Run[] {
  let i = lowerBound(runs, first);
  if (i > 0 && end(runs[i - 1] as Run) > first) i--;
  const out: Run[] = [];
  for (; i < runs.length && (runs[i] as Run).first < last; i++) out.push(runs[i] as Run);
  return out;
}

/** The IPI gap of `runs` containing [first, last) (which must be IPI there): [end of run before, start of run after). */
function gapAround(runs: readonly Run[], first: number, last: number, nrIrqs: number): [number, number] {
  const i = lowerBound(runs, last);
  const before = runs[i - 1];
  return [before ? end(before) : 0, runs[i]?.first ?? nrIrqs];
}

/**
 * The ESB region of one KVM XIVE device and the table of which guest interrupts are overlaid by
 * passthrough pages. Not re-entrant: a call made while another is in progress gets `E_BUSY`.
 */
export class EsbController {
  /** The one memslot: address and size never change until `close()`. */
  readonly memslot: Memslot;
  /** Number of guest interrupts. */
  readonly nrIrqs: number;
  /** Layout of each interrupt's ESB pages. */
  readonly geometry: EsbGeometry;
  /** The mode chosen at open (`auto` resolved). */
  readonly mode: 'overlay' | 'kernel-managed';
  /** The device's contract, as it reported it at open. */
  readonly contract: DeviceContract;

  readonly #native: NativeLayer;
  readonly #mergeable: boolean;
  readonly #deviceName: string;
  #ipi: IpiPages | null;
  #runs: readonly Run[] = [];
  #busy = false;
  readonly #budget: VmaBudget;
  #degraded: Degraded | null = null;
  #stats = { operations: 0, failures: 0, syscalls: 0 };
  /** Notifiers and pins (src/notifiers.ts); null until the first register, so the hot path pays one null check. */
  #hub: NotifierHub | null = null;

  private constructor(device: EsbDevice, ipi: IpiPages, memslot: Memslot, mode: 'overlay' | 'kernel-managed', native: NativeLayer, vmaLimit: number) {
    this.memslot = Object.freeze(memslot);
    this.nrIrqs = device.nrIrqs;
    this.geometry = device.geometry;
    this.contract = device.contract;
    this.mode = mode;
    this.#native = native;
    this.#mergeable = device.mergeable;
    this.#deviceName = device.name;
    this.#ipi = ipi;
    this.#budget = new VmaBudget(native, vmaLimit, memslot.userspaceAddr, memslot.userspaceAddr + memslot.size);
  }

  /**
   * Map all of a device's IPI ESB pages once, as one range, and return the controller of it.
   * @throws RemapError E_DEVICE_CONTRACT if `overlay` is asked of a device that cannot take overlays;
   *   E_GEOMETRY if the device's layout does not fit the host page; E_MAP if the mmap fails
   */
  static open(device: EsbDevice, options: OpenOptions = {}): EsbController {
    const native = options.native ?? realNative;
    const asked = options.mode ?? 'auto';
    const op = `EsbController.open(${device?.name ?? show(device)})`;
    if (typeof device !== 'object' || device === null || typeof device.openIpiPages !== 'function' || !device.geometry) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: not an EsbDevice (a XiveKvmDevice, a FakeXiveDevice or another implementation of the interface)`);
    }
    if (options.vmaLimit !== undefined && !(Number.isInteger(options.vmaLimit) && options.vmaLimit > 0)) {
      throw new RemapError('E_VMA_BUDGET', `${op}: vmaLimit ${show(options.vmaLimit)} is not a positive integer`);
    }
    if (!['overlay', 'kernel-managed', 'auto'].includes(asked)) {
      throw new RemapError('E_DEVICE_CONTRACT', `${op}: mode ${show(asked)} is not overlay, kernel-managed or auto`);
    }
    if (asked === 'overlay' && device.contract !== 'per-irq-offsets') {
      throw new RemapError(
        'E_DEVICE_CONTRACT',
        `${op}: overlay mode needs a device whose ESB pages can be mapped one interrupt at a time; this one is ${device.contract} (upstream book3s_xive_native), where an overlay makes later faults resolve to the wrong interrupt. Use mode 'kernel-managed' or 'auto'.`,
      );
    }
    const mode = asked === 'auto' ? (device.contract === 'per-irq-offsets' ? 'overlay' : 'kernel-managed') : asked;
    const g = device.geometry;
    if (g.hostPageSize !== BigInt(native.pageSize)) {
      throw new RemapError('E_GEOMETRY', `${op}: device geometry assumes ${g.hostPageSize}-byte pages, the host has ${native.pageSize}`);
    }
    const size = BigInt(device.nrIrqs) * g.bytesPerIrq;
    let ipi: IpiPages;
    try {
      ipi = device.openIpiPages();
    } catch (e) {
      throw e instanceof RemapError ? e : new RemapError('E_MAP', `${op}: getting a handle on the device's IPI ESB pages failed`, { cause: e });
    }
    let addr: bigint;
    try {
      addr = ipi.withFd((fd) => native.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, ipi.offsetOf(0)));
    } catch (e) {
      ipi.close();
      throw new RemapError('E_MAP', `${op}: mapping the IPI ESB pages of ${device.nrIrqs} interrupts (0x${size.toString(16)} bytes) failed`, { cause: e });
    }
    try {
      native.claim(addr, size);
      // The budget reads /proc/self/maps once here, so that no change has to.
      const esb = new EsbController(device, ipi, { userspaceAddr: addr, size }, mode, native, options.vmaLimit ?? systemMaxMapCount() ?? 65530);
      esb.#stats.syscalls++;
      return esb;
    } catch (e) {
      native.release(addr, size);
      try {
        native.munmap(addr, size);
      } catch {
        /* best effort: the error that matters is the one thrown below */
      }
      ipi.close();
      throw e instanceof RemapError ? e : new RemapError('E_MAP', `${op}: counting the process's VMAs failed`, { cause: e });
    }
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#ipi === null;
  }

  /** Non-null once a failed step could not be undone: which interrupts are broken and why. */
  get degraded(): Degraded | null {
    return this.#degraded;
  }

  /**
   * Back guest interrupt `irq` by a source's pages (a source of one interrupt). One mmap.
   * @throws RemapError E_IRQ_RANGE, E_ALREADY_ATTACHED, E_SOURCE, E_GEOMETRY, E_CLOSED, E_BUSY,
   *   E_DEGRADED, or E_MAP (the mmap failed; the region is unchanged)
   */
  attach(irq: number, source: PageSource): void {
    const op = `attach(${show(irq)})`;
    this.#enter(op);
    try {
      checkIrq(op, irq, this.nrIrqs);
      this.#attach(op, irq, 1, source);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, op, e);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Back `count` consecutive guest interrupts from `first` by a source of `count` consecutive
   * interrupts (an MSI block): one mmap for the whole range.
   * @throws RemapError as `attach`
   */
  attachRange(first: number, count: number, source: PageSource): void {
    const op = `attachRange(${show(first)}, ${show(count)})`;
    this.#enter(op);
    try {
      checkIrqRange(op, first, count, this.nrIrqs);
      this.#attach(op, first, count, source);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, op, e);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Put interrupt `irq`'s IPI pages back. Returns false (and does nothing) if it was IPI already.
   * @throws RemapError E_IRQ_RANGE, E_CLOSED, E_BUSY, E_DEGRADED, or E_MAP (the region is unchanged)
   */
  detach(irq: number): boolean {
    const op = `detach(${show(irq)})`;
    this.#enter(op);
    try {
      checkIrq(op, irq, this.nrIrqs);
      return this.#detach(op, irq, irq + 1) > 0;
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, op, e);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Put the IPI pages of every passthrough interrupt in [first, first+count) back, with one mmap.
   * Returns how many interrupts were restored (0: nothing to do, no system call).
   * @throws RemapError as `detach`
   */
  detachRange(first: number, count: number): number {
    const op = `detachRange(${show(first)}, ${show(count)})`;
    this.#enter(op);
    try {
      checkIrqRange(op, first, count, this.nrIrqs);
      return this.#detach(op, first, first + count);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, op, e);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * What backs interrupt `irq` now (from the table: no system call). In overlay mode that is what
   * is mapped (invariant 3; `audit()` checks it). In kernel-managed mode it is what the VMM
   * declared with attach/detach: the kernel swaps the pages itself and the library maps nothing.
   * @throws RemapError E_IRQ_RANGE, E_CLOSED, or E_DEGRADED for an interrupt a failed restore broke
   */
  backingOf(irq: number): Backing {
    const op = `backingOf(${show(irq)})`;
    this.#checkOpen(op);
    checkIrq(op, irq, this.nrIrqs);
    const d = this.#degraded;
    if (d && irq >= d.first && irq < d.end) {
      throw new RemapError('E_DEGRADED', `${op}: interrupt ${irq} was broken by a failed restore (${d.reason})`);
    }
    const run = this.#runs[lowerBound(this.#runs, irq + 1) - 1];
    if (!run || end(run) <= irq) return IPI;
    const i = irq - run.first;
    return Object.freeze({
      kind: 'passthrough',
      source: run.source.nameOf(i),
      sourceOffset: run.source.offset + BigInt(i) * this.geometry.bytesPerIrq,
      run: Object.freeze({ first: run.first, count: run.count }),
    });
  }

  /** The passthrough runs, in interrupt order (a snapshot). @throws RemapError E_CLOSED */
  runs(): RunInfo[] {
    this.#checkOpen('runs()');
    return this.#runs.map((r) => Object.freeze({ first: r.first, count: r.count, source: r.source.nameOf(0), device: r.source.name }));
  }

  /** Counters (operations, failures, syscalls) and figures of the table now (runs, VMAs, notifiers, pins): no system call. */
  stats(): ControllerStats {
    const hub = this.#hub;
    return {
      ...this.#stats,
      failures: this.#stats.failures + (hub?.refusals ?? 0),
      runs: this.#runs.length,
      vmas: this.mode === 'overlay' ? tableVmas(this.#runs, this.nrIrqs) : 1,
      notifiers: hub?.count ?? 0,
      pins: hub?.pinCount ?? 0,
    };
  }

  /**
   * Register a component that shadows the mappings (see src/notifiers.ts for the event order).
   * With `{ replay: true }` it gets the current passthrough runs at once as `map` events.
   * @throws RemapError E_NOTIFIER if it cannot handle this region (pages per interrupt, mode) or is
   *   malformed, or its replay threw (it is then not registered); E_IRQ_RANGE for a bad filter range;
   *   E_CLOSED; E_BUSY from inside a handler
   */
  register(notifier: EsbNotifier, options: RegisterOptions = {}): NotifierHandle {
    const op = `register(${show(notifierName(notifier))})`;
    this.#checkOpen(op);
    if (this.#busy) throw new RemapError('E_BUSY', `${op}: called while another operation on this region is in progress (from a notifier's handler?)`);
    this.#hub ??= new NotifierHub({ name: this.#deviceName, addr: this.memslot.userspaceAddr, nrIrqs: this.nrIrqs, geometry: this.geometry, mode: this.mode });
    this.#busy = true;
    try {
      return this.#hub.register(op, notifier, options ?? {}, this.#runs);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Hold interrupt `irq`'s current pages for `owner` (seeds/003): returns their address range and
   * the handle that releases them. Before the interrupt changes, the owner gets the `unmap` and
   * must unpin before returning, or the change is refused with E_PINNED. Works from handlers.
   * @throws RemapError E_NOTIFIER unless `owner` is a live notifier of this region that takes unmap
   *   events for `irq`; E_IRQ_RANGE; E_CLOSED; E_DEGRADED for an interrupt a failed restore broke
   */
  pin(irq: number, owner: NotifierHandle): Pin {
    const op = `pin(${show(irq)})`;
    this.#checkOpen(op);
    checkIrq(op, irq, this.nrIrqs);
    const backing = this.backingOf(irq);
    if (!this.#hub) throw new RemapError('E_NOTIFIER', `${op}: no notifier is registered on this region; a pin needs one that takes unmap events for interrupt ${irq}`);
    return this.#hub.pin(op, irq, owner, backing);
  }

  /** The pins held now, in interrupt order (a snapshot), optionally only interrupt `irq`'s. @throws RemapError E_CLOSED */
  pins(irq?: number): PinInfo[] {
    this.#checkOpen('pins()');
    return this.#hub?.pins(irq) ?? [];
  }

  /**
   * Compare the table with the kernel's view: /proc/self/maps (VMA boundaries, backing file and
   * offset of every run, holes, the VMA bound) and fstat of each backing. Returns the
   * discrepancies, empty when all is well. Not for the hot path: it reads /proc. In kernel-managed
   * mode it checks that the region is still one mapping of the device's ESB pages, as opened.
   * @throws RemapError E_CLOSED; E_MAP if fstat or /proc/self/maps cannot be read
   */
  audit(): Discrepancy[] {
    this.#checkOpen('audit()');
    try {
      return this.#audit();
    } catch (e) {
      if (e instanceof RemapError) throw e;
      throw new RemapError('E_MAP', `audit(): reading the kernel's view of the region (fstat, /proc/self/maps) failed`, { cause: e });
    }
  }

  #audit(): Discrepancy[] {
    const ipi = this.#ipi as IpiPages;
    const fileOf = (fd: number): FileId => {
      const st = this.#native.fstat(fd);
      return { dev: devString(st.dev), ino: st.ino };
    };
    const ipiFile = ipi.withFd(fileOf);
    const runs = this.mode === 'overlay' ? this.#runs : [];
    const segments: ExpectedSegment[] = [];
    let pos = 0;
    const gapTo = (to: number): void => {
      if (to > pos) segments.push({ first: pos, count: to - pos, name: 'ipi', file: ipiFile, offset: ipi.offsetOf(pos) });
    };
    for (const r of runs) {
      gapTo(r.first);
      segments.push({ first: r.first, count: r.count, name: r.source.nameOf(0), file: fileOf(r.source.handle.fd), offset: r.source.offset });
      pos = end(r);
    }
    gapTo(this.nrIrqs);
    return auditRegion(
      { base: this.memslot.userspaceAddr, bytesPerIrq: this.geometry.bytesPerIrq, nrIrqs: this.nrIrqs, segments, runs: runs.length },
      this.#native.readMaps(),
    );
  }

  /**
   * Unmap the whole region (one munmap: the memslot must be deleted from KVM first), drop every
   * source's fd and the device handle. Later calls throw E_CLOSED; closing again does nothing.
   * Teardown is best effort: it goes on past a failure and throws the first error at the end.
   * @throws RemapError E_BUSY if called from inside an operation; E_MAP if munmap failed
   */
  close(): void {
    if (this.#ipi === null) return;
    if (this.#busy) throw new RemapError('E_BUSY', 'close(): called while another operation on this region is in progress');
    const { userspaceAddr, size } = this.memslot;
    let failure: unknown;
    // Notifiers hear `destroy` while the pages are still there (busy: a handler cannot re-enter),
    // then the hub drops them and cuts every handle loose (seeds/000).
    let destroyFailure: RemapError | undefined;
    if (this.#hub) {
      this.#busy = true;
      try {
        destroyFailure = this.#hub.close();
      } finally {
        this.#busy = false;
        this.#hub = null;
      }
    }
    try {
      this.#stats.syscalls++;
      this.#native.munmap(userspaceAddr, size);
    } catch (e) {
      failure = e;
    }
    this.#native.release(userspaceAddr, size);
    for (const r of this.#runs) r.source.close();
    this.#runs = [];
    this.#ipi.close();
    this.#ipi = null;
    if (failure !== undefined) {
      throw new RemapError('E_MAP', `close(): unmapping the region at 0x${userspaceAddr.toString(16)} failed`, { cause: failure });
    }
    if (destroyFailure) throw destroyFailure;
  }

  // ---- the two changes ----

  #attach(op: string, first: number, count: number, source: PageSource): void {
    const last = first + count;
    if (!(source instanceof PageSource) || source.closed) {
      throw new RemapError('E_SOURCE', `${op}: the source is ${source instanceof PageSource ? 'closed' : `not a PageSource (${show(source)})`}`);
    }
    if (source.count !== count) {
      throw new RemapError('E_SOURCE', `${op}: the source ${source.nameOf(0)} holds ${source.count} interrupt(s), not ${count}${count === 1 ? ' (use attachRange)' : ''}`);
    }
    if (source.geometry && !sameLayout(source.geometry, this.geometry)) {
      throw new RemapError('E_GEOMETRY', `${op}: the source ${source.nameOf(0)} has esbShift ${source.geometry.esbShift}, the region ${this.geometry.esbShift}`);
    }
    // (The message is only built when the check fails: attach is a hot path.)
    if (source.offset + BigInt(count) * this.geometry.bytesPerIrq > source.limit) {
      checkFits(`${op}: source ${source.nameOf(0)}`, source.offset, count, source.limit, this.geometry);
    }
    const busy = firstOverlap(this.#runs, first, last);
    if (busy) {
      const irq = Math.max(first, busy.first);
      throw new RemapError('E_ALREADY_ATTACHED', `${op}: interrupt ${irq} is already backed by ${busy.source.nameOf(irq - busy.first)}; detach it first`);
    }
    // An attach splits its IPI gap: one more VMA for each side of the gap it leaves. Check the
    // budget before anything is built or announced.
    if (this.mode === 'overlay') {
      this.#budget.ensure(op, this.#runs.length, () => {
        const [g0, g1] = gapAround(this.#runs, first, last, this.nrIrqs);
        return { own: tableVmas(this.#runs, this.nrIrqs), extra: Number(first > g0) + Number(last < g1) };
      });
    }
    // Notifiers hear `unmap` before anything is built or mapped: a veto or a surviving pin throws here with nothing to undo.
    const note = this.#hub?.attaching(op, first, count, source) ?? null;
    const run: Run = { first, count, source: source.slice(0, count, this.geometry.bytesPerIrq) };
    const next = [...this.#runs];
    next.splice(lowerBound(next, first), 0, run);
    const [from, to] = this.#mergeable ? [first, last] : gapAround(this.#runs, first, last, this.nrIrqs);
    try {
      if (this.mode === 'overlay') this.#mapSource(first, count, run.source, 0);
    } catch (e) {
      run.source.close();
      this.#fail(op, e, from, to, note);
    }
    this.#commit(next);
    traceAttach(this.memslot.userspaceAddr, op, first, count, source);
    note?.done();
  }

  #detach(op: string, first: number, last: number): number {
    const hit = overlapping(this.#runs, first, last);
    if (hit.length === 0) return 0;
    // A detach adds at most one VMA per run it cuts in two (the piece on either side it keeps).
    if (this.mode === 'overlay') {
      this.#budget.ensure(op, this.#runs.length, () => ({
        own: tableVmas(this.#runs, this.nrIrqs),
        extra: Number((hit[0] as Run).first < first) + Number(end(hit[hit.length - 1] as Run) > last),
      }));
    }
    const note = this.#hub?.detaching(op, hit, first, last) ?? null;
    const bpi = this.geometry.bytesPerIrq;
    const kept: Run[] = [];
    let restored = 0;
    for (const r of hit) {
      if (r.first < first) kept.push({ first: r.first, count: first - r.first, source: r.source.slice(0, first - r.first, bpi) });
      if (end(r) > last) kept.push({ first: last, count: end(r) - last, source: r.source.slice(last - r.first, end(r) - last, bpi) });
      restored += Math.min(end(r), last) - Math.max(r.first, first);
    }
    const i = this.#runs.indexOf(hit[0] as Run);
    const next = [...this.#runs.slice(0, i), ...kept, ...this.#runs.slice(i + hit.length)];
    const a = Math.max(first, (hit[0] as Run).first);
    const b = Math.min(last, end(hit[hit.length - 1] as Run));
    const [from, to] = this.#mergeable ? [a, b] : gapAround(next, a, b, this.nrIrqs);
    try {
      if (this.mode === 'overlay') this.#mapIpi(from, to);
    } catch (e) {
      for (const k of kept) k.source.close();
      this.#fail(op, e, from, to, note);
    }
    for (const r of hit) r.source.close();
    this.#commit(next);
    traceDetach(this.memslot.userspaceAddr, op, first, last - first, restored);
    note?.done();
    return restored;
  }

  // ---- mapping ----

  #addr(irq: number): bigint {
    return this.memslot.userspaceAddr + BigInt(irq) * this.geometry.bytesPerIrq;
  }

  #mapIpi(first: number, last: number): void {
    const ipi = this.#ipi as IpiPages;
    const len = BigInt(last - first) * this.geometry.bytesPerIrq;
    this.#stats.syscalls++;
    ipi.withFd((fd) => this.#native.mmap(this.#addr(first), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, ipi.offsetOf(first)));
  }

  /** Map `count` interrupts of `source`, from its interrupt `skip`, at guest interrupt `first`. */
  #mapSource(first: number, count: number, source: PageSource, skip: number): void {
    const bpi = this.geometry.bytesPerIrq;
    this.#stats.syscalls++;
    this.#native.mmap(this.#addr(first), BigInt(count) * bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, source.handle.fd, source.offset + BigInt(skip) * bpi);
  }

  /**
   * A change's mmap failed. Put [from, to) back to what the (unchanged) table says, then throw.
   * This runs before the error leaves because a failed MAP_FIXED may already have unmapped the
   * old pages: returning without the restore would leave the guest a hole (invariant 3).
   * Notifiers that heard `unmap` get the old pages re-announced once they are back (`note.cancel()`);
   * if the restore failed too, no `map` follows: the pages may really be gone.
   */
  #fail(op: string, err: unknown, from: number, to: number, note: PendingChange | null = null): never {
    this.#stats.failures++;
    let pos = from; // [from, pos) is back as the table says: only [pos, to) can be broken
    try {
      for (const r of overlapping(this.#runs, from, to)) {
        const s = Math.max(r.first, from);
        const e = Math.min(end(r), to);
        if (pos < s) {
          this.#mapIpi(pos, s);
          pos = s;
        }
        this.#mapSource(s, e - s, r.source, s - r.first);
        pos = e;
      }
      if (pos < to) this.#mapIpi(pos, to);
    } catch (restoreErr) {
      this.#degraded = Object.freeze({ first: pos, end: to, reason: `${op} failed (${(err as Error).message}) and restoring failed too (${(restoreErr as Error).message})` });
      throw new RemapError('E_DEGRADED', `${op}: failed, and restoring interrupts ${pos}..${to - 1} failed too; they may be a hole. The region refuses further changes.`, { cause: err });
    }
    note?.cancel();
    if (errnoOf(err) === ENOMEM && this.#budget.exhausted()) {
      throw new RemapError('E_VMA_BUDGET', `${op}: mmap failed with ENOMEM: the process is at vm.max_map_count (${this.#budget.limit} VMAs); the region is unchanged`, { cause: err });
    }
    throw new RemapError('E_MAP', `${op}: mmap failed (${(err as Error).message}); the region is unchanged`, { cause: err });
  }

  #commit(next: readonly Run[]): void {
    this.#runs = next;
    this.#stats.operations++;
  }

  // ---- guards ----

  #checkOpen(op: string): void {
    if (this.#ipi === null) throw new RemapError('E_CLOSED', `${op}: the ESB region of ${this.#deviceName} is closed`);
  }

  /** Entry of every change: open, not degraded, not re-entered. Sets busy; the caller clears it. */
  #enter(op: string): void {
    this.#checkOpen(op);
    if (this.#busy) throw new RemapError('E_BUSY', `${op}: called while another operation on this region is in progress`);
    const d = this.#degraded;
    if (d) throw new RemapError('E_DEGRADED', `${op}: refused: interrupts ${d.first}..${d.end - 1} are broken (${d.reason})`);
    this.#busy = true;
  }

  /** Same as `close()`, for `using esb = EsbController.open(dev)`. */
  [disposeSymbol](): void {
    this.close();
  }
}

const IPI: Backing = Object.freeze({ kind: 'ipi' });
