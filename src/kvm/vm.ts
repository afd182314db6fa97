/**
 * A VM fd (KVM_CREATE_VM): memslots are registered on it, and vCPUs and devices are created from
 * it (each a fd of its own, wrapped by `KvmVcpu` / `KvmDevice`). The VM lives in the kernel until
 * its fd and every vCPU and device fd made from it are closed, so closing this object does not
 * close its children: their owners do.
 *
 * A VMM that made its VM itself hands it in with `KvmVm.fromFd(vmFd)`: the object works on a
 * duplicate (the VMM keeps and closes its own fd), and checks first that it is a VM fd.
 */
import { errnoOf, errnoValue } from '../errors.js';
import { O_CLOEXEC, O_RDWR, realNative, type NativeLayer } from '../native/index.js';
import { KvmDevice } from './device.js';
import { KvmFd, adoptKvmFd, hex, kvmError } from './fd.js';
import { KVM_CREATE_DEVICE_TEST, hostKvmIoctls, requireIoctl } from './ioctls.js';
import { packPpcMmuv3Cfg } from './ppc.js';
import { KVM_IRQFD_FLAG_DEASSIGN, createdDeviceFd, packCreateDevice, packIrqfd, packUserMemoryRegion, type UserMemoryRegion } from './structs.js';
import { KvmVcpu } from './vcpu.js';

const ENODEV = errnoValue('ENODEV');

/** Why the kernel refuses a KVM_SET_USER_MEMORY_REGION, by errno (virt/kvm/kvm_main.c). */
const MEMSLOT_REFUSALS: ReadonlyMap<string, string> = new Map([
  ['EEXIST', "its guest-physical range overlaps another memslot's"],
  ['EINVAL', 'misaligned or malformed: guest address, size and host address must be page-aligned, the slot id below KVM_CAP_NR_MEMSLOTS, the flags known, and a live slot may not move or change size'],
  ['EFAULT', 'the host address range is not accessible userspace memory'],
  ['ENOMEM', 'the kernel ran out of memory for the slot'],
]);

/** Describe a memslot for messages: `slot 3 (guest 0x100000000+0x200000 <- host 0x7f0000000000)`. */
export function describeMemslot(r: UserMemoryRegion): string {
  return `slot ${r.slot} (guest ${hex(r.guestPhysAddr)}+${hex(r.memorySize)} <- host ${hex(r.userspaceAddr)})`;
}

/** The kernel's name for a VM fd (`anon_inode_getfile("kvm-vm", …)` in virt/kvm/kvm_main.c). */
export const KVM_VM_FD_NAME = 'anon_inode:kvm-vm';

/** Options of `KvmVm.fromFd`. */
export interface KvmVmFromFdOptions {
  /** The native layer every call goes through (default: the real one). */
  readonly native?: NativeLayer;
}

/** A VM; owns its fd (not the vCPUs and devices made from it). */
export class KvmVm extends KvmFd {
  #vcpuMmapSize: number | undefined;

  /** @internal Use `KvmSystem.createVm` or `KvmVm.fromFd`. */
  constructor(native: NativeLayer, fd: number, vcpuMmapSize?: number) {
    super(native, fd, 'VM');
    this.#vcpuMmapSize = vcpuMmapSize;
  }

  /**
   * A VM the caller (a VMM) created: the object works on a duplicate of `vmFd` and closes only
   * that, so the caller keeps its fd and closes it itself. Memslots, vCPUs and devices made
   * through the object belong to the caller's VM.
   * @throws RemapError E_DEVICE_UNAVAILABLE if `vmFd` is not an open KVM VM fd (the message names
   *   what it is); E_KVM on an architecture without KVM ioctl encodings
   */
  static fromFd(vmFd: number, opts: KvmVmFromFdOptions = {}): KvmVm {
    const native = opts.native ?? realNative;
    hostKvmIoctls(native.arch); // refuse an unknown architecture before taking anything
    const fd = adoptKvmFd(native, vmFd, `KvmVm.fromFd(${String(vmFd)})`, KVM_VM_FD_NAME, 'a KVM VM fd (KVM_CREATE_VM)');
    return new KvmVm(native, fd);
  }

  /**
   * KVM_CHECK_EXTENSION on the VM fd (needs KVM_CAP_CHECK_EXTENSION_VM, Linux ≥ 4.0): 0 when absent,
   * else a capability-specific positive value (e.g. the memslot count for KVM_CAP_NR_MEMSLOTS).
   * @throws RemapError E_KVM if the ioctl fails
   */
  checkExtension(cap: number): number {
    return this.ioctl('KVM_CHECK_EXTENSION', cap, `KVM_CHECK_EXTENSION ${cap}`);
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: create, change (flags only) or, with size 0, delete a memslot.
   * Prefer `MemslotTable`, which allocates slot ids and counts these calls.
   * @throws RemapError E_KVM naming the slot and range, with the kernel's reason (EEXIST overlap, EINVAL misaligned, …)
   */
  setUserMemoryRegion(r: UserMemoryRegion): void {
    const op = r.memorySize === 0n ? `deleting memslot ${r.slot}` : `KVM_SET_USER_MEMORY_REGION ${describeMemslot(r)}`;
    this.ioctl('KVM_SET_USER_MEMORY_REGION', packUserMemoryRegion(r), op, (e) => {
      const code = e instanceof Error && 'code' in e ? String(e.code) : '';
      return MEMSLOT_REFUSALS.get(code) ?? '';
    });
  }

  /**
   * KVM_CREATE_VCPU and map its `kvm_run`.
   * @throws RemapError E_KVM if the kernel refuses the vCPU or its kvm_run cannot be mapped
   */
  createVcpu(id: number): KvmVcpu {
    const runSize = this.#runSize();
    const fd = this.ioctl('KVM_CREATE_VCPU', id, `KVM_CREATE_VCPU ${id}`);
    return new KvmVcpu(this.native, fd, id, runSize);
  }

  /**
   * KVM_GET_VCPU_MMAP_SIZE is a /dev/kvm ioctl, not a VM one: a VM made by `KvmSystem` was told
   * it; one taken with `fromFd` asks /dev/kvm once, on its first vCPU.
   */
  #runSize(): number {
    if (this.#vcpuMmapSize !== undefined) return this.#vcpuMmapSize;
    let kvm: number;
    try {
      kvm = this.native.open('/dev/kvm', O_RDWR | O_CLOEXEC);
    } catch (e) {
      throw kvmError(`opening /dev/kvm for KVM_GET_VCPU_MMAP_SIZE (vCPUs of ${this.describe()})`, e);
    }
    try {
      this.#vcpuMmapSize = this.native.ioctl(kvm, requireIoctl(this.ioctls, 'KVM_GET_VCPU_MMAP_SIZE'), 0);
    } catch (e) {
      throw kvmError(`KVM_GET_VCPU_MMAP_SIZE on /dev/kvm (vCPUs of ${this.describe()})`, e);
    } finally {
      try {
        this.native.close(kvm);
      } catch {
        /* best effort: the ioctl's outcome is what matters; Linux releases the fd even when close fails */
      }
    }
    return this.#vcpuMmapSize;
  }

  /**
   * KVM_CREATE_DEVICE (needs KVM_CAP_DEVICE_CTRL): a device of `type` (KVM_DEV_TYPE_*) on this VM.
   * @throws RemapError E_KVM if the kernel refuses (ENODEV: no such device type here; EEXIST: only one allowed)
   */
  createDevice(type: number): KvmDevice {
    const buf = packCreateDevice(type, 0);
    this.ioctl('KVM_CREATE_DEVICE', buf, `KVM_CREATE_DEVICE type ${type}`);
    return new KvmDevice(this.native, createdDeviceFd(buf), type);
  }

  /**
   * Whether a device of `type` could be created (KVM_CREATE_DEVICE with KVM_CREATE_DEVICE_TEST).
   * @throws RemapError E_KVM for a refusal other than ENODEV
   */
  canCreateDevice(type: number): boolean {
    try {
      this.ioctl('KVM_CREATE_DEVICE', packCreateDevice(type, KVM_CREATE_DEVICE_TEST), `KVM_CREATE_DEVICE (test) type ${type}`);
      return true;
    } catch (e) {
      if (errnoOf(e) === ENODEV) return false;
      throw e;
    }
  }

  /**
   * KVM_IRQFD (needs KVM_CAP_IRQFD): a signal on `eventfd` injects guest interrupt `gsi`. When the
   * eventfd is a VFIO device's MSI trigger, KVM's irq bypass hands the device's interrupt to the
   * guest directly; on Book3S with XIVE that is `kvmppc_xive_set_mapped`, which zaps guest
   * interrupt `gsi`'s ESB pages in every mapping of the XIVE device file and serves the device's
   * own ESB pages there from then on. On Book3S the GSI is the guest interrupt number itself
   * (there is no KVM_SET_GSI_ROUTING).
   * @throws RangeError for a fd or gsi that is not a u32; RemapError E_KVM if the kernel refuses
   *   (EBUSY: the eventfd already has a route on this VM)
   */
  assignIrqfd(eventfd: number, gsi: number): void {
    this.ioctl('KVM_IRQFD', packIrqfd(eventfd, gsi), `KVM_IRQFD eventfd ${eventfd} -> gsi ${gsi}`);
  }

  /**
   * KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: remove the route `assignIrqfd` added (on Book3S with
   * XIVE, irq bypass then calls `kvmppc_xive_clr_mapped`, which gives the interrupt its IPI back).
   * @throws RangeError as assignIrqfd; RemapError E_KVM if the kernel refuses
   */
  deassignIrqfd(eventfd: number, gsi: number): void {
    this.ioctl('KVM_IRQFD', packIrqfd(eventfd, gsi, KVM_IRQFD_FLAG_DEASSIGN), `KVM_IRQFD deassign eventfd ${eventfd} from gsi ${gsi}`);
  }

  /**
   * KVM_SET_TSS_ADDR (x86, needs KVM_CAP_SET_TSS_ADDR): three pages of guest-physical space
   * Intel VMX uses to run real mode. A guest that starts in long mode does not need it.
   * @throws RemapError E_KVM if refused or not x86
   */
  setTssAddr(addr: bigint): void {
    requireIoctl(this.ioctls, 'KVM_SET_TSS_ADDR');
    this.ioctl('KVM_SET_TSS_ADDR', addr, `KVM_SET_TSS_ADDR ${hex(addr)}`);
  }

  /**
   * KVM_PPC_CONFIGURE_V3_MMU (powerpc, needs KVM_CAP_PPC_MMU_RADIX or KVM_CAP_PPC_MMU_HASH_V3):
   * VM-wide, the guest's MMU mode (`flags`: KVM_PPC_MMUV3_RADIX, KVM_PPC_MMUV3_GTSE) and the second
   * doubleword of its partition table entry (the process table, with PATB_GR for radix).
   * @throws RemapError E_KVM if refused (EBUSY: switching radix/HPT while a vCPU runs) or not ppc64
   */
  configurePpcV3Mmu(flags: bigint, processTable: bigint): void {
    requireIoctl(this.ioctls, 'KVM_PPC_CONFIGURE_V3_MMU');
    this.ioctl('KVM_PPC_CONFIGURE_V3_MMU', packPpcMmuv3Cfg(flags, processTable), `KVM_PPC_CONFIGURE_V3_MMU flags ${hex(flags)} process table ${hex(processTable)}`);
  }
}
