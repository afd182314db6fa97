/**
 * The byte layouts of the KVM structs xive-remap passes to ioctls, and of the `kvm_run` header it
 * reads back. Pure: bytes in, values out, no system calls. Structs are laid out in the host's byte
 * order (ppc64 may be big-endian: Node calls both ppc64 and ppc64le `ppc64`), with the offsets of
 * the uapi headers (`include/uapi/linux/kvm.h`); every u64 is a bigint.
 */
import { endianness } from 'node:os';
import { SIZEOF_CREATE_DEVICE, SIZEOF_DEVICE_ATTR, SIZEOF_ENABLE_CAP, SIZEOF_IRQFD, SIZEOF_ONE_REG, SIZEOF_USERSPACE_MEMORY_REGION } from './ioctls.js';

/** Whether this host lays out integers little-endian (x86_64, arm64, ppc64le). */
export const HOST_LITTLE_ENDIAN = endianness() === 'LE';

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** struct kvm_userspace_memory_region, the argument of KVM_SET_USER_MEMORY_REGION. */
export interface UserMemoryRegion {
  /** Slot id (bits 16–31: address space id, 0 here). */
  readonly slot: number;
  /** KVM_MEM_* flags. */
  readonly flags: number;
  /** First guest-physical byte. */
  readonly guestPhysAddr: bigint;
  /** Bytes; 0 deletes the slot. */
  readonly memorySize: bigint;
  /** First byte of the host (userspace) mapping that backs it. */
  readonly userspaceAddr: bigint;
}

/** Pack a `kvm_userspace_memory_region` (32 bytes). */
export function packUserMemoryRegion(r: UserMemoryRegion, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const buf = new Uint8Array(SIZEOF_USERSPACE_MEMORY_REGION);
  const v = view(buf);
  v.setUint32(0, r.slot, le);
  v.setUint32(4, r.flags, le);
  v.setBigUint64(8, r.guestPhysAddr, le);
  v.setBigUint64(16, r.memorySize, le);
  v.setBigUint64(24, r.userspaceAddr, le);
  return buf;
}

/** struct kvm_device_attr, the argument of KVM_{SET,GET,HAS}_DEVICE_ATTR. */
export interface DeviceAttr {
  /** No flags are defined; 0. */
  readonly flags: number;
  /** Attribute group (device specific, e.g. KVM_DEV_XIVE_GRP_SOURCE). */
  readonly group: number;
  /** Attribute within the group (e.g. an interrupt number). */
  readonly attr: bigint;
  /** Userspace address of the attribute's value (0 when it has none). */
  readonly addr: bigint;
}

/** Pack a `kvm_device_attr` (24 bytes). */
export function packDeviceAttr(a: DeviceAttr, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const buf = new Uint8Array(SIZEOF_DEVICE_ATTR);
  const v = view(buf);
  v.setUint32(0, a.flags, le);
  v.setUint32(4, a.group, le);
  v.setBigUint64(8, a.attr, le);
  v.setBigUint64(16, a.addr, le);
  return buf;
}

/** Pack a `kvm_create_device` (12 bytes); the kernel writes the new fd at offset 4. */
export function packCreateDevice(type: number, flags: number, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const buf = new Uint8Array(SIZEOF_CREATE_DEVICE);
  const v = view(buf);
  v.setUint32(0, type, le);
  v.setUint32(4, 0, le);
  v.setUint32(8, flags, le);
  return buf;
}

/** The fd KVM_CREATE_DEVICE wrote back into a `kvm_create_device`. */
export function createdDeviceFd(buf: Uint8Array, le = HOST_LITTLE_ENDIAN): number {
  return view(buf).getUint32(4, le);
}

/** Pack a `struct kvm_one_reg` (16 bytes): the register id and the userspace address of its value. */
export function packOneReg(id: bigint, addr: bigint, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const buf = new Uint8Array(SIZEOF_ONE_REG);
  const v = view(buf);
  v.setBigUint64(0, id, le);
  v.setBigUint64(8, addr, le);
  return buf;
}

/**
 * Pack a `struct kvm_enable_cap` (104 bytes): u32 cap, u32 flags, u64 args[4], 64 bytes of padding.
 * @throws RangeError for more than 4 args
 */
export function packEnableCap(cap: number, args: readonly bigint[] = [], flags = 0, le = HOST_LITTLE_ENDIAN): Uint8Array {
  if (args.length > 4) throw new RangeError(`kvm_enable_cap takes at most 4 args, got ${args.length}`);
  const buf = new Uint8Array(SIZEOF_ENABLE_CAP);
  const v = view(buf);
  v.setUint32(0, cap, le);
  v.setUint32(4, flags, le);
  args.forEach((a, i) => v.setBigUint64(8 + i * 8, a, le));
  return buf;
}

/** KVM_IRQFD flag: remove the eventfd's route instead of adding it (`KVM_IRQFD_FLAG_DEASSIGN`). */
export const KVM_IRQFD_FLAG_DEASSIGN = 1;

/**
 * Pack a `kvm_irqfd` (32 bytes): u32 fd, u32 gsi, u32 flags, u32 resamplefd (unused here: 0), pad.
 * @throws RangeError if fd or gsi is not an unsigned 32-bit integer
 */
export function packIrqfd(fd: number, gsi: number, flags = 0, le = HOST_LITTLE_ENDIAN): Uint8Array {
  for (const [what, v] of [['fd', fd], ['gsi', gsi]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`kvm_irqfd: ${what} ${String(v)} is not an unsigned 32-bit integer`);
  }
  const buf = new Uint8Array(SIZEOF_IRQFD);
  const v = view(buf);
  v.setUint32(0, fd, le);
  v.setUint32(4, gsi, le);
  v.setUint32(8, flags, le);
  return buf;
}

/** Bytes of `kvm_run` that `decodeRunExit` reads: the header and the first 88 bytes of the exit union (all of `papr_hcall`). */
export const KVM_RUN_HEADER_BYTES = 0x78;

/** `papr_hcall.args` has 9 doublewords: r4–r12 of the guest at its `sc 1`. */
const PAPR_HCALL_ARGS = 9;

/** Offset of the `kvm_run` exit union. */
const EXIT_UNION = 0x20;

/** What `kvm_run` says about why KVM_RUN returned: the raw exit reason, and details for the kinds acted on. */
export type RunExit = { readonly code: number } & (
  | {
      readonly reason: 'io';
      /** 0 = in (guest reads), 1 = out (guest writes). */
      readonly direction: number;
      /** Bytes per access: 1, 2 or 4. */
      readonly size: number;
      /** The I/O port. */
      readonly port: number;
      /** Accesses (more than 1 for `rep outs`/`rep ins`). */
      readonly count: number;
      /** Offset of the data inside the `kvm_run` mapping. */
      readonly dataOffset: bigint;
    }
  | {
      readonly reason: 'mmio';
      /** Guest-physical address accessed (no memslot covers it). */
      readonly physAddr: bigint;
      /** Bytes accessed. */
      readonly len: number;
      /** Whether the guest stored (else loaded). */
      readonly isWrite: boolean;
    }
  | {
      readonly reason: 'internal-error';
      /** KVM_INTERNAL_ERROR_* (1 emulation, 2 simultaneous exceptions, 3 delivery, 4 unexpected exit). */
      readonly suberror: number;
    }
  | {
      readonly reason: 'papr-hcall';
      /** The hypercall number (the guest's r3 at `sc 1`). */
      readonly nr: bigint;
      /** The guest's r4–r12 at `sc 1`; the next KVM_RUN writes them back into r4–r12, and `ret` into r3. */
      readonly args: readonly bigint[];
    }
  | {
      readonly reason: 'fail-entry';
      /** Hardware entry failure reason (VMX exit qualification / SVM exit code). */
      readonly hardwareReason: bigint;
    }
  | { readonly reason: 'other' }
);

/** Decode the exit reason (offset 8) and, for the kinds the wrappers act on, the exit union (needs `KVM_RUN_HEADER_BYTES`). */
export function decodeRunExit(run: Uint8Array, le = HOST_LITTLE_ENDIAN): RunExit {
  const v = view(run);
  const code = v.getUint32(8, le);
  switch (code) {
    case 2: // KVM_EXIT_IO: u8 direction, u8 size, u16 port, u32 count, u64 data_offset
      return {
        code,
        reason: 'io',
        direction: v.getUint8(EXIT_UNION),
        size: v.getUint8(EXIT_UNION + 1),
        port: v.getUint16(EXIT_UNION + 2, le),
        count: v.getUint32(EXIT_UNION + 4, le),
        dataOffset: v.getBigUint64(EXIT_UNION + 8, le),
      };
    case 6: // KVM_EXIT_MMIO: u64 phys_addr, u8 data[8], u32 len, u8 is_write
      return {
        code,
        reason: 'mmio',
        physAddr: v.getBigUint64(EXIT_UNION, le),
        len: v.getUint32(EXIT_UNION + 16, le),
        isWrite: v.getUint8(EXIT_UNION + 20) !== 0,
      };
    case 17: // KVM_EXIT_INTERNAL_ERROR: u32 suberror, u32 ndata, u64 data[16]
      return { code, reason: 'internal-error', suberror: v.getUint32(EXIT_UNION, le) };
    case 19: {
      // KVM_EXIT_PAPR_HCALL (powerpc): u64 nr, u64 ret, u64 args[9]
      const args: bigint[] = [];
      for (let i = 0; i < PAPR_HCALL_ARGS; i++) args.push(v.getBigUint64(EXIT_UNION + 16 + i * 8, le));
      return { code, reason: 'papr-hcall', nr: v.getBigUint64(EXIT_UNION, le), args };
    }
    case 9: // KVM_EXIT_FAIL_ENTRY: u64 hardware_entry_failure_reason
      return { code, reason: 'fail-entry', hardwareReason: v.getBigUint64(EXIT_UNION, le) };
    default:
      return { code, reason: 'other' };
  }
}
