/**
 * powerpc (Book3S-64) vCPU and VM state as KVM exchanges it, as pure codecs: `struct kvm_regs`
 * (KVM_GET/SET_REGS) and `struct kvm_ppc_mmuv3_cfg` (KVM_PPC_CONFIGURE_V3_MMU), with the ONE_REG
 * register ids and the MSR/LPCR bits the POWER guest harness uses (`arch/powerpc/include/uapi/asm/kvm.h`, `asm/reg.h`).
 * Structs are in the host's byte order (ppc64le: little-endian); every u64 is a bigint. The vCPU
 * and VM wrappers do the ioctls.
 *
 * IBM bit numbering: the architecture books number bits from the most significant (bit 0) to the
 * least significant (bit 63), so `ppcBit(63)` is 1 and `ppcBit(0)` is 2^63.
 */
import { SIZEOF_PPC_MMUV3_CFG, SIZEOF_PPC_REGS } from './ioctls.js';
import { HOST_LITTLE_ENDIAN } from './structs.js';

/** `PPC_BIT(n)`: the 64-bit mask of IBM bit `n` (0 = most significant). @throws RangeError outside 0..63 */
export function ppcBit(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n > 63) throw new RangeError(`IBM bit number ${n} is outside 0..63`);
  return 1n << BigInt(63 - n);
}

/** MSR bits (`asm/reg.h`): 64-bit mode, hypervisor, external interrupts, problem state, FP, machine check, IR, DR, recoverable, little-endian. */
export const MSR = Object.freeze({
  /** Sixty-four-bit mode. */
  SF: ppcBit(0),
  /** Hypervisor state (never set for a guest). */
  HV: ppcBit(3),
  /** External interrupts enabled (decrementer, external). */
  EE: ppcBit(48),
  /** Problem state (user mode). */
  PR: ppcBit(49),
  /** Floating-point available. */
  FP: ppcBit(50),
  /** Machine check enabled. */
  ME: ppcBit(51),
  /** Instruction relocation (translation) on. */
  IR: ppcBit(58),
  /** Data relocation (translation) on. */
  DR: ppcBit(59),
  /** Recoverable interrupt. */
  RI: ppcBit(62),
  /** Little-endian mode. */
  LE: ppcBit(63),
});

/** LPCR bits a KVM-HV userspace may set (`kvmppc_set_lpcr`: DPFD, ILE, TC, AIL, LD). */
export const LPCR = Object.freeze({
  /** Interrupt little-endian: interrupts are taken with MSR.LE = 1. */
  ILE: ppcBit(38),
  /** Alternate interrupt location (2 bits, 39–40): 0 = vectors at 0x0. */
  AIL: ppcBit(39) | ppcBit(40),
});

/** `KVM_REG_PPC`: the architecture field of a ONE_REG id (`linux/kvm.h`). */
export const KVM_REG_PPC = 0x1000000000000000n;
/** ONE_REG size field: a 64-bit register. */
export const KVM_REG_SIZE_U64 = 0x0030000000000000n;
/** The ONE_REG id's size field (bits 52–55: log2 of the register's bytes). */
export const KVM_REG_SIZE_MASK = 0x00f0000000000000n;
/** ONE_REG size field: a 32-bit register. */
export const KVM_REG_SIZE_U32 = 0x0020000000000000n;
/** `KVM_REG_PPC_LPCR_64`: the whole 64-bit LPCR (the 32-bit `KVM_REG_PPC_LPCR` keeps the top half). */
export const KVM_REG_PPC_LPCR_64 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xb5n;

/** KVM_PPC_CONFIGURE_V3_MMU flag: radix MMU (else HPT). */
export const KVM_PPC_MMUV3_RADIX = 1n;
/** KVM_PPC_CONFIGURE_V3_MMU flag: guest translation shootdown enable (the guest may tlbie). */
export const KVM_PPC_MMUV3_GTSE = 2n;
/** Partition table entry, second doubleword: the guest uses radix (must match the host-radix bit). */
export const PATB_GR = ppcBit(0);

/** The named doublewords of powerpc `struct kvm_regs`, in struct order; `sprg0`–`sprg7` and `gpr[32]` follow. */
export const PPC_REG_NAMES = ['pc', 'cr', 'ctr', 'lr', 'xer', 'msr', 'srr0', 'srr1', 'pid'] as const;

/** One of the named registers of powerpc `struct kvm_regs`. */
export type PpcRegName = (typeof PPC_REG_NAMES)[number];

/** powerpc `struct kvm_regs` (392 bytes) as bigints. */
export type PpcRegs = Record<PpcRegName, bigint> & {
  /** SPRG0–SPRG7. */
  sprg: bigint[];
  /** General-purpose registers r0–r31. */
  gpr: bigint[];
};

/** Offset of `sprg0` in `struct kvm_regs`. */
const SPRG_OFFSET = PPC_REG_NAMES.length * 8;
/** Offset of `gpr[0]`. */
const GPR_OFFSET = SPRG_OFFSET + 8 * 8;

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Decode a powerpc `struct kvm_regs`. @throws RangeError if the buffer is shorter than 392 bytes */
export function decodePpcRegs(buf: Uint8Array, le = HOST_LITTLE_ENDIAN): PpcRegs {
  if (buf.byteLength < SIZEOF_PPC_REGS) throw new RangeError(`powerpc kvm_regs needs ${SIZEOF_PPC_REGS} bytes, got ${buf.byteLength}`);
  const v = view(buf);
  const u64 = (at: number): bigint => v.getBigUint64(at, le);
  const out = { sprg: [], gpr: [] } as unknown as PpcRegs;
  PPC_REG_NAMES.forEach((name, i) => {
    out[name] = u64(i * 8);
  });
  for (let i = 0; i < 8; i++) out.sprg.push(u64(SPRG_OFFSET + i * 8));
  for (let i = 0; i < 32; i++) out.gpr.push(u64(GPR_OFFSET + i * 8));
  return out;
}

/**
 * Encode a powerpc `struct kvm_regs`; registers not given are 0 (a `gpr` or `sprg` array may be
 * shorter than 32 / 8: the rest are 0).
 * @throws RangeError for more than 32 GPRs or 8 SPRGs
 */
export function encodePpcRegs(regs: Partial<PpcRegs>, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const gpr = regs.gpr ?? [];
  const sprg = regs.sprg ?? [];
  if (gpr.length > 32 || sprg.length > 8) throw new RangeError(`powerpc kvm_regs has 32 GPRs and 8 SPRGs, got ${gpr.length} and ${sprg.length}`);
  const buf = new Uint8Array(SIZEOF_PPC_REGS);
  const v = view(buf);
  PPC_REG_NAMES.forEach((name, i) => v.setBigUint64(i * 8, regs[name] ?? 0n, le));
  sprg.forEach((x, i) => v.setBigUint64(SPRG_OFFSET + i * 8, x, le));
  gpr.forEach((x, i) => v.setBigUint64(GPR_OFFSET + i * 8, x, le));
  return buf;
}

/** Pack a `struct kvm_ppc_mmuv3_cfg` (16 bytes): KVM_PPC_MMUV3_* flags, the partition table entry's second doubleword. */
export function packPpcMmuv3Cfg(flags: bigint, processTable: bigint, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const buf = new Uint8Array(SIZEOF_PPC_MMUV3_CFG);
  const v = view(buf);
  v.setBigUint64(0, flags, le);
  v.setBigUint64(8, processTable, le);
  return buf;
}
