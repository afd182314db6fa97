/**
 * KVM ioctl numbers, per architecture, all in this one file (as rust-vmm's `kvm_ioctls.rs` keeps
 * them). A number is computed, never copied: `_IOC(dir, 'KVMIO', nr, sizeof(arg))`, with the
 * direction and size fields laid out the way the architecture's `asm/ioctl.h` says:
 * - x86_64 and aarch64 use the generic layout: 2 direction bits at 30–31 (NONE=0, WRITE=1,
 *   READ=2) and a 14-bit size at bit 16;
 * - powerpc has 3 direction bits at 29–31 (NONE=1, READ=2, WRITE=4) and a 13-bit size at bit 16.
 * Struct sizes come from `include/uapi/linux/kvm.h` and the architecture's `asm/kvm.h`. An ioctl
 * whose argument struct does not exist on an architecture (x86's `kvm_sregs`, `kvm_cpuid2`) is
 * simply absent from that architecture's table. Each entry says which capability it needs: the
 * wrappers in this directory check those capabilities before relying on an ioctl.
 *
 * The VFIO ioctls a VMM issues to hand a device's MSI to KVM (container, group, device; `linux/vfio.h`)
 * are in the same table: all of them are `_IO(VFIO_TYPE, VFIO_BASE + n)` (the argument carries its
 * own `argsz`), so only the direction layout differs between architectures.
 *
 * Also here: the capability numbers (`KVM_CAP_*`), the exit reasons of `kvm_run`, and the device
 * types of KVM_CREATE_DEVICE that xive-remap talks about.
 */
import { arch as processArch } from 'node:process';
import { RemapError } from '../errors.js';

/** The architectures xive-remap knows KVM's ioctl encoding for (Node's names). */
export type KvmArch = 'x64' | 'arm64' | 'ppc64';

/** All architectures of `KvmArch`, for table-driven code and tests. */
export const KVM_ARCHES: readonly KvmArch[] = ['x64', 'arm64', 'ppc64'];

/** The `type` byte of every KVM ioctl (`KVMIO` in linux/kvm.h). */
export const KVMIO = 0xae;

/** The `type` byte of every VFIO ioctl (`VFIO_TYPE`, ';', in linux/vfio.h). */
export const VFIO_TYPE = 0x3b;

/** The first VFIO ioctl number (`VFIO_BASE`); VFIO_GET_API_VERSION is `VFIO_BASE + 0`. */
export const VFIO_BASE = 100;

/** The one KVM API version this code speaks (KVM_GET_API_VERSION must return it). */
export const KVM_API_VERSION = 12;

/** An ioctl's data direction, seen from userspace (`_IO`, `_IOW`, `_IOR`, `_IOWR`). */
export type IocDir = 'none' | 'write' | 'read' | 'readwrite';

/** How an architecture lays out the direction and size fields of an ioctl number. */
export interface IocLayout {
  /** Bit where the direction field starts. */
  readonly dirShift: number;
  /** Width of the size field (it starts at bit 16). */
  readonly sizeBits: number;
  /** Direction field values. */
  readonly none: number;
  /** Userspace writes, the kernel reads (`_IOW`). */
  readonly write: number;
  /** The kernel writes, userspace reads (`_IOR`). */
  readonly read: number;
}

/** asm-generic/ioctl.h: x86_64, aarch64 and most others. */
export const GENERIC_IOC: IocLayout = Object.freeze({ dirShift: 30, sizeBits: 14, none: 0, write: 1, read: 2 });
/** arch/powerpc/include/uapi/asm/ioctl.h. */
export const POWERPC_IOC: IocLayout = Object.freeze({ dirShift: 29, sizeBits: 13, none: 1, write: 4, read: 2 });

/** The ioctl number layout of an architecture. */
export function iocLayout(arch: KvmArch): IocLayout {
  return arch === 'ppc64' ? POWERPC_IOC : GENERIC_IOC;
}

/**
 * `_IOC(dir, type, nr, size)` for a layout, as an unsigned 32-bit number.
 * @throws RangeError if type or nr does not fit in 8 bits, or size not in the layout's size field
 */
export function ioc(layout: IocLayout, dir: IocDir, type: number, nr: number, size: number): number {
  if (type >>> 8 !== 0 || nr >>> 8 !== 0) throw new RangeError(`ioctl type 0x${type.toString(16)} / nr 0x${nr.toString(16)} must fit in 8 bits`);
  if (size < 0 || size >= 2 ** layout.sizeBits) throw new RangeError(`ioctl argument size ${size} does not fit in ${layout.sizeBits} bits`);
  const d = dir === 'none' ? layout.none : dir === 'write' ? layout.write : dir === 'read' ? layout.read : layout.read | layout.write;
  return ((d << layout.dirShift) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** An argument size that depends on the architecture; a missing architecture has no such ioctl. */
type ArchSizes = Readonly<Partial<Record<KvmArch, number>>>;

/** One ioctl: its direction, number, argument size, and what the kernel must offer for it. */
interface IoctlSpec {
  /** The ioctl's type byte; default KVMIO. */
  readonly type?: number;
  readonly dir: IocDir;
  readonly nr: number;
  readonly size: number | ArchSizes;
  /** The capability it needs (checked with KVM_CHECK_EXTENSION), or why none is needed. */
  readonly needs: string;
}

// Argument struct sizes (bytes) from the uapi headers.
/** struct kvm_userspace_memory_region: u32 slot, u32 flags, u64 guest_phys_addr, u64 memory_size, u64 userspace_addr. */
export const SIZEOF_USERSPACE_MEMORY_REGION = 32;
/** struct kvm_create_device: u32 type, u32 fd (out), u32 flags. */
export const SIZEOF_CREATE_DEVICE = 12;
/** struct kvm_device_attr: u32 flags, u32 group, u64 attr, u64 addr. */
export const SIZEOF_DEVICE_ATTR = 24;
/** struct kvm_regs on x86_64: 16 general registers, rip, rflags (18 × u64). */
export const SIZEOF_X86_REGS = 144;
/** struct kvm_sregs on x86_64: 8 segments, 2 dtables, cr0–cr8, efer, apic_base, interrupt_bitmap[4]. */
export const SIZEOF_X86_SREGS = 312;
/** struct kvm_regs on powerpc: pc, cr, ctr, lr, xer, msr, srr0, srr1, pid, sprg0–7, gpr[32] (49 × u64). */
export const SIZEOF_PPC_REGS = 392;
/** struct kvm_cpuid2 header (x86): u32 nent, u32 padding, then nent × struct kvm_cpuid_entry2. */
export const SIZEOF_X86_CPUID2 = 8;
/** struct kvm_cpuid_entry2 (x86): function, index, flags, eax, ebx, ecx, edx, padding[3] (10 × u32). */
export const SIZEOF_X86_CPUID_ENTRY2 = 40;
/** struct kvm_enable_cap: u32 cap, u32 flags, u64 args[4], u8 pad[64]. */
export const SIZEOF_ENABLE_CAP = 104;
/** struct kvm_one_reg: u64 id, u64 addr (userspace address of the register's value). */
export const SIZEOF_ONE_REG = 16;
/** struct kvm_ppc_mmuv3_cfg (powerpc): u64 flags, u64 process_table. */
export const SIZEOF_PPC_MMUV3_CFG = 16;
/** struct kvm_irqfd: u32 fd, u32 gsi, u32 flags, u32 resamplefd, u8 pad[16]. */
export const SIZEOF_IRQFD = 32;

/**
 * Every KVM ioctl xive-remap issues. `needs` is the capability rust-vmm notes beside each one; the
 * basic API (KVM_API_VERSION 12) has no capability of its own.
 */
const SPECS = {
  // --- /dev/kvm (system fd) ---
  KVM_GET_API_VERSION: { dir: 'none', nr: 0x00, size: 0, needs: 'none: basic API' },
  KVM_CREATE_VM: { dir: 'none', nr: 0x01, size: 0, needs: 'none: basic API' },
  KVM_CHECK_EXTENSION: { dir: 'none', nr: 0x03, size: 0, needs: 'none on /dev/kvm; KVM_CAP_CHECK_EXTENSION_VM on a VM fd' },
  KVM_GET_VCPU_MMAP_SIZE: { dir: 'none', nr: 0x04, size: 0, needs: 'none: basic API' },
  KVM_GET_SUPPORTED_CPUID: { dir: 'readwrite', nr: 0x05, size: { x64: SIZEOF_X86_CPUID2 }, needs: 'KVM_CAP_EXT_CPUID (x86 only)' },
  // --- VM fd ---
  KVM_CREATE_VCPU: { dir: 'none', nr: 0x41, size: 0, needs: 'none: basic API (count limited by KVM_CAP_MAX_VCPUS)' },
  KVM_SET_USER_MEMORY_REGION: { dir: 'write', nr: 0x46, size: SIZEOF_USERSPACE_MEMORY_REGION, needs: 'KVM_CAP_USER_MEMORY (slot count: KVM_CAP_NR_MEMSLOTS)' },
  KVM_SET_TSS_ADDR: { dir: 'none', nr: 0x47, size: { x64: 0 }, needs: 'KVM_CAP_SET_TSS_ADDR (x86 only)' },
  KVM_IRQFD: { dir: 'write', nr: 0x76, size: SIZEOF_IRQFD, needs: 'KVM_CAP_IRQFD (on Book3S the GSI is the guest XIVE interrupt number: no KVM_SET_GSI_ROUTING)' },
  KVM_ENABLE_CAP: { dir: 'write', nr: 0xa3, size: SIZEOF_ENABLE_CAP, needs: 'KVM_CAP_ENABLE_CAP (vCPU) / KVM_CAP_ENABLE_CAP_VM (VM)' },
  KVM_PPC_CONFIGURE_V3_MMU: { dir: 'write', nr: 0xaf, size: { ppc64: SIZEOF_PPC_MMUV3_CFG }, needs: 'KVM_CAP_PPC_MMU_RADIX or KVM_CAP_PPC_MMU_HASH_V3 (powerpc, POWER9+ HV)' },
  KVM_CREATE_DEVICE: { dir: 'readwrite', nr: 0xe0, size: SIZEOF_CREATE_DEVICE, needs: 'KVM_CAP_DEVICE_CTRL' },
  // --- device fd (KVM_CAP_DEVICE_CTRL); the same numbers also work on VM and vCPU fds on some arches ---
  KVM_SET_DEVICE_ATTR: { dir: 'write', nr: 0xe1, size: SIZEOF_DEVICE_ATTR, needs: 'KVM_CAP_DEVICE_CTRL' },
  KVM_GET_DEVICE_ATTR: { dir: 'write', nr: 0xe2, size: SIZEOF_DEVICE_ATTR, needs: 'KVM_CAP_DEVICE_CTRL' },
  KVM_HAS_DEVICE_ATTR: { dir: 'write', nr: 0xe3, size: SIZEOF_DEVICE_ATTR, needs: 'KVM_CAP_DEVICE_CTRL' },
  // --- vCPU fd ---
  KVM_RUN: { dir: 'none', nr: 0x80, size: 0, needs: 'none: basic API (kvm_run is mmapped from the vCPU fd)' },
  KVM_GET_REGS: { dir: 'read', nr: 0x81, size: { x64: SIZEOF_X86_REGS, ppc64: SIZEOF_PPC_REGS }, needs: 'none: basic API (arm64 has no kvm_regs ioctl: it uses ONE_REG)' },
  KVM_SET_REGS: { dir: 'write', nr: 0x82, size: { x64: SIZEOF_X86_REGS, ppc64: SIZEOF_PPC_REGS }, needs: 'none: basic API (arm64 has no kvm_regs ioctl: it uses ONE_REG)' },
  KVM_GET_SREGS: { dir: 'read', nr: 0x83, size: { x64: SIZEOF_X86_SREGS }, needs: 'none: basic API (x86 layout only here)' },
  KVM_SET_SREGS: { dir: 'write', nr: 0x84, size: { x64: SIZEOF_X86_SREGS }, needs: 'none: basic API (x86 layout only here)' },
  KVM_SET_CPUID2: { dir: 'write', nr: 0x90, size: { x64: SIZEOF_X86_CPUID2 }, needs: 'KVM_CAP_EXT_CPUID (x86 only)' },
  // _IOW on both: the kernel only reads struct kvm_one_reg; GET writes the value at its `addr`.
  KVM_GET_ONE_REG: { dir: 'write', nr: 0xab, size: SIZEOF_ONE_REG, needs: 'KVM_CAP_ONE_REG' },
  KVM_SET_ONE_REG: { dir: 'write', nr: 0xac, size: SIZEOF_ONE_REG, needs: 'KVM_CAP_ONE_REG' },
  // --- VM or vCPU fd ---
  KVM_GET_STATS_FD: { dir: 'none', nr: 0xce, size: 0, needs: 'KVM_CAP_BINARY_STATS_FD (Linux 5.14+)' },
  // --- VFIO (linux/vfio.h): every one is _IO(VFIO_TYPE, VFIO_BASE + n) ---
  // container fd (/dev/vfio/vfio)
  VFIO_GET_API_VERSION: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 0, size: 0, needs: 'VFIO: the container fd (/dev/vfio/vfio); returns VFIO_API_VERSION (0)' },
  VFIO_CHECK_EXTENSION: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 1, size: 0, needs: 'VFIO: the container fd; the argument is an IOMMU type (VFIO_SPAPR_TCE_v2_IOMMU …)' },
  VFIO_SET_IOMMU: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 2, size: 0, needs: 'VFIO: a container with a group attached (VFIO_GROUP_SET_CONTAINER first)' },
  // group fd (/dev/vfio/<group>)
  VFIO_GROUP_GET_STATUS: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 3, size: 0, needs: 'VFIO: a group fd; struct vfio_group_status' },
  VFIO_GROUP_SET_CONTAINER: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 4, size: 0, needs: 'VFIO: a viable group fd; the argument points at the container fd (s32)' },
  VFIO_GROUP_UNSET_CONTAINER: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 5, size: 0, needs: 'VFIO: a group fd in a container' },
  VFIO_GROUP_GET_DEVICE_FD: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 6, size: 0, needs: 'VFIO: a group fd with its container IOMMU set; the argument is the device name (a C string)' },
  // device fd
  VFIO_DEVICE_GET_INFO: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 7, size: 0, needs: 'VFIO: a device fd; struct vfio_device_info' },
  VFIO_DEVICE_GET_REGION_INFO: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 8, size: 0, needs: 'VFIO: a device fd; struct vfio_region_info' },
  VFIO_DEVICE_GET_IRQ_INFO: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 9, size: 0, needs: 'VFIO: a device fd; struct vfio_irq_info' },
  VFIO_DEVICE_SET_IRQS: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 10, size: 0, needs: 'VFIO: a device fd; struct vfio_irq_set (eventfds for MSI need bus mastering on)' },
  VFIO_DEVICE_RESET: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 11, size: 0, needs: 'VFIO: a device fd whose vfio_device_info has VFIO_DEVICE_FLAGS_RESET' },
  // container fd, once the IOMMU is set: VFIO_IOMMU_GET_INFO on type1, VFIO_IOMMU_SPAPR_TCE_GET_INFO on sPAPR (same number)
  VFIO_IOMMU_SPAPR_TCE_GET_INFO: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 12, size: 0, needs: 'VFIO: a container with an sPAPR TCE IOMMU set; struct vfio_iommu_spapr_tce_info' },
  VFIO_IOMMU_ENABLE: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 15, size: 0, needs: 'VFIO: a container with the sPAPR TCE v1 IOMMU (v2 needs no enable)' },
  VFIO_IOMMU_DISABLE: { type: VFIO_TYPE, dir: 'none', nr: VFIO_BASE + 16, size: 0, needs: 'VFIO: a container with the sPAPR TCE v1 IOMMU, enabled' },
} as const satisfies Record<string, IoctlSpec>;

/** The name of an ioctl in the table (`'KVM_RUN'`, …). */
export type KvmIoctlName = keyof typeof SPECS;

/** Ioctls whose argument is the same on every architecture: always present in a table. */
type CommonName = {
  [K in KvmIoctlName]: (typeof SPECS)[K]['size'] extends number ? K : never;
}[KvmIoctlName];

/** The ioctl numbers of one architecture; arch-specific ones are absent where they do not exist. */
export type KvmIoctls = { readonly arch: KvmArch } & Readonly<Record<CommonName, number>> &
  Readonly<Partial<Record<Exclude<KvmIoctlName, CommonName>, number>>>;

/** What each ioctl needs from the kernel (the capability note of the table). */
export const KVM_IOCTL_NEEDS: Readonly<Record<KvmIoctlName, string>> = Object.freeze(
  Object.fromEntries(Object.entries(SPECS).map(([name, s]) => [name, s.needs])) as Record<KvmIoctlName, string>,
);

const tables = new Map<KvmArch, KvmIoctls>();

/**
 * The KVM ioctl numbers of an architecture.
 * @throws RemapError E_KVM for an architecture xive-remap has no encoding for
 */
export function kvmIoctls(arch: KvmArch): KvmIoctls {
  const cached = tables.get(arch);
  if (cached) return cached;
  if (!KVM_ARCHES.includes(arch)) {
    throw new RemapError('E_KVM', `no KVM ioctl encoding for architecture ${String(arch)} (known: ${KVM_ARCHES.join(', ')})`);
  }
  const layout = iocLayout(arch);
  const out: Record<string, number | KvmArch> = { arch };
  for (const [name, spec] of Object.entries(SPECS) as [KvmIoctlName, IoctlSpec][]) {
    const size = typeof spec.size === 'number' ? spec.size : spec.size[arch];
    if (size !== undefined) out[name] = ioc(layout, spec.dir, spec.type ?? KVMIO, spec.nr, size);
  }
  const table = Object.freeze(out) as unknown as KvmIoctls;
  tables.set(arch, table);
  return table;
}

/** Whether Node's architecture name is one `kvmIoctls` knows. */
export function isKvmArch(arch: string): arch is KvmArch {
  return (KVM_ARCHES as readonly string[]).includes(arch);
}

/**
 * The KVM ioctl numbers of the architecture Node runs on (`process.arch`), or of `arch` if given.
 * @throws RemapError E_KVM on an architecture without a known encoding
 */
export function hostKvmIoctls(arch: string = processArch): KvmIoctls {
  if (!isKvmArch(arch)) {
    throw new RemapError('E_KVM', `no KVM ioctl encoding for architecture ${arch} (known: ${KVM_ARCHES.join(', ')})`);
  }
  return kvmIoctls(arch);
}

/**
 * The number of an ioctl that may be absent on an architecture.
 * @throws RemapError E_KVM if the architecture has no such ioctl
 */
export function requireIoctl(table: KvmIoctls, name: KvmIoctlName): number {
  const n = table[name];
  if (n === undefined) throw new RemapError('E_KVM', `${name} does not exist on ${table.arch} (it needs ${KVM_IOCTL_NEEDS[name]})`);
  return n;
}

/** Capability numbers for KVM_CHECK_EXTENSION (include/uapi/linux/kvm.h). */
export const KVM_CAP = Object.freeze({
  /** KVM_SET_USER_MEMORY_REGION exists. */
  USER_MEMORY: 3,
  /** KVM_SET_TSS_ADDR exists (x86). */
  SET_TSS_ADDR: 4,
  /** KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2 exist (x86). */
  EXT_CPUID: 7,
  /** Recommended number of vCPUs. */
  NR_VCPUS: 9,
  /** How many memslots a VM may have (the value returned). */
  NR_MEMSLOTS: 10,
  /** KVM follows host page table changes through MMU notifiers (what approach 3 relies on). */
  SYNC_MMU: 16,
  /** KVM_IRQFD: an eventfd injects a guest interrupt (and, with irq bypass, routes a device's MSI to it). */
  IRQFD: 32,
  /** KVM_ENABLE_CAP on a vCPU fd. */
  ENABLE_CAP: 54,
  /** Maximum number of vCPUs. */
  MAX_VCPUS: 66,
  /** PAPR (sPAPR guest) mode, enabled per vCPU; KVM-HV runs nothing else (`kvmppc_sanity_check`). */
  PPC_PAPR: 68,
  /** KVM_GET_ONE_REG / KVM_SET_ONE_REG. */
  ONE_REG: 70,
  /** KVM_MEM_READONLY memslots. */
  READONLY_MEM: 81,
  /** KVM_CREATE_DEVICE and the device attribute ioctls. */
  DEVICE_CTRL: 89,
  /** KVM_CHECK_EXTENSION works on a VM fd. */
  CHECK_EXTENSION_VM: 105,
  /** KVM-HV can run radix guests (KVM_PPC_CONFIGURE_V3_MMU with KVM_PPC_MMUV3_RADIX): POWER9+ on a radix host. */
  PPC_MMU_RADIX: 134,
  /** kvm_run.immediate_exit. */
  IMMEDIATE_EXIT: 136,
  /** The XIVE native exploitation mode device (POWER9+). */
  PPC_IRQ_XIVE: 169,
  /** KVM_GET_STATS_FD: binary statistics of a VM or vCPU (exits, page faults, emulated instructions). */
  BINARY_STATS_FD: 203,
});

/** Device types for KVM_CREATE_DEVICE (enum kvm_device_type). */
export const KVM_DEV_TYPE = Object.freeze({
  /** The VFIO pseudo-device (tells KVM about VFIO groups/files); exists on x86, arm64, powerpc. */
  VFIO: 4,
  /** The XIVE native interrupt controller (POWER9+). */
  XIVE: 9,
});

/** KVM_CREATE_VM machine type on powerpc: force KVM-HV (`KVM_VM_PPC_HV`; 2 would force PR, 0 picks). */
export const KVM_VM_PPC_HV = 1;

/** KVM_CREATE_DEVICE flag: only test whether the device type could be created. */
export const KVM_CREATE_DEVICE_TEST = 1;

/** Exit reasons of `kvm_run.exit_reason` that xive-remap names (value → name). */
export const KVM_EXIT_NAMES: ReadonlyMap<number, string> = new Map([
  [0, 'KVM_EXIT_UNKNOWN'],
  [1, 'KVM_EXIT_EXCEPTION'],
  [2, 'KVM_EXIT_IO'],
  [3, 'KVM_EXIT_HYPERCALL'],
  [4, 'KVM_EXIT_DEBUG'],
  [5, 'KVM_EXIT_HLT'],
  [6, 'KVM_EXIT_MMIO'],
  [7, 'KVM_EXIT_IRQ_WINDOW_OPEN'],
  [8, 'KVM_EXIT_SHUTDOWN'],
  [9, 'KVM_EXIT_FAIL_ENTRY'],
  [10, 'KVM_EXIT_INTR'],
  [17, 'KVM_EXIT_INTERNAL_ERROR'],
  [19, 'KVM_EXIT_PAPR_HCALL'],
  [24, 'KVM_EXIT_SYSTEM_EVENT'],
  [39, 'KVM_EXIT_MEMORY_FAULT'],
]);

/** The exit reasons the wrappers act on. */
export const KVM_EXIT = Object.freeze({
  IO: 2,
  HLT: 5,
  MMIO: 6,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  PAPR_HCALL: 19,
  MEMORY_FAULT: 39,
});

/** The name of an exit reason (`8` → `'KVM_EXIT_SHUTDOWN'`), or `'exit reason <n>'`. */
export function kvmExitName(reason: number): string {
  return KVM_EXIT_NAMES.get(reason) ?? `exit reason ${reason}`;
}
