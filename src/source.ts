/**
 * Where passthrough pages come from. A `PageSource` is an fd, a file offset and a number of
 * interrupts, validated once when it is made so that attach is a single mmap and can never fail
 * later or SIGBUS the guest (invariant 6). `fromFd` checks, in this order: the file type (fstat),
 * the access mode (F_GETFL), that the size cannot shrink under a region (F_GET_SEALS, or the kind
 * of fd: see `fromFd`), the size against the pages, and last that the fd really maps shared
 * read-write (a trial mmap of the first page at a fresh address, unmapped at once). The cost is
 * paid here, once per source, never on attach.
 *
 * A source holds its own duplicate of the fd in a reference-counted `SharedFd` (slices share it):
 * the caller may close its fd at any time (invariant 7), and each attached run keeps the duplicate
 * alive until it is detached (a reference of the region's own, `regionRefs`), so a failed detach can
 * always put the passthrough pages back. The region's references are counted on the source object
 * itself, which holds one reference on the `SharedFd` for as long as it is open or held: an
 * attach+detach then touches only the source, not the handle (README, Performance: every distinct
 * object the hot path reaches between its two system calls costs time).
 */
import { NativeError, RemapError, isRemapError } from './errors.js';
import type { EsbGeometry } from './geometry.js';
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  realNative,
  type NativeLayer,
} from './native/index.js';
import { describeThrown, show } from './validate.js';
import { disposeSymbol } from './dispose.js';

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const EINVAL = 22; // the same on every Linux architecture (asm-generic/errno-base.h)

/**
 * How fstat's file type sorts an fd by whether its size can shrink under a mapping:
 * - `device`: a character device (S_IFCHR, e.g. VFIO's /dev/vfio/devices/vfioN) or an anonymous
 *   inode (no file type bits: KVM device fds, VFIO device fds from VFIO_GROUP_GET_DEVICE_FD). The
 *   driver's mmap handler decides what is mapped; there is no file size a caller could shrink.
 * - `file`: a regular file (S_IFREG; memfds too): ftruncate can shrink it, and a page past its new
 *   end SIGBUSes on the next load, so it needs F_SEAL_SHRINK or the caller's `sizeIsFixed`.
 * Anything else (pipe, socket, directory, block device) cannot be a source. fstat reports an
 * anonymous inode with no file type bits (seen on 6.18 with an eventfd and a KVM vCPU fd, whose
 * test checks it). A kernel that reported another type for them would make device fds look like
 * unsealable files: refused with a message naming `sizeIsFixed`, never unsafe.
 */
export function fdKind(mode: number): 'device' | 'file' | null {
  const type = mode & S_IFMT;
  if (type === S_IFREG) return 'file';
  if (type === S_IFCHR || type === 0) return 'device';
  return null;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** An fd shared by reference count: closed when the last holder releases it. */
export class SharedFd {
  #refs = 1;
  constructor(
    /** The native layer that closes it. */
    readonly native: NativeLayer,
    /** The fd number (owned by this object). */
    readonly fd: number,
  ) {}

  /** Whether it has been closed. */
  get closed(): boolean {
    return this.#refs === 0;
  }

  /** Whether `v` really is a SharedFd (a brand check; never throws). */
  static isSharedFd(v: unknown): v is SharedFd {
    return typeof v === 'object' && v !== null && #refs in v;
  }

  /** Take another reference. @throws Error if already closed (a library bug) */
  retain(): this {
    if (this.#refs === 0) throw new RemapError('E_SOURCE', `the source's fd ${this.fd} is closed; it cannot be attached`);
    this.#refs++;
    return this;
  }

  /** Drop a reference; the last one closes the fd (best effort: a close error is not actionable). */
  release(): void {
    if (this.#refs === 0) return;
    if (--this.#refs === 0) {
      try {
        this.native.close(this.fd);
      } catch {
        /* the fd is gone either way */
      }
    }
  }
}

/** Options of `PageSource.fromFd`. */
export interface FromFdOptions {
  /**
   * Bytes of the fd that may be mapped, for fds whose fstat size is 0 (VFIO and KVM device fds:
   * e.g. the region size VFIO_DEVICE_GET_REGION_INFO reports). Where fstat knows the size it may
   * only narrow it.
   */
  length?: bigint;
  /** The source's ESB layout when it is known; attach refuses a region with another layout. */
  geometry?: EsbGeometry;
  /**
   * For a regular file that is not sealed with F_SEAL_SHRINK: the caller guarantees that nothing
   * truncates the file below the pages while any region maps them (e.g. a sysfs PCI resource file,
   * or a file only the VMM can write). Without it such a file is refused, because a load from a page
   * past a shrunk file's end kills the process with SIGBUS; `audit()` reports it if it happens
   * anyway. Not needed (and ignored) for sealed memfds and device fds, whose size cannot shrink.
   */
  sizeIsFixed?: boolean;
  /** A name for `backingOf` and error messages (default `fd<n>`). */
  name?: string;
  /** Native layer (tests). */
  native?: NativeLayer;
}

/**
 * @internal The region's own references on a source's fd (no system call, no object made on the
 * attach hot path). `hold` takes one on an attached source (the caller keeps its own, and may
 * `close()` it at any time without pulling pages from under a guest); `piece` makes the kept piece
 * of a cut run, holding one reference that is the region's and none of its own (so a `close()` by
 * whoever sees it, such as a notifier, cannot release the region's); `drop` lets one go, once per
 * `hold` or `piece`. They are counted on the source (`#held`): its one reference on the `SharedFd`
 * is released when it is both closed and no longer held. Not reachable from the package's entry points.
 */
export let regionRefs: {
  hold(src: PageSource): void;
  drop(src: PageSource): void;
  piece(src: PageSource, i: number, count: number, bytesPerIrq: bigint): PageSource;
};

/** Consecutive interrupts' ESB pages in an fd, ready to be mapped over guest interrupts. */
export class PageSource {
  #closed = false;
  readonly #base: number;
  // Private, with getters: what fromFd validated cannot be changed from outside afterwards (a
  // caller that moved `offset` or released the shared fd could make an attach map past the file's
  // end, or break the region's own reference on the fd).
  readonly #handle: SharedFd;
  /** `#handle.fd`, read here by the hot path (one object fewer); open while this source holds its reference. */
  readonly #fd: number;
  /** The regions' references on this source (`regionRefs`). Its reference on `#handle` lasts while `!#closed || #held > 0`. */
  #held = 0;
  readonly #offset: bigint;
  readonly #count: number;
  readonly #limit: bigint;
  readonly #name: string;
  readonly #geometry: EsbGeometry | undefined;
  readonly #firstIndex: number | undefined;
  /** `offset` and `limit` as Numbers for the attach hot path (-1 where the limit is past 2^53: then bigint arithmetic). */
  readonly #offsetN: number;
  readonly #limitN: number;

  static {
    // The region's references (see `regionRefs`): module-private, so no caller can drop one.
    regionRefs = {
      hold: (src) => {
        // A closed source no region holds has let its fd go (the controller refuses closed sources first).
        if (src.#closed && src.#held === 0) throw new RemapError('E_SOURCE', `the source's fd ${src.#fd} is closed; it cannot be attached`);
        src.#held++;
      },
      drop: (src) => {
        if (src.#held === 0) return; // (one drop per hold: a second would be a library bug; never release twice)
        if (--src.#held === 0 && src.#closed) src.#handle.release();
      },
      piece: (src, i, count, bytesPerIrq) => {
        const p = src.#slice(i, count, bytesPerIrq); // its own reference on the handle (private fields only: nothing a caller can override)…
        p.#held = 1; // …which is the region's: released by the region's one drop…
        p.#closed = true; // …as the piece owns none of its own: a close() from outside is a no-op
        return p;
      },
    };
  }

  /** @internal Use `PageSource.fromFd` or a device's `pages()`. */
  constructor(
    handle: SharedFd,
    offset: bigint,
    count: number,
    limit: bigint,
    name: string,
    geometry: EsbGeometry | undefined,
    firstIndex: number | undefined,
    /** Without a firstIndex: this source's first interrupt within the source `fromFd` made (names stay `<name>+<i>` across slices). */
    base = 0,
  ) {
    // The constructor is reachable from the package entry (PageSource is exported): a handle that
    // is not the library's own SharedFd could name any fd with any limit, never validated.
    if (!SharedFd.isSharedFd(handle)) throw new RemapError('E_SOURCE', 'new PageSource(): not a handle made by the library; use PageSource.fromFd or a device\'s pages()');
    this.#handle = handle;
    this.#fd = handle.fd;
    this.#offset = offset;
    this.#count = count;
    this.#limit = limit;
    this.#name = name;
    this.#geometry = geometry;
    this.#firstIndex = firstIndex;
    this.#base = base;
    const safe = limit <= MAX_SAFE;
    this.#offsetN = safe ? Number(offset) : -1;
    this.#limitN = safe ? Number(limit) : -1;
    // A region keeps the caller's source object and reads it through these getters when it maps
    // (attach, a failed change's restore) and cuts runs: an own property shadowing one (fd,
    // offsetNumber, slice…) or a swapped prototype would change what is mapped after it was
    // validated (past the file's end: SIGBUS). Frozen, the object is what fromFd made.
    Object.freeze(this);
  }

  /** @internal `offset` as a Number, or -1 where `limit` is past 2^53 (the controller's hot path). */
  get offsetNumber(): number {
    return this.#offsetN;
  }

  /** @internal `limit` as a Number, or -1 where it is past 2^53. */
  get limitNumber(): number {
    return this.#limitN;
  }

  /** The fd the pages are mapped from (the source's own duplicate, shared with its slices). */
  get fd(): number {
    return this.#fd;
  }

  /** File offset of the first interrupt's pages. */
  get offset(): bigint {
    return this.#offset;
  }

  /** How many interrupts. */
  get count(): number {
    return this.#count;
  }

  /** Bytes of the file that may be mapped (checked at attach against the region's geometry). */
  get limit(): bigint {
    return this.#limit;
  }

  /** Name shown by `backingOf` and error messages, e.g. `pt1:3` or `fd17`. */
  get name(): string {
    return this.#name;
  }

  /** The source's ESB layout, when it is known. */
  get geometry(): EsbGeometry | undefined {
    return this.#geometry;
  }

  /** Index (e.g. host interrupt number) of the first interrupt, when it is known. */
  get firstIndex(): number | undefined {
    return this.#firstIndex;
  }

  /**
   * A source for `count` interrupts at `offset` in any fd the caller holds (a VFIO device region,
   * a KVM device, a memfd). The fd is validated and duplicated now; the caller keeps its own fd.
   * Accepted are fds whose size cannot shrink under a region: a memfd sealed with F_SEAL_SHRINK
   * (and not write-sealed), a character device or an anonymous inode (KVM and VFIO device fds: the
   * driver fixes the size; pass `{ length }`, as fstat says 0), and a plain regular file only with
   * `{ sizeIsFixed: true }`. The fd must then map shared read-write at `offset`: a trial mmap of one
   * page at a fresh address (never MAP_FIXED, never loaded from, unmapped at once) proves it.
   * @throws RemapError E_SOURCE if the fd is closed, not read-write, not mappable (pipe, socket,
   *   directory, eventfd), write-sealed, may shrink, is too small for the pages, or the offset is
   *   not page-aligned; the errno error, where there is one, as `cause`
   */
  static fromFd(fd: number, offset: number | bigint = 0, count = 1, options: FromFdOptions = {}): PageSource {
    const op = `PageSource.fromFd(${show(fd)})`;
    const { native, length, sizeIsFixed, geometry, name } = readOptions(op, options);
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) throw new RemapError('E_SOURCE', `${op}: not a file descriptor`);
    if (!(typeof offset === 'bigint' || (typeof offset === 'number' && Number.isSafeInteger(offset))) || BigInt(offset) < 0n) {
      throw new RemapError('E_SOURCE', `${op}: offset ${show(offset)} is not a non-negative integer`);
    }
    const off = BigInt(offset);
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1) {
      throw new RemapError('E_SOURCE', `${op}: count ${show(count)} is not a positive integer`);
    }
    if (off % BigInt(native.pageSize) !== 0n) {
      throw new RemapError('E_SOURCE', `${op}: offset 0x${off.toString(16)} is not aligned to the ${native.pageSize}-byte page`);
    }
    if (length !== undefined && (typeof length !== 'bigint' || length <= 0n)) {
      throw new RemapError('E_SOURCE', `${op}: length ${show(length)} is not a positive bigint`);
    }
    if (typeof sizeIsFixed !== 'boolean') throw new RemapError('E_SOURCE', `${op}: sizeIsFixed ${show(sizeIsFixed)} is not a boolean`);
    let dup: number;
    try {
      dup = native.dupCloexec(fd);
    } catch (e) {
      throw new RemapError('E_SOURCE', `${op}: cannot duplicate the fd (${(e as Error).message})`, { cause: e });
    }
    const handle = new SharedFd(native, dup);
    try {
      const st = native.fstat(dup);
      const kind = fdKind(st.mode);
      if (kind === null) {
        throw new RemapError('E_SOURCE', `${op}: not a mappable file (st_mode 0${(st.mode >>> 0).toString(8)}: pipe, socket, directory or block device)`);
      }
      const mode = native.accessMode(dup);
      if (mode !== O_RDWR) {
        throw new RemapError('E_SOURCE', `${op}: opened ${mode === 0 ? 'read-only' : 'write-only'}; ESB pages need a read-write shared mapping`);
      }
      if (kind === 'file') checkSeals(op, native, dup, fd, sizeIsFixed);
      // A length may only narrow what fstat says: mapping past a regular file's end would SIGBUS.
      if (length !== undefined && st.size > 0n && length > st.size) {
        throw new RemapError('E_SOURCE', `${op}: length 0x${length.toString(16)} is larger than the file (0x${st.size.toString(16)} bytes); a load past its end would SIGBUS`);
      }
      const limit = length ?? st.size;
      if (limit <= off) {
        throw new RemapError(
          'E_SOURCE',
          length === undefined && st.size === 0n
            ? `${op}: fstat reports size 0, so the pages cannot be checked; pass { length } (e.g. the VFIO region size)`
            : `${op}: offset 0x${off.toString(16)} is past the end of the file (0x${limit.toString(16)} bytes)`,
        );
      }
      if (geometry) checkFits(op, off, count, limit, geometry);
      // Last: only an fd that passed every cheap check is mapped, and at an offset known to be valid.
      trialMap(op, native, dup, fd, off);
      return new PageSource(handle, off, count, limit, name ?? `fd${fd}`, geometry, undefined);
    } catch (e) {
      handle.release();
      if (isRemapError(e)) throw e;
      throw new RemapError('E_SOURCE', `${op}: ${describeThrown(e)}`, { cause: e });
    }
  }

  /**
   * Whether `v` really is a PageSource made by this library (a brand check: a Proxy of one, or an
   * object made with `Object.create(PageSource.prototype)`, is not). Never throws.
   */
  static isPageSource(v: unknown): v is PageSource {
    return typeof v === 'object' && v !== null && #closed in v;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Drop this source's hold on the fd. Regions it is attached to keep theirs. Safe to repeat. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#held === 0) this.#handle.release(); // else the last region's drop releases it
  }

  /**
   * A new source for `count` interrupts from interrupt `i` of this one (`bytesPerIrq` apart), holding
   * its own reference on the fd (no system call): closing one never closes the other. (A region
   * takes its own reference on the source it is given, `regionRefs`, so a caller's `close()` never
   * pulls pages away from under a guest.)
   */
  slice(i: number, count: number, bytesPerIrq: bigint): PageSource {
    // A slice may only narrow what was validated: interrupts of this source, at its own layout.
    const n = this.#count;
    let bpiOk = false;
    try {
      bpiOk = typeof bytesPerIrq === 'bigint' && bytesPerIrq > 0n && (this.#geometry === undefined || bytesPerIrq === this.#geometry.bytesPerIrq);
    } catch {
      /* a geometry whose getter throws: no layout to slice at */
    }
    if (!Number.isInteger(i) || !Number.isInteger(count) || i < 0 || count < 1 || i + count > n || !bpiOk || this.#offset + BigInt(i + count) * bytesPerIrq > this.#limit) {
      throw new RemapError('E_SOURCE', `slice(${show(i)}, ${show(count)}, ${show(bytesPerIrq)}) of ${this.nameOf(0)}: not a run of this source's ${n} interrupt(s) at its own layout inside its file`);
    }
    return this.#slice(i, count, bytesPerIrq);
  }

  /** `slice` from the private fields only (what `regionRefs.piece` uses). */
  #slice(i: number, count: number, bytesPerIrq: bigint): PageSource {
    return new PageSource(
      this.#handle.retain(),
      i === 0 ? this.#offset : this.#offset + BigInt(i) * bytesPerIrq,
      count,
      this.#limit,
      this.#name,
      this.#geometry,
      this.#firstIndex === undefined ? undefined : this.#firstIndex + i,
      this.#base + i,
    );
  }

  /** The source's name for interrupt `i` of it (e.g. `pt1:5`), as backingOf reports it. */
  nameOf(i: number): string {
    return this.firstIndex === undefined ? `${this.name}+${this.#base + i}` : `${this.name}:${this.firstIndex + i}`;
  }

  /** Same as `close()`, for `using src = PageSource.fromFd(…)`. */
  [disposeSymbol](): void {
    this.close();
  }
}

/** @throws RemapError E_SOURCE unless `count` interrupts of geometry `g` from `offset` lie inside `limit` bytes */
export function checkFits(op: string, offset: bigint, count: number, limit: bigint, g: EsbGeometry): void {
  const end = offset + BigInt(count) * g.bytesPerIrq;
  if (end > limit) {
    throw new RemapError(
      'E_SOURCE',
      `${op}: ${count} interrupt(s) of ${g.bytesPerIrq} bytes from offset 0x${offset.toString(16)} end at 0x${end.toString(16)}, past the source's 0x${limit.toString(16)} bytes (a later access would SIGBUS)`,
    );
  }
}


/** Read `fromFd`'s options once (a getter that throws, or options that are not an object, is E_SOURCE). */
function readOptions(op: string, options: unknown): Omit<FromFdOptions, 'native' | 'sizeIsFixed'> & { native: NativeLayer; sizeIsFixed: unknown } {
  if (typeof options !== 'object' || options === null) throw new RemapError('E_SOURCE', `${op}: options ${show(options)} is not an object`);
  try {
    const o = options as FromFdOptions;
    return { native: o.native ?? realNative, length: o.length, sizeIsFixed: o.sizeIsFixed ?? false, geometry: o.geometry, name: o.name };
  } catch (e) {
    throw new RemapError('E_SOURCE', `${op}: reading the options threw`, { cause: e });
  }
}

/**
 * A regular file's seals (F_GET_SEALS on `dup`, the caller's `fd` in messages): refuse a write seal
 * (a shared writable mapping is EPERM) and, unless the caller vouches for the size, a file that
 * may shrink. EINVAL means a file that cannot be sealed at all (not shmem or hugetlbfs).
 */
function checkSeals(op: string, native: NativeLayer, dup: number, fd: number, sizeIsFixed: boolean): void {
  let seals = 0;
  let unsealable: NativeError | undefined;
  try {
    seals = native.getSeals(dup);
  } catch (e) {
    if (!(e instanceof NativeError && e.errno === EINVAL)) {
      throw new RemapError('E_SOURCE', `${op}: reading the seals of fd ${fd} (F_GET_SEALS) failed`, { cause: e });
    }
    unsealable = e;
  }
  const write = seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE);
  if (write) {
    const names = [write & F_SEAL_WRITE ? 'F_SEAL_WRITE' : '', write & F_SEAL_FUTURE_WRITE ? 'F_SEAL_FUTURE_WRITE' : ''].filter(Boolean).join(' and ');
    throw new RemapError('E_SOURCE', `${op}: fd ${fd} is sealed with ${names} (F_GET_SEALS 0x${seals.toString(16)}): ESB pages need a shared writable mapping, which the kernel refuses (EPERM)`);
  }
  if (seals & F_SEAL_SHRINK || sizeIsFixed) return;
  const why = unsealable
    ? `is a regular file that cannot be sealed (F_GET_SEALS: EINVAL), so nothing stops it from shrinking`
    : `is not sealed with F_SEAL_SHRINK (F_GET_SEALS 0x${seals.toString(16)})`;
  throw new RemapError(
    'E_SOURCE',
    `${op}: fd ${fd} ${why}: truncated under a region, the guest's next load from its pages would SIGBUS. Seal it (memfd_create with MFD_ALLOW_SEALING, then F_ADD_SEALS F_SEAL_SHRINK) or, if nothing can shrink it, pass { sizeIsFixed: true }`,
    unsealable ? { cause: unsealable } : undefined,
  );
}

/**
 * Prove that `dup` maps shared read-write at `offset`, as attach will map it: one page at an
 * address the kernel picks (never MAP_FIXED: nothing of ours is replaced), unmapped at once. The
 * page is never loaded from: a real ESB page's loads have side effects. An eventfd fails here
 * (ENODEV), as do a write-sealed file (EPERM) and a driver that refuses the offset (EINVAL).
 */
function trialMap(op: string, native: NativeLayer, dup: number, fd: number, offset: bigint): void {
  const page = BigInt(native.pageSize);
  let addr: bigint;
  try {
    addr = native.mmap(0n, page, PROT_READ | PROT_WRITE, MAP_SHARED, dup, offset);
  } catch (e) {
    throw new RemapError('E_SOURCE', `${op}: fd ${fd} cannot be mapped shared read-write at offset 0x${offset.toString(16)} (a trial mmap of one page failed)`, { cause: e });
  }
  try {
    native.munmap(addr, page);
  } catch (e) {
    throw new RemapError('E_SOURCE', `${op}: unmapping the trial mapping of fd ${fd} at 0x${addr.toString(16)} failed; that page stays mapped`, { cause: e });
  }
}
