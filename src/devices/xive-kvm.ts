/**
 * The KVM XIVE device of a POWER9/10 host (KVM_DEV_TYPE_XIVE, `arch/powerpc/kvm/book3s_xive_native.c`)
 * as an `EsbDevice`: the guest's IPI ESB pages come from the device fd.
 *
 * Data flow of `XiveKvmDevice.open`: check the host (ppc64, /dev/kvm, KVM_CAP_PPC_IRQ_XIVE; what is
 * missing leaves as E_DEVICE_UNAVAILABLE) → KVM_CREATE_VM (unless a VM is given) → KVM_CREATE_DEVICE
 * type 9 → KVM_DEV_XIVE_NR_SERVERS (when asked) → probe the device contract → the device. The
 * controller then maps the ESB range once, from its own duplicate of the device fd (`openIpiPages`).
 *
 * A VMM that created the device itself (QEMU's `kvmppc_xive_connect` does, on its own VM) hands it
 * in with `XiveKvmDevice.fromFd(deviceFd, { nrIrqs })`: duplicate the fd (the VMM keeps and closes
 * its own) → check the duplicate is a XIVE native device by the name the kernel gave it
 * (`anon_inode:kvm-xive-native`, read from /proc/self/fd; no ioctl reaches an fd before we know
 * what it is, and the XICS-on-XIVE device `kvm-xive` has overlapping attribute groups, so no
 * KVM_HAS_DEVICE_ATTR answer could tell the two apart) → probe the contract → the device. From
 * there it is the same object as one `open` made.
 *
 * The device's uapi (attribute groups, ESB load offsets, the fd's layout: two host pages per
 * interrupt from page offset 4) and the contract probe live in `src/kvm/xive.ts`.
 *
 * ESB loads have side effects, and a load from a source the kernel does not know kills the process
 * (xive_native_esb_fault answers VM_FAULT_SIGBUS). So the loads offered here (`esbGet`,
 * `esbSetPq`, for tests and diagnostics) are refused for every interrupt this object has not
 * configured with `setSourceState`, and each is a single 8-byte big-endian load, as the hardware
 * (and QEMU's model of it) requires.
 */
import { RemapError } from '../errors.js';
import type { DeviceContract, EsbDevice, IpiPages } from '../device.js';
import { MAX_IRQS, type EsbGeometry } from '../geometry.js';
import { disposeSymbol } from '../dispose.js';
import { KvmDevice } from '../kvm/device.js';
import { adoptKvmFd, kvmError, teardown, unwind } from '../kvm/fd.js';
import { KVM_CAP, KVM_DEV_TYPE, isKvmArch } from '../kvm/ioctls.js';
import { KvmSystem } from '../kvm/system.js';
import type { KvmVm } from '../kvm/vm.js';
import {
  KVM_DEV_XIVE,
  KVM_XIVE_NATIVE_FD_NAME,
  XIVE_ESB,
  encodeSourceState,
  probeXiveContract,
  xiveEsbFileOffset,
  xiveGeometry,
  type Pq,
  type XiveSourceState,
} from '../kvm/xive.js';
import { realNative, type NativeLayer } from '../native/index.js';
import { PageSource, SharedFd } from '../source.js';
import { checkIrq, checkIrqRange, show } from '../validate.js';

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

/** Options of `XiveKvmDevice.fromFd`. */
export interface XiveKvmFromFdOptions {
  /** Number of guest interrupts the region will cover (1 .. 1Mi): the VMM's, the device does not say. */
  readonly nrIrqs: number;
  /** The VMM's VM the device belongs to (e.g. `KvmVm.fromFd(vmFd)`), exposed as `vm`; not closed by the device. */
  readonly vm?: KvmVm;
  /**
   * Sources the VMM already created with KVM_DEV_XIVE_GRP_SOURCE, so `esbGet`, `esbSetPq` and
   * `pages` may load from them. The kernel cannot be asked (the group has no get), and a load from
   * a source it does not know is a SIGBUS: list only sources the VMM really configured.
   */
  readonly configured?: Iterable<number>;
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
  /** The VM the device belongs to (from `fromFd`: the `vm` option, if given). */
  readonly vm: KvmVm | undefined;
  /**
   * The native layer every call of this device goes through. A controller opened on the device
   * must map through the same one (its `native` option defaults to this).
   */
  readonly native: NativeLayer;

  readonly #device: KvmDevice;
  readonly #ownsVm: boolean;
  readonly #configured = new Set<number>();
  #closed = false;

  private constructor(device: KvmDevice, vm: KvmVm | undefined, ownsVm: boolean, nrIrqs: number, g: EsbGeometry, contract: DeviceContract, native: NativeLayer) {
    this.#device = device;
    this.vm = vm;
    this.#ownsVm = ownsVm;
    this.nrIrqs = nrIrqs;
    this.geometry = g;
    this.contract = contract;
    this.native = native;
  }

  /**
   * The XIVE device a VMM created itself (KVM_CREATE_DEVICE type KVM_DEV_TYPE_XIVE on its own
   * VM), working on a duplicate of `deviceFd`: the caller keeps its fd and closes it itself, and
   * `close()` closes only the duplicate. Checks that the fd is a XIVE native device (by the name
   * the kernel gave it, `anon_inode:kvm-xive-native`) and probes the contract on it without
   * loading from an ESB page, as `open` does. The VMM is expected to have set NR_SERVERS itself.
   * @throws RemapError E_IRQ_RANGE for a bad nrIrqs or configured source (before any system call);
   *   E_DEVICE_UNAVAILABLE if the fd is not open, is not a KVM XIVE native device (naming what it
   *   is), or the contract probe is inconclusive; E_GEOMETRY on a page size without a XIVE layout
   */
  static fromFd(deviceFd: number, options: XiveKvmFromFdOptions): XiveKvmDevice {
    const op = `XiveKvmDevice.fromFd(${String(deviceFd)})`;
    const native = options?.native ?? realNative;
    checkIrqRange(op, 0, options?.nrIrqs, MAX_IRQS, 'interrupt');
    let listed: unknown[];
    try {
      listed = [...(options.configured ?? [])];
    } catch (e) {
      throw new RemapError('E_IRQ_RANGE', `${op}: configured ${show(options.configured)} is not a list of interrupt numbers`, { cause: e });
    }
    const configured = listed.map((irq) => checkIrq(`${op}: configured source`, irq, options.nrIrqs));
    const g = xiveGeometry(native.pageSize);
    const fd = adoptKvmFd(native, deviceFd, op, KVM_XIVE_NATIVE_FD_NAME, 'a KVM XIVE native device fd (KVM_CREATE_DEVICE type KVM_DEV_TYPE_XIVE)');
    let device: KvmDevice;
    try {
      device = new KvmDevice(native, fd, KVM_DEV_TYPE.XIVE);
    } catch (e) {
      native.close(fd);
      throw e;
    }
    try {
      const contract = probeXiveContract(native, fd, g);
      const dev = new XiveKvmDevice(device, options.vm, false, options.nrIrqs, g, contract, native);
      for (const irq of configured) dev.#configured.add(irq);
      return dev;
    } catch (e) {
      unwind([() => device.close()]);
      throw e;
    }
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
      if (nrServers !== undefined) device.setAttrU32(KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.NR_SERVERS, nrServers);
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
    const native = this.native;
    const g = this.geometry;
    let fd: number;
    try {
      fd = native.dupCloexec(this.#device.fd);
    } catch (e) {
      throw kvmError(`duplicating the XIVE ${this.#device.describe()}`, e);
    }
    let open = true;
    return {
      fd,
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
      fd = this.native.dupCloexec(this.#device.fd);
    } catch (e) {
      throw kvmError(`${op}: duplicating the XIVE ${this.#device.describe()}`, e);
    }
    const g = this.geometry;
    return new PageSource(new SharedFd(this.native, fd), xiveEsbFileOffset(g, irq), count, xiveEsbFileOffset(g, this.nrIrqs), 'kvm-xive', g, irq);
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
    const load = this.native.loadBe64;
    if (!load) throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: the native layer offers no single 8-byte load (loadBe64)`);
    const addr = base + BigInt(irq) * this.geometry.bytesPerIrq + this.geometry.esbPageSize + BigInt(offset);
    return Number(load.call(this.native, addr) & 3n) as Pq;
  }

  /**
   * Close the device fd, and the VM if the device created it. Regions opened on the device keep
   * their own duplicate, so the pages stay until they close. A device from `fromFd` closes only its
   * duplicate: the caller's fd and VM stay open. Safe to repeat.
   * @throws RemapError E_KVM with the first teardown failure, after everything was released
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#configured.clear();
    teardown([() => this.#device.close(), this.#ownsVm && (() => this.vm?.close())]);
  }

  /** Same as `close()`, for `using dev = XiveKvmDevice.fromFd(…)`. */
  [disposeSymbol](): void {
    this.close();
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
