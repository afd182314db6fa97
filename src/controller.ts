/**
 * The ESB remap controller: approach 3 of seeds/004. `open` maps every IPI ESB page of a device
 * once, as one range (the memslot the VMM registers with KVM, never touched again). `attach` maps a
 * passthrough source's ESB pages over the IPI pages of guest interrupts with one mmap(MAP_FIXED);
 * `detach` maps the IPI pages back with one mmap(MAP_FIXED). KVM sees each change through its MMU
 * notifiers, so the guest's next load reaches the new page.
 *
 * Data flow of every change: validate (bad input changes nothing) → build the next run table
 * (`RunTable`, src/run-table.ts: sorted, O(passthrough runs), changed only after the mmap) → one mmap → commit the table. If the mmap fails,
 * the pages of the touched range are put back to what the old table says *before* the error
 * leaves (some kernels unmap first and then fail, leaving a hole); if even that fails, the
 * controller is degraded and refuses further changes. Registered notifiers (src/notifiers.ts)
 * hear `unmap` after validation and before anything is built or mapped (a veto or a surviving pin
 * stops the change there, with nothing to undo), and `map` after the commit.
 *
 * VMA bound (invariant 5): where the kernel merges adjacent mappings of consecutive offsets of one
 * file (memfd), restoring an interrupt's own pages is enough: they merge with the IPI pages around
 * them, and the region has at most 2 × runs + 1 VMAs. Where it never merges (real ESB mappings are
 * VM_IO|VM_PFNMAP), restoring only the interrupt's own pages leaves its two edges as VMA
 * boundaries inside the IPI gap ("stale boundaries", tracked in `StaleBoundaries`). Remapping the
 * whole gap instead would remove them, but costs in proportion to the gap's populated pages (the
 * kernel zaps every PTE of it, KVM its own, and the guest faults them back). So the bound there is
 * amortized: a detach restores its own pages, unless that would take the stale boundaries past
 * K (`OpenOptions.vmaSlack`, default `DEFAULT_VMA_SLACK`) or leave the table empty; then that same
 * one mmap covers the interrupt's whole IPI gap, which removes every stale boundary in it. So the
 * region has at most 2 × runs + 1 + K VMAs after every call, 1 once nothing is attached, and a
 * detach still makes exactly one mmap. Figures: `npm run bench -- --vmas` (README, Performance).
 *
 * The hot path (attach/detach of one interrupt with no notifier: ~40–70 ns of JavaScript per pair,
 * `npm run bench -- --overlay`) is one flat stretch of code at the top of `attach` and `detach`,
 * making the same checks, the same one mmap and the same commit as the general path (`#attach`,
 * `#detach`), which takes everything else. It builds no op string unless something fails or
 * someone listens and makes no object: address arithmetic in Numbers where the region fits below
 * 2^53, handed to the native layer's Number entry (`NativeLayer.remapShared`; a layer without it
 * gets bigint `mmap` calls), the run's fd reference taken on the caller's own source object
 * (`regionRefs.hold`, counted on that object), the IPI pages mapped back from the region's own
 * duplicate of the handle's fixed fd where it has one (`IpiPages.fd`), the run table kept as typed
 * columns, the budget's threshold copied into a field. Flat and object-light because of where it
 * runs: between two mmaps, whose kernel path evicts the caches, every object it reaches is a likely
 * cache miss (README, Performance).
 */
import { auditRegion, backingFile, type Discrepancy, type ExpectedSegment, type FileId } from './audit.js';
import { RemapError, errnoOf, errnoValue, isRemapError } from './errors.js';
import type { DeviceContract, EsbDevice, IpiPages } from './device.js';
export type { Backing, RunInfo } from './run-table.js';
import { esbGeometry, sameLayout, type EsbGeometry } from './geometry.js';
import { realNative, MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, type NativeLayer } from './native/index.js';
import { PageSource, checkFits, regionRefs } from './source.js';
import { checkIrq, checkIrqRange, describeThrown, show } from './validate.js';
import { VmaBudget, systemMaxMapCount } from './vma-budget.js';
import { NotifierHub, notifierName, type EsbNotifier, type NotifierHandle, type PendingChange, type Pin, type PinInfo, type RegisterOptions } from './notifiers.js';
import { disposeSymbol } from './dispose.js';
import { RunTable, StaleBoundaries, runEnd as end, type Backing, type Run as TableRun, type RunInfo } from './run-table.js';
import { traceAttach, traceDetach, traceFailure, tracing, tracingAttach, tracingDetach, type ControllerStats } from './tracing.js';

const ENOMEM = errnoValue('ENOMEM');

/**
 * Default K of the amortized VMA bound on never-merging devices (2 × runs + 1 + K): stale VMA
 * boundaries a region keeps before a detach maps back a whole IPI gap. Each is one VMA of the
 * process (vm.max_map_count is 65,530 by default); 128 lets 64 own-pages detaches of single
 * interrupts go by between two whole-gap remaps.
 */
export const DEFAULT_VMA_SLACK = 128;

/** The four changes, by number: their op strings are built only when needed (errors, tracing, notifiers). */
const ATTACH = 0;
const ATTACH_RANGE = 1;
const DETACH = 2;
const DETACH_RANGE = 3;
type Change = typeof ATTACH | typeof ATTACH_RANGE | typeof DETACH | typeof DETACH_RANGE;

/** The op string of a change, as messages and traces name it: `attach(42)`, `detachRange(0, 16)`. */
function opName(kind: Change, a: unknown, b: unknown): string {
  switch (kind) {
    case ATTACH:
      return `attach(${show(a)})`;
    case ATTACH_RANGE:
      return `attachRange(${show(a)}, ${show(b)})`;
    case DETACH:
      return `detach(${show(a)})`;
    default:
      return `detachRange(${show(a)}, ${show(b)})`;
  }
}

/** `checkIrq`'s test without its message (the hot path builds the message only when it fails). */
const isIrq = (v: unknown, limit: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < limit;

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
  /**
   * K of the amortized VMA bound on devices the kernel never merges (2 × runs + 1 + K VMAs): how
   * many stale VMA boundaries own-pages detaches may leave before a detach maps back its whole
   * IPI gap (default `DEFAULT_VMA_SLACK`). 0: every detach keeps its gap one VMA (cost in
   * proportion to the gap). Ignored where the kernel merges (the bound is then 2 × runs + 1).
   */
  vmaSlack?: number;
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
type FastLayer = Required<Pick<NativeLayer, 'remapShared'>>;

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
  readonly #deviceName: string;
  #ipi: IpiPages | null;
  /** `closing`: close() delivered destroy but its munmap failed; everything needed to retry is kept. */
  #state: 'open' | 'closing' | 'closed' = 'open';
  /** A destroy handler's error, kept until a close() finishes (thrown then). */
  #destroyFailure: RemapError | undefined;
  #runs: RunTable<PageSource>;
  /** VMA boundaries inside IPI gaps (never-merging overlay regions only; at most #slack). */
  readonly #stale = new StaleBoundaries();
  /** K of the amortized bound; 0 where the kernel merges (nothing goes stale). */
  readonly #slack: number;
  /** Whether detaches may leave stale boundaries: overlay mode on a never-merging device. */
  readonly #amortized: boolean;
  /** The region's address as a Number (-1 if its end is past 2^53: then addresses are made in bigint). */
  readonly #baseN: number;
  /** bytesPerIrq as a Number (≤ 2^17 on every geometry, so irq × bytesPerIrq is exact). */
  readonly #bpiN: number;
  /**
   * The IPI file offset of interrupt 0 as a Number, where the device's offsets are
   * `offsetOf(0) + irq × bytesPerIrq` (the per-irq-offsets contract; checked at open on the first,
   * second and last interrupt) and fit below 2^53; else -1, and `offsetOf` is asked each time.
   */
  readonly #ipiBaseN: number;
  /**
   * The region's own duplicate of the IPI handle's fixed fd (`IpiPages.fd`, read at open before the
   * region's own mapping, duplicated inside `withFd` when that is the fd it handed over), kept where
   * the Number path maps the IPI pages back (`#numbers` and `#ipiBaseN ≥ 0`); else -1 and every
   * restore goes through `withFd`. Closed by `close()`. The handle's fd itself is never mapped from
   * outside `withFd`: a handle that closed it (or named one it closes after each mapping) would
   * leave a number that the next open file takes, and a detach would map that file's pages (past
   * its end: SIGBUS).
   */
  #ipiFdN: number;
  /**
   * Whether changes (overlay mode only: kernel-managed maps nothing) go through the native layer's
   * Number entry (`NativeLayer.remapShared`, where the layer defines it as its own property) — the
   * region's addresses fit below 2^53 — or through
   * `mmap` with bigints. Making a bigint costs ~25 ns and koffi converts Numbers faster. It is
   * called as a method of the layer each time (not kept apart from it), so a Proxy over the layer
   * sees every call.
   */
  readonly #numbers: boolean;
  /** What `#mapIpiFd` / `#remapIpiFd` map: set just before `withFd` calls them (one function each, no closure per detach). */
  #ipiAt = 0n;
  #ipiLen = 0n;
  #ipiOff = 0n;
  #ipiAtN = 0;
  #ipiLenN = 0;
  #ipiOffN = 0;
  readonly #mapIpiFd = (fd: number): bigint => this.#native.mmap(this.#ipiAt, this.#ipiLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, this.#ipiOff);
  readonly #remapIpiFd = (fd: number): void => (this.#native as FastLayer).remapShared(this.#ipiAtN, this.#ipiLenN, fd, this.#ipiOffN);
  /** `RunTable.cut`'s callbacks: the kept pieces of a cut run hold their own fd references; a cut run's is dropped. */
  readonly #piece = (r: Run, skip: number, count: number): PageSource => regionRefs.piece(r.source, skip, count, this.geometry.bytesPerIrq);
  readonly #dropRun = (source: PageSource): void => regionRefs.drop(source);
  #busy = false;
  readonly #budget: VmaBudget;
  /** `#budget.roomyUpTo`, copied after every call that may re-count the process's VMAs (the hot path reads this). */
  #roomyUpTo = 0;
  /** The last frozen source geometry found to lay interrupts out as the region does (`#sameLayout`). */
  #sameGeometry: EsbGeometry | undefined = undefined;
  #degraded: Degraded | null = null;
  /** Counters of `stats()`, as fields of the controller itself (the hot path touches one object fewer). */
  #operations = 0;
  #failures = 0;
  #syscalls = 0;
  /** Notifiers and pins (src/notifiers.ts); null until the first register, so the hot path pays one null check. */
  #hub: NotifierHub | null = null;

  private constructor(device: DeviceSnapshot, ipi: IpiPages, ipiFd: number, memslot: Memslot, mode: 'overlay' | 'kernel-managed', native: NativeLayer, vmaLimit: number, limitSource: string, slack: number) {
    this.memslot = Object.freeze(memslot);
    this.nrIrqs = device.nrIrqs;
    this.geometry = device.geometry;
    this.contract = device.contract;
    this.mode = mode;
    this.#native = native;
    this.#deviceName = device.name;
    this.#ipi = ipi;
    this.#runs = RunTable.empty(device.nrIrqs);
    this.#amortized = mode === 'overlay' && !device.mergeable;
    this.#slack = this.#amortized ? slack : 0;
    const endN = Number(memslot.userspaceAddr + memslot.size);
    this.#baseN = Number.isSafeInteger(endN) ? Number(memslot.userspaceAddr) : -1;
    this.#bpiN = Number(device.geometry.bytesPerIrq);
    this.#ipiBaseN = linearIpiBase(ipi, device.nrIrqs, device.geometry.bytesPerIrq);
    this.#numbers = mode === 'overlay' && this.#baseN >= 0 && hasOwnRemap(native);
    this.#ipiFdN = this.#numbers && this.#ipiBaseN >= 0 ? ipiFd : -1;
    this.#budget = new VmaBudget(native, vmaLimit, memslot.userspaceAddr, memslot.userspaceAddr + memslot.size, limitSource);
    this.#roomyUpTo = this.#budget.roomyUpTo;
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
    const { native, mode: asked, vmaLimit: limitAsked, vmaSlack: slackAsked } = readOpenOptions(op, options, dev.native);
    if (limitAsked !== undefined && !(typeof limitAsked === 'number' && Number.isInteger(limitAsked) && limitAsked > 0)) {
      throw new RemapError('E_VMA_BUDGET', `${op}: vmaLimit ${show(limitAsked)} is not a positive integer`);
    }
    const vmaLimit = limitAsked as number | undefined;
    if (slackAsked !== undefined && !(typeof slackAsked === 'number' && Number.isInteger(slackAsked) && slackAsked >= 0)) {
      throw new RemapError('E_VMA_BUDGET', `${op}: vmaSlack ${show(slackAsked)} is not a non-negative integer`);
    }
    const slack = (slackAsked as number | undefined) ?? DEFAULT_VMA_SLACK;
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
    const g = dev.geometry; // the region's own frozen copy (snapshotDevice): the device's object may change later
    if (g.hostPageSize !== BigInt(native.pageSize)) {
      throw new RemapError('E_GEOMETRY', `${op}: device geometry assumes ${g.hostPageSize}-byte pages, the host has ${native.pageSize}`);
    }
    const size = BigInt(dev.nrIrqs) * g.bytesPerIrq;
    let ipi: IpiPages;
    try {
      ipi = dev.openIpiPages.call(device);
    } catch (e) {
      throw isRemapError(e) ? e : new RemapError('E_MAP', `${op}: getting a handle on the device's IPI ESB pages failed`, { cause: e });
    }
    if (!isIpiPages(ipi)) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: the device's openIpiPages() returned ${show(ipi)}, not IpiPages (withFd, offsetOf, close)`);
    }
    let addr: bigint;
    // The handle's fixed fd, if it names one where detaches may use it (overlay, Number entry); the
    // region then keeps its own duplicate of it, made while `withFd` hands it over for the mapping.
    const fixed = mode === 'overlay' && hasOwnRemap(native) ? fixedIpiFd(ipi) : -1;
    let ownFd = -1;
    try {
      addr = ipi.withFd((fd) => {
        const at = native.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, ipi.offsetOf(0));
        if (fd === fixed && ownFd < 0) ownFd = dupOrNone(native, fd);
        return at;
      });
    } catch (e) {
      closeFd(native, ownFd);
      ipi.close();
      throw new RemapError('E_MAP', `${op}: mapping the IPI ESB pages of ${dev.nrIrqs} interrupts (0x${size.toString(16)} bytes) failed`, { cause: e });
    }
    try {
      native.claim(addr, size);
      // The budget reads /proc/self/maps once here, so that no change has to.
      const system = systemMaxMapCount();
      const [limit, limitSource] =
        vmaLimit !== undefined ? [vmaLimit, 'the vmaLimit option'] : system !== undefined ? [system, 'vm.max_map_count'] : [65530, 'vm.max_map_count assumed: /proc/sys/vm/max_map_count unreadable'];
      const esb = new EsbController(dev, ipi, ownFd, { userspaceAddr: addr, size }, mode, native, limit, limitSource, slack);
      // (Closed here, not by the constructor: until it returned, the catch below owned the duplicate.)
      if (esb.#ipiFdN !== ownFd) closeFd(native, ownFd); // a duplicate nothing would map from
      esb.#syscalls++;
      return esb;
    } catch (e) {
      native.release(addr, size);
      try {
        native.munmap(addr, size);
      } catch {
        /* best effort: the error that matters is the one thrown below */
      }
      closeFd(native, ownFd);
      ipi.close();
      throw isRemapError(e) ? e : new RemapError('E_MAP', `${op}: counting the process's VMAs failed`, { cause: e });
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
    // The common case in one flat stretch of code (see "The hot path" above): same checks, same one
    // mmap, same commit as #attach, for a live single-interrupt source at a free interrupt of an
    // open region with no notifier. Anything else, and any failure, takes the general path below.
    if (this.#state === 'open' && !this.#busy && this.#degraded === null && this.#hub === null && this.#numbers && isIrq(irq, this.nrIrqs) && PageSource.isPageSource(source) && !source.closed && source.count === 1 && this.#sameLayout(source.geometry)) {
      const off = source.offsetNumber;
      const limN = source.limitNumber;
      const table = this.#runs;
      const at = table.lowerBound(irq);
      if (off >= 0 && off + this.#bpiN <= limN && !(at > 0 && table.endAt(at - 1) > irq) && !(at < table.length && table.firstAt(at) <= irq) && 2 * table.length + 1 + (this.#amortized ? this.#stale.size : 0) <= this.#roomyUpTo) {
        this.#busy = true;
        try {
          regionRefs.hold(source);
          this.#syscalls++;
          try {
            (this.#native as FastLayer).remapShared(this.#baseN + irq * this.#bpiN, this.#bpiN, source.fd, off);
          } catch (e) {
            regionRefs.drop(source);
            const [from, to] = this.#amortized ? table.gapAround(irq, irq + 1) : [irq, irq + 1];
            this.#fail(opName(ATTACH, irq, undefined), e, from, to);
          }
          table.add(irq, 1, source, at);
          if (this.#amortized && this.#stale.size > 0) this.#stale.removeIn(irq, irq + 1);
          this.#operations++;
          if (tracingAttach()) traceAttach(this.memslot.userspaceAddr, opName(ATTACH, irq, undefined), irq, 1, source);
        } catch (e) {
          traceFailure(this.memslot.userspaceAddr, opName(ATTACH, irq, undefined), e);
          throw e;
        } finally {
          this.#busy = false;
        }
        return;
      }
    }
    this.#enter(ATTACH, irq, undefined);
    try {
      if (!isIrq(irq, this.nrIrqs)) checkIrq(opName(ATTACH, irq, undefined), irq, this.nrIrqs);
      this.#attach(ATTACH, irq, 1, source);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, opName(ATTACH, irq, undefined), e);
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
    this.#enter(ATTACH_RANGE, first, count);
    try {
      checkIrqRange(opName(ATTACH_RANGE, first, count), first, count, this.nrIrqs);
      this.#attach(ATTACH_RANGE, first, count, source);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, opName(ATTACH_RANGE, first, count), e);
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
    // The common case flat, as in attach: a run of exactly this one interrupt, no notifier (the
    // same gap and stale-boundary rule as #detach, for i = k, j = k + 1 and nothing cut).
    if (this.#state === 'open' && !this.#busy && this.#degraded === null && this.#hub === null && this.#numbers && this.#ipiBaseN >= 0 && isIrq(irq, this.nrIrqs)) {
      const table = this.#runs;
      const k = table.lowerBound(irq + 1) - 1;
      if (k >= 0 && table.firstAt(k) === irq && table.endAt(k) === irq + 1 && 2 * table.length + 1 + (this.#amortized ? this.#stale.size : 0) <= this.#roomyUpTo) {
        this.#busy = true;
        try {
          const g0 = k > 0 ? table.endAt(k - 1) : 0;
          const g1 = k + 1 < table.length ? table.firstAt(k + 1) : this.nrIrqs;
          let from = irq;
          let to = irq + 1;
          if (this.#amortized && (this.#stale.size + Number(irq > g0) + Number(irq + 1 < g1) > this.#slack || table.length === 1)) {
            from = g0;
            to = g1;
          }
          try {
            this.#mapIpi(from, to);
          } catch (e) {
            this.#fail(opName(DETACH, irq, undefined), e, from, to);
          }
          regionRefs.drop(table.removeAt(k));
          if (this.#amortized) {
            this.#stale.removeIn(from, to);
            if (from > g0) this.#stale.add(from);
            if (to < g1) this.#stale.add(to);
          }
          this.#operations++;
          if (tracingDetach()) traceDetach(this.memslot.userspaceAddr, opName(DETACH, irq, undefined), irq, 1, 1);
        } catch (e) {
          traceFailure(this.memslot.userspaceAddr, opName(DETACH, irq, undefined), e);
          throw e;
        } finally {
          this.#busy = false;
        }
        return true;
      }
    }
    this.#enter(DETACH, irq, undefined);
    try {
      if (!isIrq(irq, this.nrIrqs)) checkIrq(opName(DETACH, irq, undefined), irq, this.nrIrqs);
      return this.#detach(DETACH, irq, irq + 1) > 0;
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, opName(DETACH, irq, undefined), e);
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
    this.#enter(DETACH_RANGE, first, count);
    try {
      checkIrqRange(opName(DETACH_RANGE, first, count), first, count, this.nrIrqs);
      return this.#detach(DETACH_RANGE, first, first + count);
    } catch (e) {
      traceFailure(this.memslot.userspaceAddr, opName(DETACH_RANGE, first, count), e);
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
      operations: this.#operations,
      failures: this.#failures + (hub?.refusals ?? 0),
      syscalls: this.#syscalls,
      runs: this.#runs.length,
      vmas: this.mode === 'overlay' ? this.#runs.vmas() + this.#stale.size : 1,
      vmaBound: this.mode === 'overlay' ? 2 * this.#runs.length + 1 + this.#slack : 1,
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
      return this.#hub.register(op, notifier, options ?? {}, this.#runs.snapshot(), this.#degraded);
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
      if (isRemapError(e)) throw e;
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
      segments.push({ first: r.first, count: r.count, name: r.source.nameOf(0), file: fileOf(r.source.fd), offset: r.source.offset });
      pos = end(r);
    }
    gapTo(this.nrIrqs);
    return auditRegion(
      { base: this.memslot.userspaceAddr, bytesPerIrq: this.geometry.bytesPerIrq, nrIrqs: this.nrIrqs, segments, runs: runs.length, slack: this.#slack },
      this.#native.readMaps(),
    );
  }

  /**
   * Unmap the whole region (one munmap: the memslot must be deleted from KVM first), drop every
   * source's fd and the device handle (and the region's duplicate of its fixed fd). Later calls
   * throw E_CLOSED; closing again does nothing. If the munmap fails, nothing is released: the range
   * stays owned and every fd open, every other call gets E_CLOSED, and calling `close()` again
   * retries the munmap (otherwise the mapping and its fds would be lost for the life of the process).
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
    if (this.#state === 'open') {
      if (this.#hub) {
        this.#busy = true;
        try {
          // Kept on the region: if the munmap below fails, the retry that succeeds still reports it.
          this.#destroyFailure = this.#hub.close();
        } finally {
          this.#busy = false;
          this.#hub = null;
        }
      }
      // Only now: destroy handlers may still read the region (backingOf, the pages themselves).
      this.#state = 'closing';
    }
    try {
      this.#syscalls++;
      this.#native.munmap(userspaceAddr, size);
    } catch (e) {
      throw new RemapError('E_MAP', `close(): unmapping the region at 0x${userspaceAddr.toString(16)} failed; it stays mapped and owned, call close() again to retry`, { cause: e });
    }
    this.#state = 'closed';
    this.#native.release(userspaceAddr, size);
    for (const r of this.#runs.runs) regionRefs.drop(r.source);
    this.#runs = RunTable.empty(this.nrIrqs);
    this.#stale.clear();
    closeFd(this.#native, this.#ipiFdN);
    this.#ipiFdN = -1;
    this.#ipi?.close();
    this.#ipi = null;
    const destroyFailure = this.#destroyFailure;
    this.#destroyFailure = undefined;
    if (destroyFailure) throw destroyFailure;
  }

  // ---- the two changes ----

  #attach(kind: Change, first: number, count: number, source: PageSource): void {
    const last = first + count;
    // A brand check, not instanceof: a Proxy of a PageSource or an object made from its prototype
    // would pass instanceof and then fail on the first private field with a plain TypeError.
    if (!PageSource.isPageSource(source) || source.closed) {
      throw new RemapError('E_SOURCE', `${opName(kind, first, count)}: the source is ${PageSource.isPageSource(source) ? 'closed' : `not a PageSource made by PageSource.fromFd or a device's pages() (${show(source)})`}`);
    }
    if (source.count !== count) {
      throw new RemapError('E_SOURCE', `${opName(kind, first, count)}: the source ${source.nameOf(0)} holds ${source.count} interrupt(s), not ${count}${count === 1 ? ' (use attachRange)' : ''}`);
    }
    const sg = source.geometry;
    if (sg && sg !== this.geometry && !sameLayout(sg, this.geometry)) {
      throw new RemapError('E_GEOMETRY', `${opName(kind, first, count)}: the source ${source.nameOf(0)} has esbShift ${sg.esbShift}, the region ${this.geometry.esbShift}`);
    }
    // (Messages are only built when a check fails: attach is a hot path. Number arithmetic is
    // exact while the limit is below 2^53; past it, bigint.)
    const limN = source.limitNumber;
    if (!(limN >= 0 && source.offsetNumber + count * this.#bpiN <= limN) && source.offset + BigInt(count) * this.geometry.bytesPerIrq > source.limit) {
      checkFits(`${opName(kind, first, count)}: source ${source.nameOf(0)}`, source.offset, count, source.limit, this.geometry);
    }
    const table = this.#runs;
    // Where the run goes; the run before it must end by `first`, the one there start at `last` or later.
    const at = table.lowerBound(first);
    const busy = at > 0 && table.endAt(at - 1) > first ? at - 1 : at < table.length && table.firstAt(at) < last ? at : -1;
    if (busy >= 0) {
      const irq = Math.max(first, table.firstAt(busy));
      throw new RemapError('E_ALREADY_ATTACHED', `${opName(kind, first, count)}: interrupt ${irq} is already backed by ${table.sourceAt(busy).nameOf(irq - table.firstAt(busy))}; detach it first`);
    }
    // An attach splits its IPI gap: one more VMA for each side of the gap it leaves. Check the
    // budget before anything is built or announced (counting only when near the limit).
    // (The region has at most 2 × runs + 1 + stale VMAs now: the stale count, not K, keeps the fast path.)
    if (this.mode === 'overlay' && !this.#budget.roomy(2 * table.length + 1 + this.#stale.size)) {
      this.#ensureRoom(opName(kind, first, count), table.attachVmas(first, last));
    }
    // The table's own reference on the source's fd is taken before notifiers run: an unmap handler
    // may close the caller's source (or its fd), and the run must not depend on it. The run keeps
    // the caller's source object (its fields are read-only); only the reference is the region's.
    // Notifiers hear `unmap` before anything is mapped: a veto or a surviving pin throws with
    // nothing to undo but this reference.
    regionRefs.hold(source);
    let note: PendingChange | null = null;
    const hub = this.#hub;
    if (hub) {
      try {
        note = hub.attaching(opName(kind, first, count), first, count, source);
      } catch (e) {
        regionRefs.drop(source);
        throw e;
      }
    }
    try {
      if (this.mode === 'overlay') this.#mapSource(first, count, source, 0);
    } catch (e) {
      regionRefs.drop(source);
      // Restore [first, last), or on a never-merging device its whole gap (so the restore leaves no stale boundary).
      const [from, to] = this.#amortized ? table.gapAround(first, last) : [first, last];
      this.#fail(opName(kind, first, count), e, from, to, note);
    }
    // Commit: the mmap succeeded. Boundaries inside [first, last] are gone or are run edges now.
    table.add(first, count, source, at);
    if (this.#amortized) this.#stale.removeIn(first, last);
    this.#operations++;
    if (tracing.attach) traceAttach(this.memslot.userspaceAddr, opName(kind, first, count), first, count, source);
    note?.done();
  }

  /** Whether a source's geometry (or none) lays interrupts out as the region does (false if reading it throws: the general path then reports it). */
  #sameLayout(sg: EsbGeometry | undefined): boolean {
    if (sg === undefined || sg === this.geometry || sg === this.#sameGeometry) return true;
    try {
      if (!sameLayout(sg, this.geometry)) return false;
      // A frozen geometry object cannot change: remember it, so the next attach compares a pointer.
      if (Object.isFrozen(sg)) this.#sameGeometry = sg;
      return true;
    } catch {
      return false;
    }
  }

  /**
   * The VMA budget's exact check, for a change that adds up to `extra` VMAs (only near the limit).
   * Its closure lives here, not in #attach/#detach: a closure over their locals would make V8
   * allocate a context object on every call of theirs, the hot path's largest allocation.
   */
  #ensureRoom(op: string, extra: number): void {
    const table = this.#runs;
    try {
      this.#budget.ensure(op, table.length, () => ({ own: table.vmas() + this.#stale.size, extra }), this.#stale.size);
    } finally {
      this.#roomyUpTo = this.#budget.roomyUpTo; // it may have re-counted
    }
  }

  #detach(kind: Change, first: number, last: number): number {
    const table = this.#runs;
    const i = table.hitIndex(first);
    const j = table.lowerBound(last);
    if (i >= j) return 0;
    const headFirst = table.firstAt(i);
    const tailEnd = table.endAt(j - 1);
    const cutsHead = headFirst < first;
    const cutsTail = tailEnd > last;
    // A detach adds at most one VMA per run it cuts in two (the piece on either side it keeps).
    if (this.mode === 'overlay' && !this.#budget.roomy(2 * table.length + 1 + this.#stale.size)) {
      this.#ensureRoom(opName(kind, first, last - first), Number(cutsHead) + Number(cutsTail));
    }
    const hub = this.#hub;
    const note = hub ? hub.detaching(opName(kind, first, last - first), table.overlapping(first, last), first, last) : null;
    // [a, b): the interrupts that go back to IPI, from the first to the last of them. [g0, g1):
    // the IPI gap they will be part of (a kept piece of a cut run ends it on that side).
    const a = cutsHead ? first : headFirst;
    const b = cutsTail ? last : tailEnd;
    const g0 = cutsHead ? a : i > 0 ? table.endAt(i - 1) : 0;
    const g1 = cutsTail ? b : j < table.length ? table.firstAt(j) : this.nrIrqs;
    let from = a;
    let to = b;
    if (this.#amortized) {
      // Own pages leave a stale boundary at a (b) if the gap goes on past it. Too many, or an
      // empty table (which must be one VMA): map the whole gap in this same mmap instead.
      const stale = this.#stale.size - this.#stale.countIn(a + 1, b - 1) + Number(a > g0) + Number(b < g1);
      if (stale > this.#slack || (!cutsHead && !cutsTail && j - i === table.length)) {
        from = g0;
        to = g1;
      }
    }
    try {
      if (this.mode === 'overlay') this.#mapIpi(from, to);
    } catch (e) {
      // Put back what the mmap covered, as the table says, piece by piece: every boundary the
      // restore makes inside [from, to) is a run edge, so it leaves no stale one.
      this.#fail(opName(kind, first, last - first), e, from, to, note);
    }
    // Commit: the mmap succeeded. Kept pieces take their fd references before the cut runs drop theirs.
    const restored = table.cut(first, last, this.#piece, this.#dropRun, i, j);
    if (this.#amortized) {
      this.#stale.removeIn(from, to);
      if (from > g0) this.#stale.add(from);
      if (to < g1) this.#stale.add(to);
    }
    this.#operations++;
    if (tracing.detach) traceDetach(this.memslot.userspaceAddr, opName(kind, first, last - first), first, last - first, restored);
    note?.done();
    return restored;
  }

  // ---- mapping ----

  /** Address of interrupt `irq`'s first page (the bigint path). */
  #addr(irq: number): bigint {
    return this.memslot.userspaceAddr + BigInt(irq) * this.geometry.bytesPerIrq;
  }

  /** Bytes of `count` interrupts (the bigint path). */
  #len(count: number): bigint {
    return BigInt(count) * this.geometry.bytesPerIrq;
  }

  /**
   * Map the IPI pages of [first, last) back: one mmap (Numbers where the native layer and the
   * offsets allow; straight from the region's duplicate of the handle's fixed fd where it has one,
   * else through `withFd`).
   */
  #mapIpi(first: number, last: number): void {
    this.#syscalls++;
    if (this.#ipiFdN >= 0) {
      (this.#native as FastLayer).remapShared(this.#baseN + first * this.#bpiN, (last - first) * this.#bpiN, this.#ipiFdN, this.#ipiBaseN + first * this.#bpiN);
      return;
    }
    const ipi = this.#ipi as IpiPages;
    if (this.#numbers && this.#ipiBaseN >= 0) {
      this.#ipiAtN = this.#baseN + first * this.#bpiN;
      this.#ipiLenN = (last - first) * this.#bpiN;
      this.#ipiOffN = this.#ipiBaseN + first * this.#bpiN;
      ipi.withFd(this.#remapIpiFd);
      return;
    }
    this.#ipiAt = this.#addr(first);
    this.#ipiLen = this.#len(last - first);
    this.#ipiOff = ipi.offsetOf(first);
    ipi.withFd(this.#mapIpiFd);
  }

  /** Map `count` interrupts of `source`, from its interrupt `skip`, at guest interrupt `first`. */
  #mapSource(first: number, count: number, source: PageSource, skip: number): void {
    this.#syscalls++;
    const off = source.offsetNumber;
    if (this.#numbers && off >= 0) {
      (this.#native as FastLayer).remapShared(this.#baseN + first * this.#bpiN, count * this.#bpiN, source.fd, off + skip * this.#bpiN);
      return;
    }
    this.#native.mmap(this.#addr(first), this.#len(count), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, source.fd, source.offset + BigInt(skip) * this.geometry.bytesPerIrq);
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
    this.#failures++;
    // Restore whole runs: a run mapped back in pieces would be split into several VMAs on a
    // device that never merges (real ESB pages), boundaries that neither the table nor the stale
    // count knows of. Mapping a run's intact pages over themselves is harmless.
    const hit = this.#runs.overlapping(from, to);
    if (hit.length > 0) {
      from = Math.min(from, (hit[0] as Run).first);
      to = Math.max(to, end(hit[hit.length - 1] as Run));
    }
    let pos = from; // [from, pos) is back as the table says: only [pos, to) can be broken
    try {
      for (const r of hit) {
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
      // Every VMA boundary inside [from, to] is a run edge now (each piece was mapped on its own).
      if (this.#amortized) this.#stale.removeIn(from, to);
    } catch (restoreErr) {
      // Which pages are not what the table says? Only the kernel knows: a failed MAP_FIXED may or
      // may not have unmapped its range first. Ask /proc/self/maps (this is the failure path, not
      // the hot path) and name only those; if it cannot be read, assume all of [pos, to) is lost.
      const broken = this.#brokenSpan(from, to) ?? [pos, to];
      if (broken.length === 2) {
        const [b0, b1] = broken;
        this.#degraded = Object.freeze({ first: b0, end: b1, reason: `${op} failed (${describeThrown(err)}) and restoring failed too (${describeThrown(restoreErr)})` });
        // Pages outside [b0, b1) are what the table says: notifiers that took their unmap hear so.
        note?.cancel(this.#degraded);
        throw new RemapError('E_DEGRADED', `${op}: failed, and restoring interrupts ${b0}..${b1 - 1} failed too; they may be a hole. The region refuses further changes.`, { cause: err });
      }
      // The restore failed, but every page is still what the table says (neither mmap touched them):
      // the region is unchanged, as after a clean failure.
    }
    note?.cancel();
    const exhausted = errnoOf(err) === ENOMEM && this.#budget.exhausted();
    this.#roomyUpTo = this.#budget.roomyUpTo; // exhausted() re-counts
    if (exhausted) {
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
  #enter(kind: Change, a: unknown, b: unknown): void {
    if (this.#state === 'open' && !this.#busy && this.#degraded === null) {
      this.#busy = true;
      return;
    }
    const op = opName(kind, a, b);
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

/** offsetOf(0) as a Number if offsetOf(irq) = offsetOf(0) + irq × bpi at 0, 1 and nrIrqs − 1 and all fit below 2^53; else -1 (never throws). */
/** Whether the layer has `remapShared` as its own property (see `NativeLayer.remapShared`). */
function hasOwnRemap(native: NativeLayer): boolean {
  try {
    const d = Object.getOwnPropertyDescriptor(native, 'remapShared');
    return d !== undefined && typeof d.value === 'function';
  } catch {
    return false; // a Proxy that throws: the layer gets mmap calls
  }
}

function linearIpiBase(ipi: IpiPages, nrIrqs: number, bpi: bigint): number {
  try {
    const o0 = ipi.offsetOf(0);
    const last = o0 + BigInt(nrIrqs - 1) * bpi;
    if (typeof o0 !== 'bigint' || o0 < 0n || ipi.offsetOf(nrIrqs - 1) !== last || (nrIrqs > 1 && ipi.offsetOf(1) !== o0 + bpi)) return -1;
    return Number.isSafeInteger(Number(last + bpi)) ? Number(o0) : -1;
  } catch {
    return -1;
  }
}

/**
 * The handle's fixed fd (`IpiPages.fd`) if it is a plain fd number; else -1 (never throws: a getter
 * that throws, or any other value, just leaves every restore to `withFd`). Read once, before the
 * region's own mapping: it is used only if `withFd` then hands over this very fd.
 */
function fixedIpiFd(ipi: IpiPages): number {
  try {
    const fd = ipi.fd;
    return typeof fd === 'number' && (fd | 0) === fd && fd >= 0 ? fd : -1;
  } catch {
    return -1;
  }
}

/** A close-on-exec duplicate of `fd`, or -1 if it cannot be made (the region then restores through `withFd`). */
function dupOrNone(native: NativeLayer, fd: number): number {
  try {
    return native.dupCloexec(fd);
  } catch {
    return -1;
  }
}

/** Close `fd` unless it is -1 (best effort: Linux frees the fd even when close(2) fails). */
function closeFd(native: NativeLayer, fd: number): void {
  if (fd < 0) return;
  try {
    native.close(fd);
  } catch {
    /* the fd is gone either way */
  }
}

/** Whether `v` has the methods of `IpiPages` (never throws). */
function isIpiPages(v: unknown): v is IpiPages {
  try {
    const p = v as IpiPages | null;
    return typeof p === 'object' && p !== null && typeof p.withFd === 'function' && typeof p.offsetOf === 'function' && typeof p.close === 'function';
  } catch {
    return false;
  }
}

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
    // A frozen copy recomputed from esbShift: the controller caches figures derived from it at open,
    // so a geometry object that is inconsistent, or changed later by its owner, must not be used.
    const own = esbGeometry(g.esbShift, g.hostPageSize);
    if (!sameLayout(own, g) || own.bytesPerIrq !== g.bytesPerIrq || own.esbPageSize !== g.esbPageSize || own.pagesPerIrq !== g.pagesPerIrq) return null;
    return { ...snap, geometry: own, name: typeof snap.name === 'string' ? snap.name : show(snap.name), mergeable: snap.mergeable === true };
  } catch {
    return null;
  }
}

/** Read `open`'s options once. @throws RemapError E_OPTIONS if they are not an object or a getter throws */
function readOpenOptions(op: string, options: unknown, deviceNative: NativeLayer | undefined): { native: NativeLayer; mode: unknown; vmaLimit: unknown; vmaSlack: unknown } {
  const fallback = deviceNative ?? realNative;
  if (options === undefined) return { native: fallback, mode: 'auto', vmaLimit: undefined, vmaSlack: undefined };
  if (typeof options !== 'object' || options === null) {
    throw new RemapError('E_OPTIONS', `${op}: options ${show(options)} is not an object (omit it for the defaults)`);
  }
  try {
    const o = options as OpenOptions;
    return { native: o.native ?? fallback, mode: o.mode ?? 'auto', vmaLimit: o.vmaLimit, vmaSlack: o.vmaSlack };
  } catch (e) {
    throw new RemapError('E_OPTIONS', `${op}: reading the options threw (${describeThrown(e)})`, { cause: e });
  }
}
