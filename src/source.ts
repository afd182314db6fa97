/**
 * Where passthrough pages come from. A `PageSource` is an fd, a file offset and a number of
 * interrupts, validated once when it is made (fstat size, alignment, access mode) so that attach
 * is a single mmap and can never SIGBUS later (invariant 6). It holds its own duplicate of the fd
 * in a reference-counted `SharedFd`: the caller may close its fd at any time (invariant 7), and
 * each attached run keeps the duplicate alive until it is detached, so a failed detach can always
 * put the passthrough pages back.
 */
import { RemapError } from './errors.js';
import type { EsbGeometry } from './geometry.js';
import { realNative, O_RDWR, type NativeLayer } from './native/index.js';
import { show } from './validate.js';

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

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

  /** Take another reference. @throws Error if already closed (a library bug) */
  retain(): this {
    if (this.#refs === 0) throw new Error(`SharedFd ${this.fd} retained after close`);
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
  /** A name for `backingOf` and error messages (default `fd<n>`). */
  name?: string;
  /** Native layer (tests). */
  native?: NativeLayer;
}

/** Consecutive interrupts' ESB pages in an fd, ready to be mapped over guest interrupts. */
export class PageSource {
  #closed = false;
  readonly #base: number;

  /** @internal Use `PageSource.fromFd` or a device's `pages()`. */
  constructor(
    /** The fd the pages are mapped from (shared with other sources of the same file). */
    readonly handle: SharedFd,
    /** File offset of the first interrupt's pages. */
    readonly offset: bigint,
    /** How many interrupts. */
    readonly count: number,
    /** Bytes of the file that may be mapped (checked at attach against the region's geometry). */
    readonly limit: bigint,
    /** Name shown by `backingOf` and error messages, e.g. `pt1:3` or `fd17`. */
    readonly name: string,
    /** The source's ESB layout, when it is known. */
    readonly geometry: EsbGeometry | undefined,
    /** Index (e.g. host interrupt number) of the first interrupt, when it is known. */
    readonly firstIndex: number | undefined,
    /** Without a firstIndex: this source's first interrupt within the source `fromFd` made (names stay `<name>+<i>` across slices). */
    base = 0,
  ) {
    this.#base = base;
  }

  /**
   * A source for `count` interrupts at `offset` in any fd the caller holds (a VFIO device region,
   * a KVM device, a memfd). The fd is validated and duplicated now; the caller keeps its own fd.
   * @throws RemapError E_SOURCE if the fd is closed, not read-write, not mappable (pipe, socket,
   *   directory), too small for the pages, or the offset is not page-aligned
   */
  static fromFd(fd: number, offset: number | bigint = 0, count = 1, options: FromFdOptions = {}): PageSource {
    const native = options.native ?? realNative;
    const op = `PageSource.fromFd(${show(fd)})`;
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
    let dup: number;
    try {
      dup = native.dupCloexec(fd);
    } catch (e) {
      throw new RemapError('E_SOURCE', `${op}: cannot duplicate the fd (${(e as Error).message})`, { cause: e });
    }
    const handle = new SharedFd(native, dup);
    try {
      const st = native.fstat(dup);
      const type = st.mode & S_IFMT;
      if (type !== S_IFREG && type !== S_IFCHR && type !== 0) {
        throw new RemapError('E_SOURCE', `${op}: not a mappable file (st_mode 0${(st.mode >>> 0).toString(8)}: pipe, socket or directory)`);
      }
      const mode = native.accessMode(dup);
      if (mode !== O_RDWR) {
        throw new RemapError('E_SOURCE', `${op}: opened ${mode === 0 ? 'read-only' : 'write-only'}; ESB pages need a read-write shared mapping`);
      }
      const { length } = options;
      if (length !== undefined && (typeof length !== 'bigint' || length <= 0n)) {
        throw new RemapError('E_SOURCE', `${op}: length ${show(length)} is not a positive bigint`);
      }
      // A length may only narrow what fstat says: mapping past a regular file's end would SIGBUS.
      if (length !== undefined && st.size > 0n && length > st.size) {
        throw new RemapError('E_SOURCE', `${op}: length 0x${length.toString(16)} is larger than the file (0x${st.size.toString(16)} bytes); a load past its end would SIGBUS`);
      }
      const limit = length ?? st.size;
      if (limit <= off) {
        throw new RemapError(
          'E_SOURCE',
          options.length === undefined && st.size === 0n
            ? `${op}: fstat reports size 0, so the pages cannot be checked; pass { length } (e.g. the VFIO region size)`
            : `${op}: offset 0x${off.toString(16)} is past the end of the file (0x${limit.toString(16)} bytes)`,
        );
      }
      if (options.geometry) checkFits(op, off, count, limit, options.geometry);
      return new PageSource(handle, off, count, limit, options.name ?? `fd${fd}`, options.geometry, undefined);
    } catch (e) {
      handle.release();
      if (e instanceof RemapError) throw e;
      throw new RemapError('E_SOURCE', `${op}: ${(e as Error).message}`, { cause: e });
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
    this.handle.release();
  }

  /**
   * A new source for `count` interrupts from interrupt `i` of this one (`bytesPerIrq` apart), holding
   * its own reference on the fd (no system call). Regions keep slices, so a caller's `close()`
   * never pulls pages away from under a guest.
   */
  slice(i: number, count: number, bytesPerIrq: bigint): PageSource {
    return new PageSource(
      this.handle.retain(),
      i === 0 ? this.offset : this.offset + BigInt(i) * bytesPerIrq, // (a whole-source slice is the attach hot path: no BigInt arithmetic)
      count,
      this.limit,
      this.name,
      this.geometry,
      this.firstIndex === undefined ? undefined : this.firstIndex + i,
      this.#base + i,
    );
  }

  /** The source's name for interrupt `i` of it (e.g. `pt1:5`), as backingOf reports it. */
  nameOf(i: number): string {
    return this.firstIndex === undefined ? `${this.name}+${this.#base + i}` : `${this.name}:${this.firstIndex + i}`;
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

