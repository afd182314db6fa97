/**
 * The ESB remap controller: approach 3 of seeds/004. `open` maps every IPI ESB page of a device
 * once, as one range (the memslot the VMM registers with KVM, never touched again). `attach` maps a
 * passthrough source's ESB pages over the IPI pages of guest interrupts with one mmap(MAP_FIXED);
 * `detach` maps the IPI pages back with one mmap(MAP_FIXED). KVM sees each change through its MMU
 * notifiers, so the guest's next load reaches the new page.
 *
 * Data flow of every change: validate (bad input changes nothing) → build the next run table
 * (`RunTable`, src/run-table.ts: immutable, sorted, O(passthrough runs)) → one mmap → commit the table. If the mmap fails,
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
import { auditRegion, backingFile, type Discrepancy, type ExpectedSegment, type FileId } from './audit.js';
import { RemapError, errnoOf, errnoValue } from './errors.js';
import type { DeviceContract, EsbDevice, IpiPages } from './device.js';
export type { Backing, RunInfo } from './run-table.js';
import { sameLayout, type EsbGeometry } from './geometry.js';
import { realNative, MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, type NativeLayer } from './native/index.js';
import { PageSource, checkFits } from './source.js';
import { checkIrq, checkIrqRange, describeThrown, show } from './validate.js';
import { VmaBudget, systemMaxMapCount } from './vma-budget.js';
import { NotifierHub, notifierName, type EsbNotifier, type NotifierHandle, type PendingChange, type Pin, type PinInfo, type RegisterOptions } from './notifiers.js';
import { disposeSymbol } from './dispose.js';
import { RunTable, runEnd as end, type Backing, type Run as TableRun, type RunInfo } from './run-table.js';
import { traceAttach, traceDetach, traceFailure, type ControllerStats } from './tracing.js';

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

/** Why a controller refuses further changes after a restore failed. */
export interface Degraded {
  /** The broken interrupts: [first, end); their pages may be a hole. */
  readonly first: number;
  /** One past the last broken interrupt. */
  readonly end: number;
  /** What failed. */
  readonly reason: string;
}

type Run = TableRun<PageSource>;

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
  /** `closing`: close() delivered destroy but its munmap failed; everything needed to retry is kept. */
  #state: 'open' | 'closing' | 'closed' = 'open';
  #runs: RunTable<PageSource>;
  #busy = false;
  readonly #budget: VmaBudget;
  #degraded: Degraded | null = null;
  #stats = { operations: 0, failures: 0, syscalls: 0 };
  /** Notifiers and pins (src/notifiers.ts); null until the first register, so the hot path pays one null check. */
  #hub: NotifierHub | null = null;

  private constructor(device: DeviceSnapshot, ipi: IpiPages, memslot: Memslot, mode: 'overlay' | 'kernel-managed', native: NativeLayer, vmaLimit: number, limitSource: string) {
    this.memslot = Object.freeze(memslot);
    this.nrIrqs = device.nrIrqs;
    this.geometry = device.geometry;
    this.contract = device.contract;
    this.mode = mode;
    this.#native = native;
    this.#mergeable = device.mergeable;
    this.#deviceName = device.name;
    this.#ipi = ipi;
    this.#runs = RunTable.empty(device.nrIrqs);
    this.#budget = new VmaBudget(native, vmaLimit, memslot.userspaceAddr, memslot.userspaceAddr + memslot.size, limitSource);
  }

  /**
   * Map all of a device's IPI ESB pages once, as one range, and return the controller of it.
   * @throws RemapError E_DEVICE_CONTRACT if `overlay` is asked of a device that cannot take overlays;
   *   E_GEOMETRY if the device's layout does not fit the host page; E_MAP if the mmap fails
   */
  static open(device: EsbDevice, options: OpenOptions = {}): EsbController {
    // Everything the caller handed in is read once, here: a getter that throws (or a Proxy that
    // lies) becomes a RemapError before anything is mapped, and nothing is read twice.
    const dev = snapshotDevice(device);
    const op = `EsbController.open(${dev?.name ?? show(device)})`;
    if (dev === null) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: not an EsbDevice (a XiveKvmDevice, a FakeXiveDevice or another implementation of the interface)`);
    }
    // The device's own native layer is the default: a device and its region cannot disagree on it.
    const { native, mode: asked, vmaLimit: limitAsked } = readOpenOptions(op, options, dev.native);
    if (limitAsked !== undefined && !(typeof limitAsked === 'number' && Number.isInteger(limitAsked) && limitAsked > 0)) {
      throw new RemapError('E_VMA_BUDGET', `${op}: vmaLimit ${show(limitAsked)} is not a positive integer`);
    }
    const vmaLimit = limitAsked as number | undefined;
    if (asked !== 'overlay' && asked !== 'kernel-managed' && asked !== 'auto') {
      throw new RemapError('E_DEVICE_CONTRACT', `${op}: mode ${show(asked)} is not overlay, kernel-managed or auto`);
    }
    if (asked === 'overlay' && dev.contract !== 'per-irq-offsets') {
      throw new RemapError(
        'E_DEVICE_CONTRACT',
        `${op}: overlay mode needs a device whose ESB pages can be mapped one interrupt at a time; this one is ${show(dev.contract)} (upstream book3s_xive_native), where an overlay makes later faults resolve to the wrong interrupt. Use mode 'kernel-managed' or 'auto'.`,
      );
    }
    const mode = asked === 'auto' ? (dev.contract === 'per-irq-offsets' ? 'overlay' : 'kernel-managed') : asked;
    const g = dev.geometry;
    if (g.hostPageSize !== BigInt(native.pageSize)) {
      throw new RemapError('E_GEOMETRY', `${op}: device geometry assumes ${g.hostPageSize}-byte pages, the host has ${native.pageSize}`);
    }
    const size = BigInt(dev.nrIrqs) * g.bytesPerIrq;
    let ipi: IpiPages;
    try {
      ipi = dev.openIpiPages.call(device);
    } catch (e) {
      throw e instanceof RemapError ? e : new RemapError('E_MAP', `${op}: getting a handle on the device's IPI ESB pages failed`, { cause: e });
    }
    let addr: bigint;
    try {
      addr = ipi.withFd((fd) => native.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, ipi.offsetOf(0)));
    } catch (e) {
      ipi.close();
      throw new RemapError('E_MAP', `${op}: mapping the IPI ESB pages of ${dev.nrIrqs} interrupts (0x${size.toString(16)} bytes) failed`, { cause: e });
    }
    try {
      native.claim(addr, size);
      // The budget reads /proc/self/maps once here, so that no change has to.
      const system = systemMaxMapCount();
      const [limit, limitSource] =
        vmaLimit !== undefined ? [vmaLimit, 'the vmaLimit option'] : system !== undefined ? [system, 'vm.max_map_count'] : [65530, 'vm.max_map_count assumed: /proc/sys/vm/max_map_count unreadable'];
      const esb = new EsbController(dev, ipi, { userspaceAddr: addr, size }, mode, native, limit, limitSource);
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

  /** Whether `close()` has been called (true also while a close whose munmap failed awaits its retry). */
  get closed(): boolean {
    return this.#state !== 'open';
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
    const run = this.#runs.at(irq);
    if (!run) return IPI;
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
    return this.#runs.runs.map((r) => Object.freeze({ first: r.first, count: r.count, source: r.source.nameOf(0), device: r.source.name }));
  }

  /** Counters (operations, failures, syscalls) and figures of the table now (runs, VMAs, notifiers, pins): no system call. */
  stats(): ControllerStats {
    const hub = this.#hub;
    return {
      ...this.#stats,
      failures: this.#stats.failures + (hub?.refusals ?? 0),
      runs: this.#runs.length,
      vmas: this.mode === 'overlay' ? this.#runs.vmas() : 1,
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
      return this.#hub.register(op, notifier, options ?? {}, this.#runs.runs, this.#degraded);
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
    const fileOf = (fd: number): FileId => backingFile(this.#native.fstat(fd));
    const ipiFile = ipi.withFd(fileOf);
    const runs = this.mode === 'overlay' ? this.#runs.runs : [];
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
   * If the munmap fails, nothing is released: the range stays owned and every fd open, every other
   * call gets E_CLOSED, and calling `close()` again retries the munmap (otherwise the mapping and
   * its fds would be lost for the life of the process).
   * @throws RemapError E_BUSY if called from inside an operation; E_MAP if munmap failed (retry);
   *   E_NOTIFIER if a destroy handler threw (the region is closed all the same)
   */
  close(): void {
    if (this.#state === 'closed') return;
    if (this.#busy) throw new RemapError('E_BUSY', 'close(): called while another operation on this region is in progress');
    const { userspaceAddr, size } = this.memslot;
    // Notifiers hear `destroy` while the pages are still there (busy: a handler cannot re-enter),
    // then the hub drops them and cuts every handle loose (seeds/000). Only once: a retried close
    // has no notifier left to tell.
    let destroyFailure: RemapError | undefined;
    if (this.#state === 'open') {
      if (this.#hub) {
        this.#busy = true;
        try {
          destroyFailure = this.#hub.close();
        } finally {
          this.#busy = false;
          this.#hub = null;
        }
      }
      // Only now: destroy handlers may still read the region (backingOf, the pages themselves).
      this.#state = 'closing';
    }
    try {
      this.#stats.syscalls++;
      this.#native.munmap(userspaceAddr, size);
    } catch (e) {
      throw new RemapError('E_MAP', `close(): unmapping the region at 0x${userspaceAddr.toString(16)} failed; it stays mapped and owned, call close() again to retry`, { cause: e });
    }
    this.#state = 'closed';
    this.#native.release(userspaceAddr, size);
    for (const r of this.#runs.runs) r.source.close();
    this.#runs = RunTable.empty(this.nrIrqs);
    this.#ipi?.close();
    this.#ipi = null;
    if (destroyFailure) throw destroyFailure;
  }

  // ---- the two changes ----

  #attach(op: string, first: number, count: number, source: PageSource): void {
    const last = first + count;
    // A brand check, not instanceof: a Proxy of a PageSource or an object made from its prototype
    // would pass instanceof and then fail on the first private field with a plain TypeError.
    if (!PageSource.isPageSource(source) || source.closed) {
      throw new RemapError('E_SOURCE', `${op}: the source is ${PageSource.isPageSource(source) ? 'closed' : `not a PageSource made by PageSource.fromFd or a device's pages() (${show(source)})`}`);
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
    const busy = this.#runs.firstOverlap(first, last);
    if (busy) {
      const irq = Math.max(first, busy.first);
      throw new RemapError('E_ALREADY_ATTACHED', `${op}: interrupt ${irq} is already backed by ${busy.source.nameOf(irq - busy.first)}; detach it first`);
    }
    // An attach splits its IPI gap: one more VMA for each side of the gap it leaves. Check the
    // budget before anything is built or announced.
    if (this.mode === 'overlay') {
      this.#budget.ensure(op, this.#runs.length, () => ({ own: this.#runs.vmas(), extra: this.#runs.attachVmas(first, last) }));
    }
    // The table's own reference on the source is taken before notifiers run: an unmap handler may
    // close the caller's source (or its fd), and the run must not depend on it. Notifiers hear
    // `unmap` before anything is mapped: a veto or a surviving pin throws with nothing to undo but this reference.
    const run: Run = { first, count, source: source.slice(0, count, this.geometry.bytesPerIrq) };
    let note: PendingChange | null;
    try {
      note = this.#hub?.attaching(op, first, count, run.source) ?? null;
    } catch (e) {
      run.source.close();
      throw e;
    }
    const next = this.#runs.insert(run);
    const [from, to] = this.#mergeable ? [first, last] : this.#runs.gapAround(first, last);
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
    const hit = this.#runs.overlapping(first, last);
    if (hit.length === 0) return 0;
    // A detach adds at most one VMA per run it cuts in two (the piece on either side it keeps).
    if (this.mode === 'overlay') {
      this.#budget.ensure(op, this.#runs.length, () => ({
        own: this.#runs.vmas(),
        extra: Number((hit[0] as Run).first < first) + Number(end(hit[hit.length - 1] as Run) > last),
      }));
    }
    const note = this.#hub?.detaching(op, hit, first, last) ?? null;
    const bpi = this.geometry.bytesPerIrq;
    // The kept pieces hold their own references on the fd (slices), so the cut runs can be closed.
    const { table: next, kept, restored } = this.#runs.cut(first, last, (r, skip, count) => r.source.slice(skip, count, bpi)) as NonNullable<ReturnType<RunTable<PageSource>['cut']>>;
    const a = Math.max(first, (hit[0] as Run).first);
    const b = Math.min(last, end(hit[hit.length - 1] as Run));
    const [from, to] = this.#mergeable ? [a, b] : next.gapAround(a, b);
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
   * Notifiers that heard `unmap` get the old pages re-announced once they are back (`note.cancel()`).
   * If the restore fails too, /proc/self/maps decides: pages that are still what the table says
   * are not broken (both mmaps may have failed without touching anything), and only the span of
   * those that are not becomes `degraded`; for those no `map` follows: they may really be gone.
   */
  #fail(op: string, err: unknown, from: number, to: number, note: PendingChange | null = null): never {
    this.#stats.failures++;
    let pos = from; // [from, pos) is back as the table says: only [pos, to) can be broken
    try {
      for (const r of this.#runs.overlapping(from, to)) {
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
      // Which pages are not what the table says? Only the kernel knows: a failed MAP_FIXED may or
      // may not have unmapped its range first. Ask /proc/self/maps (this is the failure path, not
      // the hot path) and name only those; if it cannot be read, assume all of [pos, to) is lost.
      const broken = this.#brokenSpan(from, to) ?? [pos, to];
      if (broken.length === 2) {
        const [b0, b1] = broken;
        this.#degraded = Object.freeze({ first: b0, end: b1, reason: `${op} failed (${describeThrown(err)}) and restoring failed too (${describeThrown(restoreErr)})` });
        throw new RemapError('E_DEGRADED', `${op}: failed, and restoring interrupts ${b0}..${b1 - 1} failed too; they may be a hole. The region refuses further changes.`, { cause: err });
      }
      // The restore failed, but every page is still what the table says (neither mmap touched them):
      // the region is unchanged, as after a clean failure.
    }
    note?.cancel();
    if (errnoOf(err) === ENOMEM && this.#budget.exhausted()) {
      throw new RemapError(
        'E_VMA_BUDGET',
        `${op}: mmap failed with ENOMEM: the process is at its VMA limit (${this.#budget.limit}, ${this.#budget.limitSource}); the region is unchanged`,
        { cause: err },
      );
    }
    throw new RemapError('E_MAP', `${op}: mmap failed (${describeThrown(err)}); the region is unchanged`, { cause: err });
  }

  /**
   * After a failed restore: the span of interrupts in [from, to) whose pages /proc/self/maps shows
   * are not what the table says ([] if none), or null if the kernel's view cannot be read.
   */
  #brokenSpan(from: number, to: number): [number, number] | [] | null {
    let found: Discrepancy[];
    try {
      found = this.#audit();
    } catch {
      return null;
    }
    let b0 = to;
    let b1 = from;
    for (const d of found) {
      if (d.kind === 'vma-bound' || d.last < from || d.first >= to) continue;
      b0 = Math.min(b0, Math.max(d.first, from));
      b1 = Math.max(b1, Math.min(d.last + 1, to));
    }
    return b0 < b1 ? [b0, b1] : [];
  }

  #commit(next: RunTable<PageSource>): void {
    this.#runs = next;
    this.#stats.operations++;
  }

  // ---- guards ----

  #checkOpen(op: string): void {
    if (this.#state !== 'open') throw this.#closedError(op);
  }

  #closedError(op: string): RemapError {
    return new RemapError(
      'E_CLOSED',
      this.#state === 'closing'
        ? `${op}: the ESB region of ${this.#deviceName} is closing (close() failed to unmap it; call close() again)`
        : `${op}: the ESB region of ${this.#deviceName} is closed`,
    );
  }

  /**
   * Entry of every change: open, not degraded, not re-entered. Sets busy; the caller clears it.
   * Its refusals are published on `xive-remap:failure` here, since they leave before the caller's
   * try (whose `finally` must not clear a busy flag that belongs to the operation in progress).
   */
  #enter(op: string): void {
    let refusal: RemapError | undefined;
    if (this.#state !== 'open') refusal = this.#closedError(op);
    else if (this.#busy) refusal = new RemapError('E_BUSY', `${op}: called while another operation on this region is in progress`);
    else if (this.#degraded) {
      const d = this.#degraded;
      refusal = new RemapError('E_DEGRADED', `${op}: refused: interrupts ${d.first}..${d.end - 1} are broken (${d.reason})`);
    }
    if (refusal) {
      traceFailure(this.memslot.userspaceAddr, op, refusal);
      throw refusal;
    }
    this.#busy = true;
  }

  /** Same as `close()`, for `using esb = EsbController.open(dev)`. */
  [disposeSymbol](): void {
    this.close();
  }
}

const IPI: Backing = Object.freeze({ kind: 'ipi' });

/** What the controller keeps of an `EsbDevice`: its properties read once, at open. */
type DeviceSnapshot = Pick<EsbDevice, 'name' | 'nrIrqs' | 'geometry' | 'contract' | 'mergeable' | 'openIpiPages' | 'native'>;

/** Read a device's properties once; null if it is not an EsbDevice or one of its getters throws. */
function snapshotDevice(device: unknown): DeviceSnapshot | null {
  if (typeof device !== 'object' || device === null) return null;
  try {
    const d = device as EsbDevice;
    const snap = { name: d.name, nrIrqs: d.nrIrqs, geometry: d.geometry, contract: d.contract, mergeable: d.mergeable, openIpiPages: d.openIpiPages, native: d.native };
    const g = snap.geometry as EsbGeometry | undefined;
    if (typeof snap.openIpiPages !== 'function' || typeof g !== 'object' || g === null || typeof g.bytesPerIrq !== 'bigint' || typeof g.hostPageSize !== 'bigint') return null;
    if (!Number.isInteger(snap.nrIrqs) || snap.nrIrqs < 1) return null;
    return { ...snap, name: typeof snap.name === 'string' ? snap.name : show(snap.name), mergeable: snap.mergeable === true };
  } catch {
    return null;
  }
}

/** Read `open`'s options once. @throws RemapError E_OPTIONS if they are not an object or a getter throws */
function readOpenOptions(op: string, options: unknown, deviceNative: NativeLayer | undefined): { native: NativeLayer; mode: unknown; vmaLimit: unknown } {
  const fallback = deviceNative ?? realNative;
  if (options === undefined) return { native: fallback, mode: 'auto', vmaLimit: undefined };
  if (typeof options !== 'object' || options === null) {
    throw new RemapError('E_OPTIONS', `${op}: options ${show(options)} is not an object (omit it for the defaults)`);
  }
  try {
    const o = options as OpenOptions;
    return { native: o.native ?? fallback, mode: o.mode ?? 'auto', vmaLimit: o.vmaLimit };
  } catch (e) {
    throw new RemapError('E_OPTIONS', `${op}: reading the options threw (${describeThrown(e)})`, { cause: e });
  }
}
