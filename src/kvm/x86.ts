/**
 * x86_64 vCPU state as KVM exchanges it: `struct kvm_regs` (KVM_GET/SET_REGS), `struct kvm_sregs`
 * (KVM_GET/SET_SREGS) and `struct kvm_cpuid2` (KVM_GET_SUPPORTED_CPUID → KVM_SET_CPUID2). Pure
 * codecs between those byte layouts (arch/x86/include/uapi/asm/kvm.h, little-endian) and plain
 * objects; the vCPU wrapper does the ioctls. Only the x86 guest harness needs this file.
 */
import { SIZEOF_X86_CPUID2, SIZEOF_X86_CPUID_ENTRY2, SIZEOF_X86_REGS, SIZEOF_X86_SREGS } from './ioctls.js';

/** The general registers of `struct kvm_regs`, in their order in the struct. */
export const X86_REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const;

/** One of the registers of `struct kvm_regs`. */
export type X86RegName = (typeof X86_REG_NAMES)[number];

/** `struct kvm_regs` as an object of bigints. */
export type X86Regs = Record<X86RegName, bigint>;

/** Decode a `struct kvm_regs` (144 bytes). @throws RangeError if the buffer is too short */
export function decodeX86Regs(buf: Uint8Array): X86Regs {
  if (buf.byteLength < SIZEOF_X86_REGS) throw new RangeError(`kvm_regs needs ${SIZEOF_X86_REGS} bytes, got ${buf.byteLength}`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = {} as X86Regs;
  X86_REG_NAMES.forEach((name, i) => {
    out[name] = v.getBigUint64(i * 8, true);
  });
  return out;
}

/** Encode a `struct kvm_regs`; registers not given are 0. */
export function encodeX86Regs(regs: Partial<X86Regs>): Uint8Array {
  const buf = new Uint8Array(SIZEOF_X86_REGS);
  const v = new DataView(buf.buffer);
  X86_REG_NAMES.forEach((name, i) => v.setBigUint64(i * 8, regs[name] ?? 0n, true));
  return buf;
}

/** `struct kvm_segment` (24 bytes): a segment register with its hidden descriptor part. */
export interface X86Segment {
  /** Linear base address. */
  base: bigint;
  /** Limit in bytes (the expanded 32-bit value, whatever `g` says). */
  limit: number;
  /** Selector (index << 3 | TI << 2 | RPL). */
  selector: number;
  /** Descriptor type (e.g. 0xb: execute/read code, accessed; 0x3: read/write data, accessed; 0xb with s=0: busy 64-bit TSS). */
  type: number;
  /** 1 when the segment is present. */
  present: number;
  /** Descriptor privilege level; SS.DPL is the CPL. */
  dpl: number;
  /** Default operand size (must be 0 for a 64-bit code segment). */
  db: number;
  /** 1 for code/data, 0 for system segments (TSS, LDT). */
  s: number;
  /** 64-bit code segment. */
  l: number;
  /** Granularity: limit counts 4 KiB units. */
  g: number;
  /** Available to software. */
  avl: number;
  /** 1 marks a null/unusable segment (VMX's "unusable" bit). */
  unusable: number;
}

/** `struct kvm_dtable` (16 bytes): GDTR or IDTR. */
export interface X86Dtable {
  /** Linear base address of the table. */
  base: bigint;
  /** Bytes of the table minus one. */
  limit: number;
}

/** `struct kvm_sregs` (312 bytes) as an object; `interruptBitmap` is kept as its 32 raw bytes. */
export interface X86Sregs {
  /** Segment registers, with their hidden descriptor parts. */
  cs: X86Segment;
  ds: X86Segment;
  es: X86Segment;
  fs: X86Segment;
  gs: X86Segment;
  ss: X86Segment;
  tr: X86Segment;
  ldt: X86Segment;
  /** Descriptor table registers. */
  gdt: X86Dtable;
  idt: X86Dtable;
  /** Control registers, EFER and the local APIC base MSR. */
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** Pending external interrupts (256 bits), kept as raw bytes. */
  interruptBitmap: Uint8Array;
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const SEG_SIZE = 24;
const GDT_AT = 0xc0;
const IDT_AT = 0xd0;
const CR0_AT = 0xe0;
const BITMAP_AT = 0x118;

function getSegment(v: DataView, at: number): X86Segment {
  return {
    base: v.getBigUint64(at, true),
    limit: v.getUint32(at + 8, true),
    selector: v.getUint16(at + 12, true),
    type: v.getUint8(at + 14),
    present: v.getUint8(at + 15),
    dpl: v.getUint8(at + 16),
    db: v.getUint8(at + 17),
    s: v.getUint8(at + 18),
    l: v.getUint8(at + 19),
    g: v.getUint8(at + 20),
    avl: v.getUint8(at + 21),
    unusable: v.getUint8(at + 22),
  };
}

function setSegment(v: DataView, at: number, s: X86Segment): void {
  v.setBigUint64(at, s.base, true);
  v.setUint32(at + 8, s.limit >>> 0, true);
  v.setUint16(at + 12, s.selector, true);
  [s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable, 0].forEach((b, i) => v.setUint8(at + 14 + i, b));
}

/** Decode a `struct kvm_sregs` (312 bytes). @throws RangeError if the buffer is too short */
export function decodeX86Sregs(buf: Uint8Array): X86Sregs {
  if (buf.byteLength < SIZEOF_X86_SREGS) throw new RangeError(`kvm_sregs needs ${SIZEOF_X86_SREGS} bytes, got ${buf.byteLength}`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const seg = Object.fromEntries(SEGMENTS.map((name, i) => [name, getSegment(v, i * SEG_SIZE)])) as Record<(typeof SEGMENTS)[number], X86Segment>;
  const ctl = Object.fromEntries(CONTROL.map((name, i) => [name, v.getBigUint64(CR0_AT + i * 8, true)])) as Record<(typeof CONTROL)[number], bigint>;
  return {
    ...seg,
    gdt: { base: v.getBigUint64(GDT_AT, true), limit: v.getUint16(GDT_AT + 8, true) },
    idt: { base: v.getBigUint64(IDT_AT, true), limit: v.getUint16(IDT_AT + 8, true) },
    ...ctl,
    interruptBitmap: buf.slice(BITMAP_AT, BITMAP_AT + 32),
  };
}

/** Encode a `struct kvm_sregs`. */
export function encodeX86Sregs(s: X86Sregs): Uint8Array {
  const buf = new Uint8Array(SIZEOF_X86_SREGS);
  const v = new DataView(buf.buffer);
  SEGMENTS.forEach((name, i) => setSegment(v, i * SEG_SIZE, s[name]));
  v.setBigUint64(GDT_AT, s.gdt.base, true);
  v.setUint16(GDT_AT + 8, s.gdt.limit, true);
  v.setBigUint64(IDT_AT, s.idt.base, true);
  v.setUint16(IDT_AT + 8, s.idt.limit, true);
  CONTROL.forEach((name, i) => v.setBigUint64(CR0_AT + i * 8, s[name], true));
  buf.set(s.interruptBitmap.subarray(0, 32), BITMAP_AT);
  return buf;
}

/** A `struct kvm_cpuid2` with room for `maxEntries` entries (nent = maxEntries), for KVM_GET_SUPPORTED_CPUID. */
export function allocCpuid2(maxEntries: number): Uint8Array {
  const buf = new Uint8Array(SIZEOF_X86_CPUID2 + maxEntries * SIZEOF_X86_CPUID_ENTRY2);
  new DataView(buf.buffer).setUint32(0, maxEntries, true);
  return buf;
}

/** One `struct kvm_cpuid_entry2`. */
export interface X86CpuidEntry {
  /** The leaf (EAX input). */
  function: number;
  /** The subleaf (ECX input), when `flags` says it matters. */
  index: number;
  /** KVM_CPUID_FLAG_* bits. */
  flags: number;
  /** Output registers. */
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** The entries of a `struct kvm_cpuid2` (as many as its `nent` says). */
export function decodeCpuid2(buf: Uint8Array): X86CpuidEntry[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = v.getUint32(0, true);
  const out: X86CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = SIZEOF_X86_CPUID2 + i * SIZEOF_X86_CPUID_ENTRY2;
    if (at + SIZEOF_X86_CPUID_ENTRY2 > buf.byteLength) break;
    const w = (k: number): number => v.getUint32(at + k * 4, true);
    out.push({ function: w(0), index: w(1), flags: w(2), eax: w(3), ebx: w(4), ecx: w(5), edx: w(6) });
  }
  return out;
}

/** The byte length of a `struct kvm_cpuid2` as the kernel filled it in (header + nent entries). */
export function cpuid2Length(buf: Uint8Array): number {
  return SIZEOF_X86_CPUID2 + new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(0, true) * SIZEOF_X86_CPUID_ENTRY2;
}
