/**
 * A small VFIO test harness (not library API): open a PCI device bound to vfio-pci the way a VMM
 * does, so a test can route the device's real MSI to a KVM guest interrupt with `KVM_IRQFD`.
 *
 * Data flow of `VfioDevice.open`: /dev/vfio/vfio (the container: API version, IOMMU extension) →
 * /dev/vfio/<group> (viable?) → VFIO_GROUP_SET_CONTAINER → VFIO_SET_IOMMU (sPAPR TCE v2 on POWER,
 * type1 elsewhere; the group must be in the container first) → VFIO_IOMMU_SPAPR_TCE_GET_INFO →
 * VFIO_GROUP_GET_DEVICE_FD(bdf) → device info. Then, in the order a device needs them:
 * `enableBusMaster` (PCI_COMMAND through the config region: an MSI is a DMA write, so a device
 * without bus mastering sends none), `enableMsi([eventfd])` (VFIO_DEVICE_SET_IRQS), and register
 * reads and writes through the region's file offsets (pread/pwrite on the device fd).
 *
 * Every ioctl number comes from the library's per-architecture table (`src/kvm/ioctls.ts`), every
 * system call goes through the library's native layer (only eventfd is new there); pread is Node's
 * `fs.readSync` with a position. The structs are laid out in host byte order (`linux/vfio.h`); the
 * PCI config space is little-endian whatever the host is.
 */
import { readFileSync, readSync, readdirSync, readlinkSync, writeFileSync, existsSync } from 'node:fs';
import { basename } from 'node:path';
import { RemapError, errnoOf, errnoValue } from '../src/errors.js';
import { HOST_LITTLE_ENDIAN, hostKvmIoctls, hex, type KvmIoctlName, type KvmIoctls } from '../src/kvm/index.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, O_CLOEXEC, O_RDWR, realNative, type NativeLayer } from '../src/native/index.js';

const EAGAIN = errnoValue('EAGAIN');

/** IOMMU types of VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU (`linux/vfio.h`). */
export const VFIO_IOMMU = Object.freeze({ TYPE1: 1, SPAPR_TCE: 2, SPAPR_TCE_V2: 7 });
/** vfio-pci region indexes (`VFIO_PCI_*_REGION_INDEX`). */
export const VFIO_PCI_REGION = Object.freeze({ BAR0: 0, BAR5: 5, ROM: 6, CONFIG: 7 });
/** vfio-pci interrupt indexes (`VFIO_PCI_*_IRQ_INDEX`). */
export const VFIO_PCI_IRQ = Object.freeze({ INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 });
/** `vfio_irq_set.flags` bits. */
export const VFIO_IRQ_SET = Object.freeze({ DATA_NONE: 1, DATA_BOOL: 2, DATA_EVENTFD: 4, ACTION_MASK: 8, ACTION_UNMASK: 16, ACTION_TRIGGER: 32 });
/** `vfio_group_status.flags`: the group is viable (every device in it is bound to a VFIO driver). */
export const VFIO_GROUP_FLAGS_VIABLE = 1;
/** `vfio_region_info.flags` bits. */
export const VFIO_REGION_INFO_FLAG = Object.freeze({ READ: 1, WRITE: 2, MMAP: 4, CAPS: 8 });
/** PCI config space: the command register and its bits (`linux/pci_regs.h`). */
export const PCI_COMMAND = Object.freeze({ OFFSET: 4, IO: 0x1, MEMORY: 0x2, MASTER: 0x4, INTX_DISABLE: 0x400 });

/** `struct vfio_device_info` as the kernel fills it. */
export interface VfioDeviceInfo {
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
}
/** `struct vfio_region_info`: where a region is in the device fd, and what it allows. */
export interface VfioRegionInfo {
  readonly index: number;
  readonly flags: number;
  readonly size: bigint;
  /** File offset of the region in the device fd (vfio-pci: index << 40). */
  readonly offset: bigint;
}
/** `struct vfio_irq_info`. */
export interface VfioIrqInfo {
  readonly index: number;
  readonly flags: number;
  readonly count: number;
}
/** `struct vfio_iommu_spapr_tce_info`: the 32-bit DMA window and the dynamic-window abilities. */
export interface SpaprTceInfo {
  readonly flags: number;
  readonly dma32WindowStart: number;
  readonly dma32WindowSize: number;
  readonly ddwPageSizes: bigint;
  readonly ddwMaxDynamicWindows: number;
  readonly ddwLevels: number;
}

const SIZEOF = Object.freeze({ groupStatus: 8, deviceInfo: 20, regionInfo: 32, irqInfo: 16, irqSetHeader: 20, spaprTceInfo: 32 });

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** A VFIO argument struct of `size` bytes: `argsz` = size, then u32 fields from offset 4. */
export function packVfioArg(size: number, u32s: readonly number[] = [], le = HOST_LITTLE_ENDIAN): Uint8Array {
  if (4 * (u32s.length + 1) > size) throw new RangeError(`vfio struct of ${size} bytes has no room for ${u32s.length} fields after argsz`);
  const b = new Uint8Array(size);
  const v = view(b);
  v.setUint32(0, size, le);
  u32s.forEach((x, i) => v.setUint32(4 + 4 * i, x >>> 0, le));
  return b;
}

/** Decode `struct vfio_device_info` (20 bytes). */
export function decodeDeviceInfo(b: Uint8Array, le = HOST_LITTLE_ENDIAN): VfioDeviceInfo {
  const v = view(b);
  return { flags: v.getUint32(4, le), numRegions: v.getUint32(8, le), numIrqs: v.getUint32(12, le) };
}
/** Decode `struct vfio_region_info` (32 bytes). */
export function decodeRegionInfo(b: Uint8Array, le = HOST_LITTLE_ENDIAN): VfioRegionInfo {
  const v = view(b);
  return { flags: v.getUint32(4, le), index: v.getUint32(8, le), size: v.getBigUint64(16, le), offset: v.getBigUint64(24, le) };
}
/** Decode `struct vfio_irq_info` (16 bytes). */
export function decodeIrqInfo(b: Uint8Array, le = HOST_LITTLE_ENDIAN): VfioIrqInfo {
  const v = view(b);
  return { flags: v.getUint32(4, le), index: v.getUint32(8, le), count: v.getUint32(12, le) };
}
/** Decode `struct vfio_iommu_spapr_tce_info` (32 bytes). */
export function decodeSpaprTceInfo(b: Uint8Array, le = HOST_LITTLE_ENDIAN): SpaprTceInfo {
  const v = view(b);
  return {
    flags: v.getUint32(4, le),
    dma32WindowStart: v.getUint32(8, le),
    dma32WindowSize: v.getUint32(12, le),
    ddwPageSizes: v.getBigUint64(16, le),
    ddwMaxDynamicWindows: v.getUint32(24, le),
    ddwLevels: v.getUint32(28, le),
  };
}

/**
 * `struct vfio_irq_set` with `fds.length` eventfds as data (DATA_EVENTFD | ACTION_TRIGGER), or,
 * with no fds, DATA_NONE | ACTION_TRIGGER and count 0: turn the interrupt index off.
 */
export function packIrqSet(index: number, fds: readonly number[], le = HOST_LITTLE_ENDIAN): Uint8Array {
  const flags = fds.length > 0 ? VFIO_IRQ_SET.DATA_EVENTFD | VFIO_IRQ_SET.ACTION_TRIGGER : VFIO_IRQ_SET.DATA_NONE | VFIO_IRQ_SET.ACTION_TRIGGER;
  const b = packVfioArg(SIZEOF.irqSetHeader + 4 * fds.length, [flags, index, 0, fds.length], le);
  fds.forEach((fd, i) => view(b).setInt32(SIZEOF.irqSetHeader + 4 * i, fd, le));
  return b;
}

/** A PCI function as sysfs shows it. */
export interface PciFunction {
  /** `0000:01:00.0`. */
  readonly bdf: string;
  readonly vendor: number;
  readonly device: number;
  /** Its IOMMU group number, or null if it has none. */
  readonly group: number | null;
  /** The bound driver's name, or null. */
  readonly driver: string | null;
}

const PCI_DEVICES = '/sys/bus/pci/devices';

/** The PCI functions of this host (sysfs), in bus order. */
export function pciFunctions(): PciFunction[] {
  if (!existsSync(PCI_DEVICES)) return [];
  return readdirSync(PCI_DEVICES)
    .sort()
    .map((bdf) => {
      const d = `${PCI_DEVICES}/${bdf}`;
      const link = (name: string): string | null => {
        try {
          return basename(readlinkSync(`${d}/${name}`));
        } catch {
          return null;
        }
      };
      const group = link('iommu_group');
      return {
        bdf,
        vendor: Number(readFileSync(`${d}/vendor`, 'latin1').trim()),
        device: Number(readFileSync(`${d}/device`, 'latin1').trim()),
        group: group === null ? null : Number(group),
        driver: link('driver'),
      };
    });
}

/**
 * Bind PCI function `bdf` to vfio-pci (driver_override, then drivers_probe) and return what sysfs
 * then says about it.
 * @throws RemapError E_DEVICE_UNAVAILABLE if it is bound to another driver or vfio-pci does not take it
 */
export function bindVfioPci(bdf: string): PciFunction {
  const find = (): PciFunction | undefined => pciFunctions().find((f) => f.bdf === bdf);
  const before = find();
  if (!before) throw new RemapError('E_DEVICE_UNAVAILABLE', `bindVfioPci: no PCI function ${bdf} in ${PCI_DEVICES}`);
  if (before.driver === 'vfio-pci') return before;
  if (before.driver !== null) throw new RemapError('E_DEVICE_UNAVAILABLE', `bindVfioPci: ${bdf} is bound to ${before.driver}; unbind it first`);
  writeFileSync(`${PCI_DEVICES}/${bdf}/driver_override`, 'vfio-pci');
  try {
    writeFileSync('/sys/bus/pci/drivers_probe', bdf);
  } catch (e) {
    throw new RemapError('E_DEVICE_UNAVAILABLE', `bindVfioPci: drivers_probe of ${bdf} failed (is vfio-pci loaded? see dmesg)`, { cause: e });
  }
  const after = find();
  if (after?.driver !== 'vfio-pci') {
    throw new RemapError('E_DEVICE_UNAVAILABLE', `bindVfioPci: vfio-pci did not bind ${bdf} (driver now ${after?.driver ?? 'none'}; see dmesg)`);
  }
  return after;
}

/** A non-blocking, close-on-exec eventfd from the native layer (counter 0). */
export function createEventfd(native: NativeLayer = realNative): number {
  try {
    return native.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  } catch (e) {
    throw new RemapError('E_DEVICE_UNAVAILABLE', 'createEventfd: eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) failed', { cause: e });
  }
}

/** Read (and so reset) an eventfd's counter: 0n if nothing was signalled (EAGAIN). */
export function drainEventfd(fd: number): bigint {
  const b = Buffer.alloc(8);
  try {
    if (readSync(fd, b, 0, 8, null) !== 8) throw new Error(`eventfd ${fd}: short read`);
  } catch (e) {
    if (errnoOf(e) === EAGAIN || (e as NodeJS.ErrnoException).code === 'EAGAIN') return 0n;
    throw e;
  }
  return HOST_LITTLE_ENDIAN ? b.readBigUInt64LE(0) : b.readBigUInt64BE(0);
}

/** Options of `VfioDevice.open`. */
export interface VfioDeviceOptions {
  /** The device's IOMMU group number (`/dev/vfio/<group>`). */
  readonly group: number;
  /** The device's name in the group: its PCI address, e.g. `0000:01:00.0`. */
  readonly bdf: string;
  /** IOMMU type; default: sPAPR TCE v2 on ppc64, type1 elsewhere. */
  readonly iommu?: number;
  /** Native layer (default: the real one). */
  readonly native?: NativeLayer;
}

/** One VFIO device with its own container and group, as a VMM holds them. */
export class VfioDevice {
  /** VFIO_GET_API_VERSION of the container (0 = VFIO_API_VERSION). */
  readonly apiVersion: number;
  /** The IOMMU type VFIO_SET_IOMMU accepted. */
  readonly iommu: number;
  /** The sPAPR TCE window, or null with another IOMMU. */
  readonly tceInfo: SpaprTceInfo | null;
  /** VFIO_DEVICE_GET_INFO. */
  readonly info: VfioDeviceInfo;
  /** The device's PCI address. */
  readonly bdf: string;

  readonly #native: NativeLayer;
  readonly #ioctls: KvmIoctls;
  readonly #fds: { container: number; group: number; device: number };
  #closed = false;

  private constructor(native: NativeLayer, ioctls: KvmIoctls, fds: { container: number; group: number; device: number }, bdf: string, apiVersion: number, iommu: number, tceInfo: SpaprTceInfo | null, info: VfioDeviceInfo) {
    this.#native = native;
    this.#ioctls = ioctls;
    this.#fds = fds;
    this.bdf = bdf;
    this.apiVersion = apiVersion;
    this.iommu = iommu;
    this.tceInfo = tceInfo;
    this.info = info;
  }

  /** Null when VFIO can be opened here, else a one-line reason (no /dev/vfio/vfio). */
  static usable(): string | null {
    return existsSync('/dev/vfio/vfio') ? null : 'no /dev/vfio/vfio (is vfio loaded?)';
  }

  /**
   * Open container, group and device (see the module comment for the order and why).
   * @throws RemapError E_DEVICE_UNAVAILABLE naming the step and fd that failed (errno error as cause);
   *   everything opened so far is closed again
   */
  static open(opts: VfioDeviceOptions): VfioDevice {
    const native = opts.native ?? realNative;
    const ioctls = hostKvmIoctls(native.arch);
    const { group, bdf } = opts;
    if (!Number.isInteger(group) || group < 0) throw new RangeError(`VfioDevice.open: group ${String(group)} is not a group number`);
    if (typeof bdf !== 'string' || !/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) throw new RangeError(`VfioDevice.open: '${String(bdf)}' is not a PCI address (dddd:bb:ss.f)`);
    const opened: number[] = [];
    const open = (path: string): number => {
      try {
        const fd = native.open(path, O_RDWR | O_CLOEXEC);
        opened.push(fd);
        return fd;
      } catch (e) {
        throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice.open: open ${path} failed`, { cause: e });
      }
    };
    const call = (fd: number, name: KvmIoctlName, arg: number | Uint8Array, doing: string): number => {
      try {
        return native.ioctl(fd, ioctls[name] as number, arg);
      } catch (e) {
        throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice.open(${bdf}): ${doing} on fd ${fd} failed${e instanceof Error ? `: ${e.message}` : ''}`, { cause: e });
      }
    };
    try {
      const container = open('/dev/vfio/vfio');
      const apiVersion = call(container, 'VFIO_GET_API_VERSION', 0, 'VFIO_GET_API_VERSION');
      if (apiVersion !== 0) throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice.open: VFIO API version ${apiVersion}, this harness speaks 0`);
      const iommu = opts.iommu ?? (native.arch === 'ppc64' ? VFIO_IOMMU.SPAPR_TCE_V2 : VFIO_IOMMU.TYPE1);
      if (call(container, 'VFIO_CHECK_EXTENSION', iommu, `VFIO_CHECK_EXTENSION(${iommu})`) <= 0) {
        throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice.open: the container does not offer IOMMU type ${iommu}`);
      }
      const groupFd = open(`/dev/vfio/${group}`);
      const status = packVfioArg(SIZEOF.groupStatus);
      call(groupFd, 'VFIO_GROUP_GET_STATUS', status, 'VFIO_GROUP_GET_STATUS');
      if ((view(status).getUint32(4, HOST_LITTLE_ENDIAN) & VFIO_GROUP_FLAGS_VIABLE) === 0) {
        throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice.open: group ${group} is not viable (a device in it is not bound to vfio-pci)`);
      }
      const cfd = new Uint8Array(4);
      view(cfd).setInt32(0, container, HOST_LITTLE_ENDIAN);
      call(groupFd, 'VFIO_GROUP_SET_CONTAINER', cfd, `VFIO_GROUP_SET_CONTAINER(container fd ${container})`);
      // Only now: SET_IOMMU needs a group in the container.
      call(container, 'VFIO_SET_IOMMU', iommu, `VFIO_SET_IOMMU(${iommu})`);
      let tceInfo: SpaprTceInfo | null = null;
      if (iommu === VFIO_IOMMU.SPAPR_TCE || iommu === VFIO_IOMMU.SPAPR_TCE_V2) {
        const b = packVfioArg(SIZEOF.spaprTceInfo);
        call(container, 'VFIO_IOMMU_SPAPR_TCE_GET_INFO', b, 'VFIO_IOMMU_SPAPR_TCE_GET_INFO');
        tceInfo = decodeSpaprTceInfo(b);
        // v1 needs the window enabled before any device DMA; v2 does not.
        if (iommu === VFIO_IOMMU.SPAPR_TCE) call(container, 'VFIO_IOMMU_ENABLE', 0, 'VFIO_IOMMU_ENABLE');
      }
      const device = call(groupFd, 'VFIO_GROUP_GET_DEVICE_FD', new Uint8Array(Buffer.from(`${bdf}\0`, 'latin1')), `VFIO_GROUP_GET_DEVICE_FD(${bdf})`);
      opened.push(device);
      const info = packVfioArg(SIZEOF.deviceInfo);
      call(device, 'VFIO_DEVICE_GET_INFO', info, 'VFIO_DEVICE_GET_INFO');
      return new VfioDevice(native, ioctls, { container, group: groupFd, device }, bdf, apiVersion, iommu, tceInfo, decodeDeviceInfo(info));
    } catch (e) {
      for (const fd of opened.reverse()) {
        try {
          native.close(fd);
        } catch {
          /* best effort: the first error is the one to report */
        }
      }
      throw e;
    }
  }

  /** The device fd (regions are at file offsets of it). @throws RemapError E_CLOSED after close() */
  get fd(): number {
    this.#checkOpen('fd');
    return this.#fds.device;
  }

  /** VFIO_DEVICE_GET_REGION_INFO of region `index`. @throws RemapError E_DEVICE_UNAVAILABLE if refused */
  regionInfo(index: number): VfioRegionInfo {
    const b = packVfioArg(SIZEOF.regionInfo, [0, index]);
    this.#ioctl('VFIO_DEVICE_GET_REGION_INFO', b, `VFIO_DEVICE_GET_REGION_INFO(${index})`);
    return decodeRegionInfo(b);
  }

  /** VFIO_DEVICE_GET_IRQ_INFO of interrupt index `index`. @throws RemapError E_DEVICE_UNAVAILABLE if refused */
  irqInfo(index: number): VfioIrqInfo {
    const b = packVfioArg(SIZEOF.irqInfo, [0, index]);
    this.#ioctl('VFIO_DEVICE_GET_IRQ_INFO', b, `VFIO_DEVICE_GET_IRQ_INFO(${index})`);
    return decodeIrqInfo(b);
  }

  /**
   * Read `length` bytes at `offset` of region `index` (one pread).
   * @throws RangeError outside the region; RemapError E_DEVICE_UNAVAILABLE if the read fails or is short
   */
  read(index: number, offset: number, length: number): Buffer {
    const r = this.#inRegion('read', index, offset, length);
    const b = Buffer.alloc(length);
    let n: number;
    try {
      n = readSync(this.fd, b, 0, length, Number(r.offset) + offset);
    } catch (e) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}).read: region ${index} + ${hex(offset)} failed`, { cause: e });
    }
    if (n !== length) throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}).read: region ${index} + ${hex(offset)}: ${n} of ${length} bytes`);
    return b;
  }

  /**
   * Write `data` at `offset` of region `index` (one pwrite through the native layer).
   * @throws RangeError outside the region; RemapError E_DEVICE_UNAVAILABLE if the write fails or is short
   */
  write(index: number, offset: number, data: Uint8Array): void {
    const r = this.#inRegion('write', index, offset, data.byteLength);
    let n: number;
    try {
      n = this.#native.pwrite(this.fd, data, r.offset + BigInt(offset));
    } catch (e) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}).write: region ${index} + ${hex(offset)} failed`, { cause: e });
    }
    if (n !== data.byteLength) throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}).write: region ${index} + ${hex(offset)}: ${n} of ${data.byteLength} bytes`);
  }

  /** A 32-bit register of a BAR: 4 bytes in one access, as the bytes arrive (little-endian value). */
  readBar32(bar: number, offset: number): number {
    return this.read(bar, offset, 4).readUInt32LE(0);
  }

  /** Write a 32-bit register of a BAR: 4 bytes in one access (the value little-endian, as PCI numbers bytes). */
  writeBar32(bar: number, offset: number, value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    this.write(bar, offset, b);
  }

  /**
   * Turn on memory decoding and bus mastering in PCI_COMMAND (through the config region): an MSI
   * is a DMA write by the device, so without bus mastering it never sends one.
   * @returns the command register before and after
   */
  enableBusMaster(): { before: number; after: number } {
    const cfg = VFIO_PCI_REGION.CONFIG;
    const before = this.read(cfg, PCI_COMMAND.OFFSET, 2).readUInt16LE(0);
    const b = Buffer.alloc(2);
    b.writeUInt16LE(before | PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER);
    this.write(cfg, PCI_COMMAND.OFFSET, b);
    return { before, after: this.read(cfg, PCI_COMMAND.OFFSET, 2).readUInt16LE(0) };
  }

  /**
   * VFIO_DEVICE_SET_IRQS: trigger `fds[i]` on MSI vector i (`fds` empty: MSI off).
   * @throws RemapError E_DEVICE_UNAVAILABLE if refused
   */
  setMsi(fds: readonly number[]): void {
    this.#ioctl('VFIO_DEVICE_SET_IRQS', packIrqSet(VFIO_PCI_IRQ.MSI, fds), fds.length > 0 ? `VFIO_DEVICE_SET_IRQS(MSI -> eventfd ${fds.join(', ')})` : 'VFIO_DEVICE_SET_IRQS(MSI off)');
  }

  /** Close device, group and container fds (the group leaves the container); later calls do nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    for (const fd of [this.#fds.device, this.#fds.group, this.#fds.container]) {
      try {
        this.#native.close(fd);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}).close failed`, { cause: first });
  }

  #inRegion(op: string, index: number, offset: number, length: number): VfioRegionInfo {
    const r = this.regionInfo(index);
    if (!Number.isInteger(offset) || offset < 0 || length <= 0 || BigInt(offset + length) > r.size) {
      throw new RangeError(`VfioDevice(${this.bdf}).${op}: ${length} bytes at ${String(offset)} are outside region ${index} (${hex(r.size)} bytes)`);
    }
    return r;
  }

  #ioctl(name: KvmIoctlName, arg: Uint8Array, doing: string): void {
    this.#checkOpen(doing);
    try {
      this.#native.ioctl(this.#fds.device, this.#ioctls[name] as number, arg);
    } catch (e) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `VfioDevice(${this.bdf}): ${doing} failed${e instanceof Error ? `: ${e.message}` : ''}`, { cause: e });
    }
  }

  #checkOpen(op: string): void {
    if (this.#closed) throw new RemapError('E_CLOSED', `VfioDevice(${this.bdf}).${op}: closed`);
  }
}
