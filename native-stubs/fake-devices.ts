/**
 * Stand-ins for the POWER-only devices, on memfds: a fake KVM XIVE device whose IPI ESB pages
 * for interrupt n sit at their own offset (the approach-3 contract), and fake passthrough devices
 * whose pages `pages()` hands out as `PageSource`s. Every ESB page starts with an ASCII stamp
 * (`ipi:<irq>:<p>`, `pt<id>:<hostIrq>:<p>`, NUL-terminated) so a test tells pages apart by reading
 * memory. The files are sparse: only stamped pages cost memory. Each memfd is sealed with
 * F_SEAL_SHRINK once sized, as `PageSource.fromFd` requires of a memfd: nothing can truncate the
 * pages away from under a region (a load past a file's end is SIGBUS).
 */
import {
  DEFAULT_ESB_SHIFT,
  F_SEAL_SHRINK,
  MAX_IRQS,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  O_CLOEXEC,
  O_RDWR,
  PageSource,
  RemapError,
  SharedFd,
  checkIrq,
  checkIrqRange,
  esbGeometry,
  esbOffset,
  realNative,
  type DeviceContract,
  type EsbDevice,
  type EsbGeometry,
  type IpiPages,
  type NativeLayer,
} from '../src/internal.js';

/** Options of `FakeXiveDevice.create`. */
export interface FakeXiveOptions {
  /** Number of guest interrupts (1 .. 1Mi). */
  nrIrqs: number;
  /** esbShift (12, 13, 16 or 17; default 17). */
  esbShift?: number;
  /**
   * Make every mapping of the device un-mergeable by the kernel, as real `VM_IO|VM_PFNMAP` ESB
   * mappings are: each mmap gets a fresh file description (an open of /proc/self/fd/N).
   */
  unmergeable?: boolean;
  /** Stamp every ESB page now (default true). With false, stamp with `stampIrq` where needed. */
  stamp?: boolean;
  /** Native layer (tests). */
  native?: NativeLayer;
}

/** Options of `FakePassthroughDevice.create`. */
export interface FakePassthroughOptions {
  /** Number of host interrupts the device has. */
  nrIrqs: number;
  /** Device id: its stamps read `pt<id>:…`. */
  id: number;
  /** esbShift (default 17). */
  esbShift?: number;
  /** Native layer (tests). */
  native?: NativeLayer;
}

/** A memfd of ESB pages with stamps, sealed against shrinking; the common part of both fakes. */
class StampedFile {
  readonly handle: SharedFd;
  constructor(
    readonly native: NativeLayer,
    readonly name: string,
    readonly nrIrqs: number,
    readonly geometry: EsbGeometry,
  ) {
    let fd: number;
    try {
      fd = native.memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    } catch (e) {
      throw new RemapError('E_SOURCE', `creating ${name}: memfd_create failed`, { cause: e });
    }
    this.handle = new SharedFd(native, fd);
    // Size first, then seal: after F_SEAL_SHRINK the file can grow but never shrink.
    let step = 'ftruncate';
    try {
      native.ftruncate(fd, BigInt(nrIrqs) * geometry.bytesPerIrq);
      step = 'F_ADD_SEALS F_SEAL_SHRINK';
      native.addSeals(fd, F_SEAL_SHRINK);
    } catch (e) {
      this.handle.release();
      throw new RemapError('E_SOURCE', `creating ${name}: ${step} on fd ${fd} failed`, { cause: e });
    }
  }

  stamp(irq: number, prefix: string): void {
    for (let p = 0; p < this.geometry.pagesPerIrq; p++) {
      try {
        this.native.pwrite(this.handle.fd, Buffer.from(`${prefix}:${irq}:${p}\0`, 'latin1'), esbOffset(this.geometry, irq, p as 0 | 1));
      } catch (e) {
        throw new RemapError('E_SOURCE', `stamping ${this.name} interrupt ${irq} page ${p}: pwrite failed`, { cause: e });
      }
    }
  }

  /** Stamp every interrupt; on a failure release the file (a half-made device must not leak its memfd). */
  stampAll(prefix: string): void {
    try {
      for (let irq = 0; irq < this.nrIrqs; irq++) this.stamp(irq, prefix);
    } catch (e) {
      this.handle.release();
      throw e;
    }
  }
}

function geometryFor(op: string, esbShift: number | undefined, native: NativeLayer): EsbGeometry {
  try {
    return esbGeometry(esbShift ?? DEFAULT_ESB_SHIFT, native.pageSize);
  } catch (e) {
    throw new RemapError('E_GEOMETRY', `${op}: ${(e as Error).message}`, { cause: e });
  }
}

/** A memfd-backed stand-in for the KVM XIVE device that meets the per-irq-offsets contract. */
export class FakeXiveDevice implements EsbDevice {
  /** @inheritdoc */
  readonly name = 'fake-xive';
  /** Fakes meet the approach-3 contract. */
  readonly contract: DeviceContract = 'per-irq-offsets';
  readonly #file: StampedFile;
  readonly #unmergeable: boolean;

  private constructor(file: StampedFile, unmergeable: boolean) {
    this.#file = file;
    this.#unmergeable = unmergeable;
  }

  /**
   * A fake XIVE device of `nrIrqs` interrupts, every IPI ESB page stamped `ipi:<irq>:<p>`.
   * @throws RemapError E_IRQ_RANGE for a bad nrIrqs, E_GEOMETRY for a bad esbShift, E_SOURCE if a
   *   system call fails (nothing is left open)
   */
  static create(options: FakeXiveOptions): FakeXiveDevice {
    const native = options.native ?? realNative;
    const op = 'FakeXiveDevice.create';
    checkIrqRange(op, 0, options?.nrIrqs, MAX_IRQS, 'interrupt');
    const file = new StampedFile(native, 'fake-xive-ipi', options.nrIrqs, geometryFor(op, options.esbShift, native));
    if (options.stamp ?? true) file.stampAll('ipi');
    return new FakeXiveDevice(file, options.unmergeable ?? false);
  }

  /** Number of guest interrupts. */
  get nrIrqs(): number {
    return this.#file.nrIrqs;
  }

  /** Layout of each interrupt's pages. */
  get geometry(): EsbGeometry {
    return this.#file.geometry;
  }

  /** The native layer its memfd was made through: the default of a region opened on it. */
  get native(): NativeLayer {
    return this.#file.native;
  }

  /** Whether the kernel merges adjacent mappings of it (false with `unmergeable`). */
  get mergeable(): boolean {
    return !this.#unmergeable;
  }

  /** The memfd (owned by the device). @throws RemapError E_CLOSED after close() (the number may name another file by then) */
  get fd(): number {
    this.#live('FakeXiveDevice.fd');
    return this.#file.handle.fd;
  }

  #live(op: string): void {
    if (this.#file.handle.closed) throw new RemapError('E_CLOSED', `${op}: the fake XIVE device is closed`);
  }

  /** Write interrupt `irq`'s stamps (for devices made with `stamp: false`). @throws RemapError E_IRQ_RANGE; E_SOURCE if pwrite fails; E_CLOSED */
  stampIrq(irq: number): void {
    this.#live('FakeXiveDevice.stampIrq');
    this.#file.stamp(checkIrq('FakeXiveDevice.stampIrq', irq, this.nrIrqs), 'ipi');
  }

  /** @inheritdoc @throws RemapError E_CLOSED after close() */
  openIpiPages(): IpiPages {
    this.#live('FakeXiveDevice.openIpiPages');
    const native = this.#file.native;
    const own = new SharedFd(native, native.dupCloexec(this.fd));
    const bpi = this.geometry.bytesPerIrq;
    const unmergeable = this.#unmergeable;
    return {
      // One fd every time, unless each mapping needs a fresh file description (see withFd).
      ...(unmergeable ? {} : { fd: own.fd }),
      offsetOf: (irq) => BigInt(irq) * bpi,
      withFd<T>(map: (fd: number) => T): T {
        if (!unmergeable) return map(own.fd);
        // A fresh open file description per mapping: the kernel merges VMAs only of the same
        // struct file, so these never merge, like VM_PFNMAP ESB mappings.
        const fresh = native.open(`/proc/self/fd/${own.fd}`, O_RDWR | O_CLOEXEC);
        try {
          return map(fresh);
        } finally {
          try {
            native.close(fresh);
          } catch {
            // Linux frees the fd even when close(2) fails, and a mapping made from it holds its own
            // reference: failing here would report a mapping that exists as failed.
          }
        }
      },
      close: () => own.release(),
    };
  }

  /** Close the device's memfd (regions opened on it keep their own handle). Safe to repeat. */
  close(): void {
    this.#file.handle.release();
  }
}

/** A memfd-backed stand-in for a passthrough device's interrupt ESB pages. */
export class FakePassthroughDevice {
  readonly #file: StampedFile;
  #closed = false;

  private constructor(
    file: StampedFile,
    /** Device id (stamps read `pt<id>:…`). */
    readonly id: number,
  ) {
    this.#file = file;
  }

  /**
   * A fake passthrough device of `nrIrqs` host interrupts, pages stamped `pt<id>:<hostIrq>:<p>`.
   * @throws RemapError E_IRQ_RANGE for a bad nrIrqs or id, E_GEOMETRY for a bad esbShift, E_SOURCE
   *   if a system call fails (nothing is left open)
   */
  static create(options: FakePassthroughOptions): FakePassthroughDevice {
    const native = options.native ?? realNative;
    const op = 'FakePassthroughDevice.create';
    checkIrqRange(op, 0, options?.nrIrqs, MAX_IRQS, 'interrupt');
    checkIrq(op, options.id, 2 ** 31, 'device id');
    const file = new StampedFile(native, `fake-pt${options.id}`, options.nrIrqs, geometryFor(op, options.esbShift, native));
    file.stampAll(`pt${options.id}`);
    return new FakePassthroughDevice(file, options.id);
  }

  /** Number of host interrupts. */
  get nrIrqs(): number {
    return this.#file.nrIrqs;
  }

  /** Layout of each interrupt's pages. */
  get geometry(): EsbGeometry {
    return this.#file.geometry;
  }

  /** The memfd (owned by the device). @throws RemapError E_CLOSED after close() (the number may name another file by then) */
  get fd(): number {
    if (this.#closed) throw new RemapError('E_CLOSED', `pt${this.id}.fd: the device is closed`);
    return this.#file.handle.fd;
  }

  /**
   * The ESB pages of host interrupts [hostIrq, hostIrq+count), as a source for attach/attachRange.
   * @throws RemapError E_IRQ_RANGE if they are not all on the device; E_CLOSED after close()
   */
  pages(hostIrq: number, count = 1): PageSource {
    const op = `pt${this.id}.pages(${String(hostIrq)}, ${String(count)})`;
    if (this.#closed) throw new RemapError('E_CLOSED', `${op}: the device is closed`);
    checkIrqRange(op, hostIrq, count, this.nrIrqs, 'host interrupt');
    const g = this.geometry;
    return new PageSource(this.#file.handle.retain(), esbOffset(g, hostIrq), count, BigInt(this.nrIrqs) * g.bytesPerIrq, `pt${this.id}`, g, hostIrq);
  }

  /** Close the device's memfd; sources and regions that use its pages keep their own hold. Safe to repeat. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.handle.release();
  }
}
