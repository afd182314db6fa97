/**
 * The handful of Power ISA (v3.0, 64-bit) instructions the POWER guest harness runs, encoded by
 * small pure functions instead of hex blobs, so each word can be read and tested. Field layout
 * follows the ISA's instruction formats (IBM bit numbering: bit 0 is the most significant of the
 * 32-bit word; the primary opcode is bits 0–5, i.e. `op << 26`):
 *
 *   D-form   op | RT(5) | RA(5) | D(16)              addi (li)
 *   DS-form  op | RT(5) | RA(5) | DS(14) | XO(2)     ld
 *   X-form   op | RT(5) | RA(5) | RB(5) | XO(10) | Rc   ldbrx
 *   XFX-form op | RT(5) | spr(10, halves swapped) | XO(10) | 0   mfspr
 *   SC-form  op | 0 | LEV(7) | 1 | 0                sc
 *   I-form   op | LI(24) | AA | LK                   b
 *
 * Each function returns the instruction as an unsigned 32-bit number; `insnBytes` lays words out
 * in the guest's byte order (little-endian: the guest runs with MSR.LE set).
 */

/** Special-purpose register numbers (`asm/reg.h`) the guest's exception stubs read. */
export const SPR = Object.freeze({
  /** Data storage interrupt status. */
  DSISR: 18,
  /** Data address (the faulting address of a data storage / alignment interrupt). */
  DAR: 19,
  /** Save/restore register 0: where the interrupt happened. */
  SRR0: 26,
  /** Save/restore register 1: the MSR at the interrupt, plus interrupt-specific bits. */
  SRR1: 27,
});

function reg(r: number, what = 'register'): number {
  if (!Number.isInteger(r) || r < 0 || r > 31) throw new RangeError(`${what} r${r} is not one of r0–r31`);
  return r;
}

function signed16(v: number, what: string): number {
  if (!Number.isInteger(v) || v < -0x8000 || v > 0x7fff) throw new RangeError(`${what} ${v} does not fit in a signed 16-bit field`);
  return v & 0xffff;
}

/** `addi RT, RA, SI` (D-form, opcode 14): RT = (RA|0) + SI. With RA = 0 the base is 0, not r0. @throws RangeError */
export function addi(rt: number, ra: number, si: number): number {
  return ((14 << 26) | (reg(rt) << 21) | (reg(ra) << 16) | signed16(si, 'addi immediate')) >>> 0;
}

/** `li RT, SI` = `addi RT, 0, SI`: load a signed 16-bit immediate. @throws RangeError */
export function li(rt: number, si: number): number {
  return addi(rt, 0, si);
}

/** `ld RT, DS(RA)` (DS-form, opcode 58, XO 0): load a doubleword from (RA|0) + DS, DS a multiple of 4. @throws RangeError */
export function ld(rt: number, ds: number, ra: number): number {
  if (ds % 4 !== 0) throw new RangeError(`ld displacement ${ds} is not a multiple of 4`);
  return ((58 << 26) | (reg(rt) << 21) | (reg(ra) << 16) | signed16(ds, 'ld displacement')) >>> 0;
}

/**
 * `ldbrx RT, RA, RB` (X-form, opcode 31, XO 532): load the doubleword at (RA|0) + RB with its bytes
 * reversed. In little-endian mode that yields the big-endian value, as Linux's `in_be64` does on
 * ppc64le. @throws RangeError
 */
export function ldbrx(rt: number, ra: number, rb: number): number {
  return ((31 << 26) | (reg(rt) << 21) | (reg(ra) << 16) | (reg(rb) << 11) | (532 << 1)) >>> 0;
}

/** `mfspr RT, SPR` (XFX-form, opcode 31, XO 339); the 10-bit SPR number is encoded with its 5-bit halves swapped. @throws RangeError */
export function mfspr(rt: number, spr: number): number {
  if (!Number.isInteger(spr) || spr < 0 || spr > 1023) throw new RangeError(`SPR ${spr} is outside 0..1023`);
  const swapped = ((spr & 0x1f) << 5) | (spr >> 5);
  return ((31 << 26) | (reg(rt) << 21) | (swapped << 11) | (339 << 1)) >>> 0;
}

/** `sc LEV` (SC-form, opcode 17): system call; `sc 1` is a hypercall (to KVM, then to userspace as KVM_EXIT_PAPR_HCALL). @throws RangeError */
export function sc(lev: 0 | 1): number {
  if (lev !== 0 && lev !== 1) throw new RangeError(`sc level ${String(lev)} is not 0 or 1`);
  return ((17 << 26) | (lev << 5) | 2) >>> 0;
}

/** `b target` relative (I-form, opcode 18, AA = LK = 0): `offset` bytes from this instruction, a multiple of 4 within ±32 MiB. @throws RangeError */
export function b(offset: number): number {
  if (!Number.isInteger(offset) || offset % 4 !== 0 || offset < -0x2000000 || offset > 0x1fffffc) {
    throw new RangeError(`branch offset ${offset} is not a multiple of 4 within ±32 MiB`);
  }
  return ((18 << 26) | (offset & 0x3fffffc)) >>> 0;
}

/** `nop` = `ori 0, 0, 0`. */
export const NOP = 0x60000000;

/** Instruction words as the bytes a little-endian guest fetches (each word stored little-endian). */
export function insnBytes(words: readonly number[]): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  const v = new DataView(out.buffer);
  words.forEach((w, i) => v.setUint32(i * 4, w >>> 0, true));
  return out;
}
