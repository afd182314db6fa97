/**
 * A real KVM-HV guest on a POWER9+ (ppc64, PowerNV) host: the POWER twin of `KvmX86Guest`. A host
 * range — typically an `EsbController`'s region of XIVE ESB pages, or any memfd mapping — is
 * registered ONCE as a memslot, and a one-vCPU guest reads it with ordinary loads. So every
 * mmap(MAP_FIXED) the host does inside the range must reach the guest through KVM's MMU notifiers
 * with no memslot update, and the guest sees the new page on its very next load. Nothing here
 * caches a translation: each `read64` is a fresh guest load, translated by KVM's partition-scoped
 * table, which the MMU notifiers invalidate.
 *
 * The guest: radix MMU (KVM_PPC_CONFIGURE_V3_MMU), PAPR mode (KVM-HV runs nothing else), little-
 * endian (MSR.LE, and LPCR.ILE so interrupts are taken little-endian too), supervisor-privileged (not
 * hypervisor: MSR.PR = MSR.HV = 0) real mode (MSR.IR = MSR.DR = 0). In real mode a radix guest's
 * addresses go straight through the partition-scoped table, i.e. through the memslots: no guest page
 * table is needed, and every memslot is reachable (an HPT guest would need its own hash table to
 * reach a second slot).
 * Guest-physical layout:
 *
 *   code slot (owned here)       0x0000–0x1fff exception stubs, 0x2000 the loop, 0x3000 the mailbox
 *   region slot (the caller's)   at `guestPhysAddr` (default 4 GiB)
 *
 * The loop: load the address in the mailbox, load the doubleword there with `ldbrx` (byte-reversed:
 * in little-endian mode that is the big-endian value, Linux's `in_be64`, the way an ESB load is
 * read), then `sc 1` with an hcall number KVM does not handle itself (XR_HCALL_LOADED), so the exit
 * reaches userspace as KVM_EXIT_PAPR_HCALL with the value in `papr_hcall.args[0]` (r4) and the
 * address in `args[1]` (r5); then branch back. `read64(offset)` stores the address in the mailbox
 * (plain memory, no syscall) and issues ONE KVM_RUN. The next KVM_RUN writes `papr_hcall.ret` and
 * `args` back into r3–r12 (KVM completes the hcall); the loop reloads what it uses, so that is
 * harmless.
 *
 * Each exception vector (every 0x20 bytes below 0x2000) holds a stub that makes the hcall
 * XR_HCALL_EXCEPTION with the vector, SRR0, SRR1, DAR and DSISR in r4–r8: any exception the guest
 * takes comes back as an error naming it, never as a hang. A load from a host hole makes KVM_RUN
 * fail with EFAULT (`RemapError('E_KVM')` naming the offset); a guest-physical address outside the
 * memslots exits as MMIO.
 *
 * Keep each guest run short. On the emulated POWER9 (QEMU powernv9, TCG, Debian 12's 6.1 kernel),
 * after a long KVM_RUN that re-entered the guest inside the kernel (timer exits), the calling
 * thread's floating-point registers f14–f31 came back holding the guest's values (possibly an
 * emulation artefact) — and Node's JIT keeps values there. So the guest never spins: one run is one
 * load and one hcall, and the guest never enables external interrupts (MSR.EE = 0).
 */
import { RemapError } from '../src/errors.js';
import {
  KVM_CAP,
  KVM_PPC_MMUV3_GTSE,
  KVM_PPC_MMUV3_RADIX,
  KVM_REG_PPC_LPCR_64,
  KVM_VM_PPC_HV,
  LPCR,
  MSR,
  PATB_GR,
  UserMemory,
  hex,
  kvmExitName,
  type KvmVm,
  type RunExit,
} from '../src/kvm/index.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import { KvmGuestBase, buildGuest, guestUsable, type GuestArch, type GuestParts, type KvmGuestOptions } from './kvm-guest-base.js';
import { SPR, b, insnBytes, ld, ldbrx, li, mfspr, sc } from './ppc64-insns.js';

// Guest-physical layout of the code slot (see the module comment).
/** Exception stubs fill [0, STUBS_END): one every STUB_STRIDE bytes (vectors are 0x20-aligned). */
const STUBS_END = 0x2000;
const STUB_STRIDE = 0x20;
/** The loop. */
export const PPC_GUEST_LOOP = 0x2000n;
/** The mailbox: the guest-physical address of the next load (u64, guest byte order: little-endian). */
export const PPC_GUEST_MAILBOX = 0x3000n;
/** Bytes of the code slot the guest uses (the slot itself is rounded up to host pages). */
const CODE_BYTES = 0x4000n;

/** Where the region goes unless the caller says otherwise. */
const DEFAULT_REGION_GPA = 4n << 30n;
/** A radix guest's partition-scoped table maps 52 bits of guest-physical space. */
const MAX_GPA_END = 1n << 52n;

/**
 * Hcall numbers of this guest: above PAPR's range (KVM answers numbers up to MAX_HCALL_OPCODE, 0x4xx,
 * that it implements) and outside KVM's private ones (0xef00…, 0xf000…, 0xf800…), so
 * `kvmppc_pseries_do_hcall` returns RESUME_HOST and the exit reaches userspace.
 */
export const XR_HCALL = Object.freeze({
  /** The load is done: r4 = the value (big-endian interpretation), r5 = its guest-physical address. */
  LOADED: 0x7800,
  /** The guest took an exception: r4 = vector, r5 = SRR0, r6 = SRR1, r7 = DAR, r8 = DSISR. */
  EXCEPTION: 0x7804,
});

/** The guest's MSR: 64-bit, machine checks on, little-endian; real mode, no external interrupts, no FP. */
export const PPC_GUEST_MSR = MSR.SF | MSR.ME | MSR.LE;

/** Interrupt vectors the stubs name in messages (Book III-S). */
const VECTOR_NAMES: ReadonlyMap<number, string> = new Map([
  [0x100, 'system reset'],
  [0x200, 'machine check'],
  [0x300, 'data storage'],
  [0x380, 'data segment'],
  [0x400, 'instruction storage'],
  [0x480, 'instruction segment'],
  [0x500, 'external'],
  [0x600, 'alignment'],
  [0x700, 'program'],
  [0x800, 'FP unavailable'],
  [0x900, 'decrementer'],
  [0xc00, 'system call'],
  [0xd00, 'trace'],
  [0xf00, 'performance monitor'],
  [0xf20, 'vector unavailable'],
  [0xf40, 'VSX unavailable'],
  [0xf60, 'facility unavailable'],
]);

/** The exception stub at `vector`: report the vector, SRR0, SRR1, DAR, DSISR through hcall XR_HCALL.EXCEPTION. */
export function exceptionStub(vector: number): number[] {
  return [li(4, vector), mfspr(5, SPR.SRR0), mfspr(6, SPR.SRR1), mfspr(7, SPR.DAR), mfspr(8, SPR.DSISR), li(3, XR_HCALL.EXCEPTION), sc(1)];
}

/** The loop at PPC_GUEST_LOOP (see the module comment). */
export function loopCode(): number[] {
  const words = [
    ld(5, Number(PPC_GUEST_MAILBOX), 0), // r5 = the address in the mailbox (RA = 0: absolute)
    ldbrx(4, 0, 5), // r4 = the doubleword at r5, byte-reversed: its big-endian value
    li(3, XR_HCALL.LOADED),
    sc(1), // exit to userspace: papr_hcall.nr = r3, args[0] = r4, args[1] = r5
  ];
  words.push(b(-4 * words.length)); // back to the top
  return words;
}

/** The code slot's first CODE_BYTES bytes: the exception stubs, the loop; the mailbox is zero. */
export function ppcGuestImage(): Uint8Array {
  const image = new Uint8Array(Number(CODE_BYTES));
  for (let v = 0; v < STUBS_END; v += STUB_STRIDE) image.set(insnBytes(exceptionStub(v)), v);
  image.set(insnBytes(loopCode()), Number(PPC_GUEST_LOOP));
  return image;
}

/** The capabilities the guest needs from a VM, with what each is for. */
const NEEDED_CAPS: readonly [number, string][] = [
  [KVM_CAP.PPC_MMU_RADIX, 'KVM_CAP_PPC_MMU_RADIX (a radix guest: POWER9+ KVM-HV on a radix host)'],
  [KVM_CAP.PPC_PAPR, 'KVM_CAP_PPC_PAPR'],
  [KVM_CAP.ONE_REG, 'KVM_CAP_ONE_REG (to set LPCR.ILE)'],
];

/** The first capability of NEEDED_CAPS the VM lacks, or null. */
function missingCap(vm: KvmVm): string | null {
  for (const [cap, what] of NEEDED_CAPS) if (vm.checkExtension(cap) <= 0) return what;
  return null;
}

/** The code slot: CODE_BYTES rounded up to host pages. */
function codeSlotSize(native: NativeLayer): bigint {
  const page = BigInt(native.pageSize);
  return ((CODE_BYTES + page - 1n) / page) * page;
}

/** The POWER half of the guest (see kvm-guest-base.ts for the shared one). */
const PPC: GuestArch = {
  name: 'KvmPpcGuest',
  arch: 'ppc64',
  noKvmHint: 'is kvm-hv loaded? only kvm-pr?',
  defaultGuestPhysAddr: DEFAULT_REGION_GPA,
  createVm: (sys) => sys.createVm(KVM_VM_PPC_HV),
  missing: missingCap,
  checkPlacement(userspaceAddr, size, regionGpa, native) {
    const page = BigInt(native.pageSize);
    const codeSize = codeSlotSize(native);
    if (size <= 0n || size % page !== 0n || userspaceAddr % page !== 0n) {
      throw new RangeError(`the region ${hex(userspaceAddr)}+${hex(size)} must be non-empty and aligned to the ${hex(page)}-byte host page`);
    }
    if (regionGpa < codeSize || regionGpa % page !== 0n) {
      throw new RangeError(`guestPhysAddr ${hex(regionGpa)} must be aligned to the ${hex(page)}-byte host page and at or above the code slot's end (${hex(codeSize)})`);
    }
    if (regionGpa + size > MAX_GPA_END) throw new RangeError(`region ${hex(regionGpa)}+${hex(size)} ends past the 2^52 bytes a radix guest can address`);
  },
  // Radix: real-mode addresses go through the partition-scoped table only (the memslots).
  configureVm: (vm) => vm.configurePpcV3Mmu(KVM_PPC_MMUV3_RADIX | KVM_PPC_MMUV3_GTSE, PATB_GR),
  mapCode(native) {
    const code = UserMemory.map(native, codeSlotSize(native), 'POWER guest code');
    try {
      code.write(0n, ppcGuestImage());
    } catch (e) {
      code.close();
      throw e;
    }
    return code;
  },
  setupVcpu(vcpu) {
    // KVM-HV runs only PAPR guests: without this, KVM_RUN fails with EINVAL (kvmppc_sanity_check).
    vcpu.enableCap(KVM_CAP.PPC_PAPR);
    // Interrupts little-endian (the stubs are LE code), at vectors 0x0… (no alternate location).
    const lpcr = vcpu.getOneRegU64(KVM_REG_PPC_LPCR_64);
    vcpu.setOneRegU64(KVM_REG_PPC_LPCR_64, (lpcr | LPCR.ILE) & ~LPCR.AIL);
  },
};

/**
 * Options of `KvmPpcGuest.create`: the region (`memslot`, host-page-aligned, or a VMM's registered
 * `region` on its `vm`), its guest-physical address (host-page-aligned, at or above the code slot;
 * default 4 GiB), the VM (e.g. `XiveKvmDevice.vm`, whose device's ESB pages the region holds).
 */
export type KvmPpcGuestOptions = KvmGuestOptions;

/** A one-vCPU POWER KVM-HV guest that reads a host range through one memslot, one 8-byte load per run. */
export class KvmPpcGuest extends KvmGuestBase {
  private constructor(parts: GuestParts) {
    super(parts, 'KvmPpcGuest');
  }

  /**
   * Null when a guest can run here, else a one-line reason to skip with (not ppc64, no /dev/kvm,
   * cannot open it, cannot create a KVM-HV VM, no radix MMU / PAPR / ONE_REG).
   */
  static usable(native: NativeLayer = realNative): string | null {
    return guestUsable(PPC, native);
  }

  /**
   * Create the VM (unless `vm` is given) with a radix MMU, register the code slot at 0 and the
   * region slot (once; not when a registered `region` is given), create the vCPU in PAPR mode with
   * LPCR.ILE set, ready for `read64`.
   * @throws RangeError for a region that is empty, misaligned, misplaced or past 2^52, `slots` without `vm`, or a `region` not in `slots`
   * @throws RemapError E_DEVICE_UNAVAILABLE off ppc64, without /dev/kvm or a capability the guest
   *   needs; E_KVM when KVM refuses a step (the VM, a memslot, the vCPU, a register). After a
   *   failure on a caller's `vm`, the memslots it added are removed, but the VM keeps the radix MMU
   *   setting and, if it was created, the vCPU (KVM cannot destroy one): retry with another `vcpuId`.
   */
  static create(opts: KvmPpcGuestOptions): KvmPpcGuest {
    return new KvmPpcGuest(buildGuest(PPC, opts));
  }

  /**
   * Run the guest for ONE 8-byte load at `offset` of the region (`ldbrx`: a single doubleword
   * access, as ESB pages need) and return the doubleword's BIG-ENDIAN interpretation: byte
   * `offset` is the most significant, byte `offset + 7` the least — what Linux's `in_be64` and
   * `XiveKvmDevice.esbGet` read, so an ESB load's PQ bits are `read64(…) & 3n`. One KVM_RUN (plus
   * a KVM_SET_REGS on the first read and after an error); nothing is cached: each call is a fresh
   * guest load through KVM's translation of the region.
   *
   * The load has whatever side effect the host page gives it: on an ESB management page, offsets
   * 0xc00–0xf00 set the PQ bits; and a load from the ESB page of a source the kernel does not know
   * faults (configure sources first).
   * @throws RangeError if `offset` is not 8-byte aligned or [offset, offset+8) is outside the region
   * @throws RemapError E_CLOSED after close(); E_KVM naming the offset if the load faults (EFAULT:
   *   no host page), the guest takes an exception, or it exits for any other reason
   */
  read64(offset: bigint): bigint {
    if (offset % 8n !== 0n) throw new RangeError(`offset ${hex(offset)} is not an 8-byte-aligned doubleword`);
    // Back to the top of the loop, in the guest's mode (after an exception the vCPU sits in a stub).
    const exit = this.runLoad(offset, 8, PPC_GUEST_MAILBOX, () => this.vcpu.setPpcRegs({ pc: PPC_GUEST_LOOP, msr: PPC_GUEST_MSR }));
    const gpa = this.guestPhysAddr + offset;
    if (exit.reason === 'papr-hcall' && exit.nr === BigInt(XR_HCALL.LOADED)) {
      const [value, loadedFrom] = exit.args as [bigint, bigint];
      if (loadedFrom !== gpa) throw this.failedLoad(new RemapError('E_KVM', `${this.where(offset)}: the guest loaded from ${hex(loadedFrom)}, not ${hex(gpa)}`));
      return value;
    }
    if (exit.reason === 'papr-hcall' && exit.nr === BigInt(XR_HCALL.EXCEPTION)) {
      const [vector, srr0, srr1, dar, dsisr] = exit.args as [bigint, bigint, bigint, bigint, bigint];
      const name = VECTOR_NAMES.get(Number(vector)) ?? 'unknown';
      throw this.failedLoad(
        new RemapError('E_KVM', `${this.where(offset)}: the guest took a ${name} interrupt (vector ${hex(vector)}) at ${hex(srr0)} (SRR1 ${hex(srr1)}, DAR ${hex(dar)}, DSISR ${hex(dsisr)})`),
      );
    }
    throw this.failedLoad(new RemapError('E_KVM', `${this.where(offset)} ended in ${describeExit(exit)}${this.#pc()}, not the expected hcall ${hex(XR_HCALL.LOADED)}`));
  }

  /**
   * The NUL-terminated ASCII string at `offset` (8-byte aligned) of the region, at most `max` bytes,
   * as the guest loads it 8 bytes at a time: how a test reads a fake ESB page's stamp from inside.
   * (The big-endian value's most significant byte is the first in memory.)
   * @throws RangeError, RemapError as read64
   */
  readString(offset: bigint, max = 32): string {
    return this.readStringWith(offset, max, 8, (o) => {
      const v = this.read64(o);
      return [7, 6, 5, 4, 3, 2, 1, 0].map((i) => Number((v >> BigInt(8 * i)) & 0xffn)); // big-endian value: high byte first in memory
    });
  }

  /** ` at pc 0x…` for an error message (empty if the registers cannot be read). */
  #pc(): string {
    try {
      const r = this.vcpu.getPpcRegs();
      return ` at pc ${hex(r.pc)} (msr ${hex(r.msr)})`;
    } catch {
      return '';
    }
  }
}

function describeExit(exit: RunExit): string {
  const name = kvmExitName(exit.code);
  switch (exit.reason) {
    case 'papr-hcall':
      return `${name} (hcall ${hex(exit.nr)})`;
    case 'mmio':
      return `${name} (guest-physical ${hex(exit.physAddr)}, outside every memslot)`;
    case 'internal-error':
      return `${name} (suberror ${exit.suberror})`;
    default:
      return name;
  }
}
