/**
 * The KVM XIVE device of a POWER9/10 host (KVM_DEV_TYPE_XIVE, `arch/powerpc/kvm/book3s_xive_native.c`)
 * as an `EsbDevice`: the guest's IPI ESB pages come from the device fd.
 *
 * Data flow of `XiveKvmDevice.open`: check the host (ppc64, /dev/kvm, KVM_CAP_PPC_IRQ_XIVE; what is
 * missing leaves as E_DEVICE_UNAVAILABLE) → KVM_CREATE_VM (unless a VM is given) → KVM_CREATE_DEVICE
 * type 9 → KVM_DEV_XIVE_NR_SERVERS (when asked) → probe the device contract → the device. The
 * controller then maps the ESB range once, from its own duplicate of the device fd (`openIpiPages`).
 *
 * The device fd, in host pages (`asm/kvm.h`): the TIMA at page offset 0 (4 pages), the ESB pages from
 * page offset 4, two pages per interrupt (trigger, then management). So esbShift = log2(2 × page
 * size): 17 on 64 KiB pages, 13 on 4 KiB pages.
 *
 * The contract probe (ARCHITECTURE §2) maps interrupt 1's two pages at their own offset at a fresh
 * address (no MAP_FIXED) and unmaps them at once. mmap faults nothing in, so no ESB page is loaded
 * from or stored to. EINVAL is the upstream handler, which accepts only page offsets 0 and 4:
 * 'fixed-offset'. Success: 'per-irq-offsets'. Any other errno says nothing about the contract, so
 * it is reported (E_DEVICE_UNAVAILABLE), never guessed.
 *
 * ESB loads have side effects, and a load from a source the kernel does not know kills the process
 * (xive_native_esb_fault answers VM_FAULT_SIGBUS). So the loads offered here (`esbGet`,
 * `esbSetPq`, for tests and diagnostics) are refused for every interrupt this object has not
 * configured with `setSourceState`, and each is a single 8-byte big-endian load, as the hardware
 * (and QEMU's model of it) requires.
 */
import { RemapError, errnoName, errnoOf, errnoValue } from '../errors.js';
import type { DeviceContract, EsbDevice, IpiPages } from '../device.js';
import { MAX_IRQS, esbGeometry, type EsbGeometry } from '../geometry.js';
import { KVM_CAP, KVM_DEV_TYPE, KvmSystem, UserMemory, isKvmArch, kvmError, unwind, type KvmDevice, type KvmVm } from '../kvm/index.js';
import { HOST_LITTLE_ENDIAN } from '../kvm/structs.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, realNative, type NativeLayer } from '../native/index.js';
import { PageSource, SharedFd } from '../source.js';
import { checkIrq, checkIrqRange, show } from '../validate.js';

const EINVAL = errnoValue('EINVAL');

/** Page offset of the thread interrupt management area (TIMA) in the device fd (`KVM_XIVE_TIMA_PAGE_OFFSET`). */
export const KVM_XIVE_TIMA_PAGE_OFFSET = 0;
/** Page offset of interrupt 0's ESB pages in the device fd (`KVM_XIVE_ESB_PAGE_OFFSET`). */
export const KVM_XIVE_ESB_PAGE_OFFSET = 4;

/** Device attribute groups and attributes of the XIVE device (`arch/powerpc/include/uapi/asm/kvm.h`). */
export const KVM_DEV_XIVE = Object.freeze({
  /** Group: device control. */
  GRP_CTRL: 1,
  /** GRP_CTRL attribute: reset the device (no value). */
  RESET: 1,
  /** GRP_CTRL attribute: sync all event queues (no value). */
  EQ_SYNC: 2,
  /** GRP_CTRL attribute: number of vCPU servers (a u32 value; Linux ≥ 5.5; before any vCPU connects). */
  NR_SERVERS: 3,
  /** Group: create/restore a source; attr = interrupt number, value = u64 (LSI bits). */
  GRP_SOURCE: 2,
  /** Group: a source's target (priority, server, masked, EISN); attr = interrupt number. */
  GRP_SOURCE_CONFIG: 3,
  /** Group: an event queue's configuration; attr = EQ identifier. */
  GRP_EQ_CONFIG: 4,
  /** Group: sync a source; attr = interrupt number. */
  GRP_SOURCE_SYNC: 5,
});

/** KVM_DEV_XIVE_GRP_SOURCE value bit: the source is level-sensitive (an LSI). */
export const KVM_XIVE_LEVEL_SENSITIVE = 1n;
/** KVM_DEV_XIVE_GRP_SOURCE value bit: the LSI is asserted (only with KVM_XIVE_LEVEL_SENSITIVE). */
export const KVM_XIVE_LEVEL_ASSERTED = 2n;

/**
 * Offsets of the ESB loads on an interrupt's management page (`asm/xive-regs.h`). Every one of them
 * returns the PQ bits in the low byte; the SET_PQ loads return the old bits and set new ones.
 */
export const XIVE_ESB = Object.freeze({
  /** Read PQ, no side effect. */
  GET: 0x800,
  /** Set PQ to 00 (enabled, nothing pending). */
  SET_PQ_00: 0xc00,
  /** Set PQ to 01 (masked: off). */
  SET_PQ_01: 0xd00,
  /** Set PQ to 10 (pending). */
  SET_PQ_10: 0xe00,
  /** Set PQ to 11 (pending, and another event queued). */
  SET_PQ_11: 0xf00,
});

/** An ESB's PQ bits as ESB loads return them: P is bit 1, Q bit 0 (`XIVE_ESB_VAL_P`, `XIVE_ESB_VAL_Q`). */
export type Pq = 0 | 1 | 2 | 3;

/** `'00'`, `'01'`, `'10'` or `'11'`: PQ bits as the XIVE documents write them. */
export function formatPq(pq: Pq): string {
  return pq.toString(2).padStart(2, '0');
}

/** What `setSourceState` tells the kernel about a source (the KVM_DEV_XIVE_GRP_SOURCE value). */
export interface XiveSourceState {
  /** A level-sensitive interrupt (LSI); default false (an MSI). */
  readonly levelSensitive?: boolean;
  /** The LSI's line is asserted (needs `levelSensitive`). */
  readonly asserted?: boolean;
}

/**
 * The u64 value of KVM_DEV_XIVE_GRP_SOURCE for a source state.
 * @throws RemapError E_SOURCE if `asserted` is set without `levelSensitive` (the kernel would ignore it)
 */
export function encodeSourceState(state: XiveSourceState = {}): bigint {
  if (state.asserted && !state.levelSensitive) {
    throw new RemapError('E_SOURCE', 'XIVE source state: asserted only applies to a level-sensitive source');
  }
  return (state.levelSensitive ? KVM_XIVE_LEVEL_SENSITIVE : 0n) | (state.asserted ? KVM_XIVE_LEVEL_ASSERTED : 0n);
}

/**
 * The geometry of the KVM XIVE device on a host page size: two host pages per interrupt.
 * @throws RemapError E_GEOMETRY unless the page size is 4 KiB or 64 KiB
 */
export function xiveGeometry(hostPageSize: number | bigint): EsbGeometry {
  const page = BigInt(hostPageSize);
  const shift = page === 4096n ? 13 : page === 65536n ? 17 : undefined;
  if (shift === undefined) throw new RemapError('E_GEOMETRY', `KVM XIVE: no ESB layout for ${page}-byte host pages (4 KiB or 64 KiB)`);
  return esbGeometry(shift, page);
}

/** File offset, in the device fd, of interrupt `irq`'s first ESB page (trigger page). */
export function xiveEsbFileOffset(g: EsbGeometry, irq: number): bigint {
  return BigInt(KVM_XIVE_ESB_PAGE_OFFSET) * g.hostPageSize + BigInt(irq) * g.bytesPerIrq;
}

/**
 * Find out what a XIVE device fd's mmap handler guarantees, without touching an ESB page: map
 * interrupt 1's pages at their own offset at a fresh address (no MAP_FIXED), unmap at once.
 * EINVAL → 'fixed-offset' (upstream: only page offsets 0 and 4 are accepted); success → 'per-irq-offsets'.
 * @throws RemapError E_DEVICE_UNAVAILABLE if the trial mmap fails with another errno (it says
 *   nothing about the contract) or the trial mapping cannot be unmapped
 */
export function probeXiveContract(native: NativeLayer, fd: number, g: EsbGeometry): DeviceContract {
  const offset = xiveEsbFileOffset(g, 1);
  const what = `the trial mmap of interrupt 1's ESB pages (fd ${fd}, offset 0x${offset.toString(16)}, 0x${g.bytesPerIrq.toString(16)} bytes)`;
  let addr: bigint;
  try {
    // Safe: a fresh address (no MAP_FIXED), and mmap of a VM_PFNMAP device inserts no page: the
    // fault handler would, on a first access, and there is none.
    addr = native.mmap(0n, g.bytesPerIrq, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  } catch (e) {
    if (errnoOf(e) === EINVAL) return 'fixed-offset';
    const errno = errnoOf(e);
    throw new RemapError(
      'E_DEVICE_UNAVAILABLE',
      `probing the XIVE device contract: ${what} failed with ${errno === undefined ? String(e) : errnoName(errno)}; only EINVAL (fixed-offset) or success (per-irq-offsets) tell the contract, so it is unknown`,
      { cause: e },
    );
  }
  try {
    native.munmap(addr, g.bytesPerIrq);
  } catch (e) {
    throw new RemapError('E_DEVICE_UNAVAILABLE', `probing the XIVE device contract: unmapping ${what} at 0x${addr.toString(16)} failed`, { cause: e });
  }
  return 'per-irq-offsets';
}

/** Options of `XiveKvmDevice.open`. */
export interface XiveKvmOptions {
  /** Number of guest interrupts the region will cover (1 .. 1Mi). */
  readonly nrIrqs: number;
  /** KVM_DEV_XIVE_NR_SERVERS: the number of vCPU servers (set before any vCPU connects); default: the kernel's. */
  readonly nrServers?: number;
  /** The VM to create the device on (not closed by the device); default: a new VM of its own. */
  readonly vm?: KvmVm;
  /** Native layer (tests). */
  readonly native?: NativeLayer;
}

/** The KVM XIVE native device of one VM, as an `EsbDevice`. */
export class XiveKvmDevice implements EsbDevice {
  /** @inheritdoc */
  readonly name = 'kvm-xive';
  /** Real ESB mappings are `VM_IO | VM_PFNMAP`: the kernel never merges them. */
  readonly mergeable = false;
  /** Number of guest interrupts. */
  readonly nrIrqs: number;
  /** Two host pages per interrupt (see `xiveGeometry`). */
  readonly geometry: EsbGeometry;
  /** What the probe at open found (see `probeXiveContract`). */
  readonly contract: DeviceContract;
  /** The VM the device belongs to. */
  readonly vm: KvmVm;

  readonly #device: KvmDevice;
  readonly #ownsVm: boolean;
  readonly #native: NativeLayer;
  readonly #configured = new Set<number>();
  #closed = false;

  private constructor(device: KvmDevice, vm: KvmVm, ownsVm: boolean, nrIrqs: number, g: EsbGeometry, contract: DeviceContract, native: NativeLayer) {
    this.#device = device;
    this.vm = vm;
    this.#ownsVm = ownsVm;
    this.nrIrqs = nrIrqs;
    this.geometry = g;
    this.contract = contract;
    this.#native = native;
  }

  /**
   * Create the XIVE device on a VM (a new one unless `vm` is given) and probe its contract.
   * @throws RemapError E_DEVICE_UNAVAILABLE on a host without POWER KVM XIVE, naming what is
   *   missing (ppc64, /dev/kvm, KVM_CAP_PPC_IRQ_XIVE), or when the contract probe is inconclusive;
   *   E_IRQ_RANGE for a bad nrIrqs; E_KVM if KVM refuses the VM, the device or NR_SERVERS
   */
  static open(options: XiveKvmOptions): XiveKvmDevice {
    const op = 'XiveKvmDevice.open';
    const native = options?.native ?? realNative;
    checkIrqRange(op, 0, options?.nrIrqs, MAX_IRQS, 'interrupt');
    const nrServers = options.nrServers;
    if (nrServers !== undefined && (!Number.isInteger(nrServers) || nrServers < 1 || nrServers > 0xffffffff)) {
      throw new RemapError('E_KVM', `${op}: nrServers ${show(nrServers)} is not a positive 32-bit integer`);
    }
    const cleanup: (() => void)[] = [];
    try {
      const { system, vm } = checkHost(op, native, options.vm);
      let theVm = vm;
      if (system) {
        cleanup.push(() => system.close());
        theVm = system.createVm();
        cleanup.push(() => theVm?.close());
        system.close();
      }
      const owned = theVm as KvmVm;
      const device = owned.createDevice(KVM_DEV_TYPE.XIVE);
      cleanup.push(() => device.close());
      if (nrServers !== undefined) setU32Attr(native, device, KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.NR_SERVERS, nrServers, `KVM_DEV_XIVE_NR_SERVERS ${nrServers}`);
      const g = xiveGeometry(native.pageSize);
      const contract = probeXiveContract(native, device.fd, g);
      return new XiveKvmDevice(device, owned, system !== null, options.nrIrqs, g, contract, native);
    } catch (e) {
      unwind(cleanup);
      throw e;
    }
  }

  /** The device fd (owned by this object; regions hold their own duplicate). @throws RemapError E_CLOSED after close() */
  get fd(): number {
    this.#checkOpen('fd');
    return this.#device.fd;
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** File offset of interrupt `irq`'s ESB pages in the device fd. @throws RemapError E_IRQ_RANGE */
  esbFileOffset(irq: number): bigint {
    return xiveEsbFileOffset(this.geometry, checkIrq('XiveKvmDevice.esbFileOffset', irq, this.nrIrqs));
  }

  /**
   * The region's own handle: a duplicate of the device fd (F_DUPFD_CLOEXEC), closed by the region.
   * @throws RemapError E_CLOSED after close(); E_KVM if the fd cannot be duplicated
   */
  openIpiPages(): IpiPages {
    this.#checkOpen('openIpiPages');
    const native = this.#native;
    const g = this.geometry;
    let fd: number;
    try {
      fd = native.dupCloexec(this.#device.fd);
    } catch (e) {
      throw kvmError(`duplicating the XIVE ${this.#device.describe()}`, e);
    }
    let open = true;
    return {
      offsetOf: (irq) => xiveEsbFileOffset(g, irq),
      withFd<T>(map: (fd: number) => T): T {
        if (!open) throw new RemapError('E_CLOSED', 'the IPI page handle of the KVM XIVE device is closed');
        return map(fd);
      },
      close(): void {
        if (!open) return;
        open = false;
        try {
          native.close(fd);
        } catch {
          /* the fd is gone either way */
        }
      },
    };
  }

  /**
   * The ESB pages of this device's own sources [irq, irq+count), as a `PageSource` to attach over
   * other guest interrupts: a real passthrough interrupt's pages stand-in, made of real ESB pages of
   * real sources. It needs a kernel whose contract is 'per-irq-offsets' to be mapped anywhere but
   * at the region's own offsets. Holds its own duplicate of the device fd. Every source must have
   * been configured (`setSourceState`): a load through a guest interrupt reaches the attached
   * source's page, and the kernel answers a load from an unconfigured source with SIGBUS, so
   * `esbGet` of that guest interrupt would be safe only in name.
   * @throws RemapError E_IRQ_RANGE if the sources are not all on the device or one is not configured;
   *   E_CLOSED after close(); E_KVM if the fd cannot be duplicated
   */
  pages(irq: number, count = 1): PageSource {
    const op = `XiveKvmDevice.pages(${show(irq)}, ${show(count)})`;
    this.#checkOpen(op);
    checkIrqRange(op, irq, count, this.nrIrqs, 'source');
    for (let s = irq; s < irq + count; s++) {
      if (!this.#configured.has(s)) {
        throw new RemapError('E_IRQ_RANGE', `${op}: source ${s} was not configured with setSourceState; a load through the interrupt it backs would SIGBUS`);
      }
    }
    let fd: number;
    try {
      fd = this.#native.dupCloexec(this.#device.fd);
    } catch (e) {
      throw kvmError(`${op}: duplicating the XIVE ${this.#device.describe()}`, e);
    }
    const g = this.geometry;
    return new PageSource(new SharedFd(this.#native, fd), xiveEsbFileOffset(g, irq), count, xiveEsbFileOffset(g, this.nrIrqs), 'kvm-xive', g, irq);
  }

  /**
   * KVM_DEV_XIVE_GRP_SOURCE: create (or restore) source `irq`. The kernel allocates an IPI for it,
   * masks it and sets its PQ bits to 01 (it does a SET_PQ_01 load itself). Only configured sources
   * may be loaded from (`esbGet`, `esbSetPq`): an unconfigured one SIGBUSes.
   * @throws RemapError E_IRQ_RANGE, E_SOURCE for a bad state, E_CLOSED, E_KVM if KVM refuses
   */
  setSourceState(irq: number, state: XiveSourceState = {}): void {
    const op = `XiveKvmDevice.setSourceState(${show(irq)})`;
    this.#checkOpen(op);
    checkIrq(op, irq, this.nrIrqs);
    this.#device.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE, irq, encodeSourceState(state));
    this.#configured.add(irq);
  }

  /** Whether `setSourceState` configured interrupt `irq` (so its ESB pages may be loaded from). */
  isConfigured(irq: number): boolean {
    return this.#configured.has(irq);
  }

  /**
   * The ESB_GET load (management page + 0x800): interrupt `irq`'s PQ bits, no side effect. The
   * load reaches whatever backs `irq`'s address: under an overlay, the attached source's pages.
   * `base` is where this device's ESB range is mapped from interrupt 0 in this process, e.g. the
   * `memslot.userspaceAddr` of a controller opened on this device.
   * @throws RemapError E_IRQ_RANGE if `irq` is out of range or not configured (no load is made),
   *   E_GEOMETRY for a misaligned base, E_CLOSED, E_DEVICE_UNAVAILABLE if the native layer cannot load
   */
  esbGet(base: bigint, irq: number): Pq {
    return this.#load(`XiveKvmDevice.esbGet(${show(irq)})`, base, irq, XIVE_ESB.GET);
  }

  /**
   * A SET_PQ load (management page + 0xc00 + 0x100 × pq): sets interrupt `irq`'s PQ bits, returns
   * the old ones. `base` as for `esbGet`.
   * @throws RemapError as `esbGet`, and E_SOURCE for a pq outside 0..3
   */
  esbSetPq(base: bigint, irq: number, pq: Pq): Pq {
    const op = `XiveKvmDevice.esbSetPq(${show(irq)}, ${show(pq)})`;
    if (!([0, 1, 2, 3] as unknown[]).includes(pq)) throw new RemapError('E_SOURCE', `${op}: PQ must be 0..3`);
    return this.#load(op, base, irq, XIVE_ESB.SET_PQ_00 + pq * 0x100);
  }

  #load(op: string, base: bigint, irq: number, offset: number): Pq {
    this.#checkOpen(op);
    checkIrq(op, irq, this.nrIrqs);
    if (!this.#configured.has(irq)) {
      throw new RemapError('E_IRQ_RANGE', `${op}: source ${irq} was not configured with setSourceState; the kernel answers a load from its ESB page with SIGBUS`);
    }
    if (typeof base !== 'bigint' || base <= 0n || base % this.geometry.hostPageSize !== 0n) {
      throw new RemapError('E_GEOMETRY', `${op}: base ${show(base)} is not the page-aligned address of a mapping of this device's ESB range`);
    }
    const load = this.#native.loadBe64;
    if (!load) throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: the native layer offers no single 8-byte load (loadBe64)`);
    const addr = base + BigInt(irq) * this.geometry.bytesPerIrq + this.geometry.esbPageSize + BigInt(offset);
    return Number(load.call(this.#native, addr) & 3n) as Pq;
  }

  /**
   * Close the device fd, and the VM if the device created it. Regions opened on the device keep
   * their own duplicate, so the pages stay until they close. Safe to repeat.
   * @throws RemapError E_KVM with the first teardown failure, after everything was released
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#configured.clear();
    let first: unknown;
    try {
      this.#device.close();
    } catch (e) {
      first = e;
    }
    if (this.#ownsVm) {
      try {
        this.vm.close();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  #checkOpen(op: string): void {
    if (this.#closed) throw new RemapError('E_CLOSED', `${op}: the KVM XIVE device is closed`);
  }
}

/**
 * Check that this host can have a KVM XIVE device; return /dev/kvm opened (when no VM was given).
 * @throws RemapError E_DEVICE_UNAVAILABLE naming every missing piece
 */
function checkHost(op: string, native: NativeLayer, vm: KvmVm | undefined): { system: KvmSystem | null; vm: KvmVm | undefined } {
  const missing: string[] = [];
  if (native.arch !== 'ppc64') missing.push(`ppc64 (this host is ${native.arch})`);
  let system: KvmSystem | null = null;
  if (!vm) {
    if (!isKvmArch(native.arch)) {
      missing.push(`/dev/kvm (not checked: no KVM ioctl encoding for ${native.arch})`);
    } else {
      try {
        system = KvmSystem.open({ native });
      } catch (e) {
        if (!(e instanceof RemapError) || e.code !== 'E_DEVICE_UNAVAILABLE') throw e;
        missing.push(`/dev/kvm (${e.message})`);
      }
    }
  }
  const asked = vm ?? system;
  try {
    if (!asked) missing.push('KVM_CAP_PPC_IRQ_XIVE (not checked without /dev/kvm)');
    else if (asked.checkExtension(KVM_CAP.PPC_IRQ_XIVE) <= 0) {
      missing.push('KVM_CAP_PPC_IRQ_XIVE (KVM_CHECK_EXTENSION answers 0: this KVM has no XIVE native mode; it needs a POWER9/10 PowerNV host with kvm-hv loaded)');
    }
  } catch (e) {
    system?.close();
    throw e;
  }
  if (missing.length > 0) {
    system?.close();
    throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: no KVM XIVE device on this host: missing ${missing.join('; ')}`);
  }
  return { system, vm };
}

/** KVM_SET_DEVICE_ATTR with a u32 value (host byte order) in a scratch page of our own. */
function setU32Attr(native: NativeLayer, device: KvmDevice, group: number, attr: number, value: number, what: string): void {
  const page = UserMemory.map(native, 8n, `the value of ${what}`);
  try {
    const b = Buffer.alloc(4);
    if (HOST_LITTLE_ENDIAN) b.writeUInt32LE(value);
    else b.writeUInt32BE(value);
    page.write(0n, b);
    device.setAttr(group, attr, page.addr);
  } finally {
    page.close();
  }
}
