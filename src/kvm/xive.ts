/**
 * The KVM XIVE native device's uapi and its contract, with no fd wrapper: the attribute groups
 * (`arch/powerpc/include/uapi/asm/kvm.h`), the ESB load offsets (`asm/xive-regs.h`), the layout of
 * the device fd in host pages, and the contract probe (ARCHITECTURE §2). `XiveKvmDevice`
 * (src/devices/) builds on these; `xive-remap/kvm` exports them for a VMM that drives the device
 * itself.
 *
 * The device fd, in host pages (`asm/kvm.h`): the TIMA at page offset 0 (4 pages), the ESB pages from
 * page offset 4, two pages per interrupt (trigger, then management). So esbShift = log2(2 × page
 * size): 17 on 64 KiB pages, 13 on 4 KiB pages.
 *
 * The contract probe maps interrupt 1's two pages at their own offset at a fresh address (no
 * MAP_FIXED) and unmaps them at once. mmap faults nothing in, so no ESB page is loaded from or
 * stored to. EINVAL is the upstream handler, which accepts only page offsets 0 and 4:
 * 'fixed-offset'. Success: 'per-irq-offsets'. Any other errno says nothing about the contract, so
 * it is reported (E_DEVICE_UNAVAILABLE), never guessed.
 */
import { RemapError, errnoName, errnoOf, errnoValue } from '../errors.js';
import type { DeviceContract } from '../device.js';
import { esbGeometry, type EsbGeometry } from '../geometry.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, type NativeLayer } from '../native/index.js';

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

/** The kernel's name for a XIVE native device fd (`kvm_xive_native_ops.name`, book3s_xive_native.c). */
export const KVM_XIVE_NATIVE_FD_NAME = 'anon_inode:kvm-xive-native';
