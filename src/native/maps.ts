/**
 * /proc/PID/maps parsing (pure) and the owned-range registry that guards MAP_FIXED (invariant 2).
 * No koffi here: these are arithmetic on strings and bigints, shared by every native layer.
 */
import { RemapError } from '../errors.js';
import type { MapsEntry } from './types.js';

const line = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/;

/** Parse the text of /proc/PID/maps into entries. Lines that do not parse are skipped. */
export function parseMaps(text: string): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m) continue;
    out.push({
      start: BigInt(`0x${m[1]}`),
      end: BigInt(`0x${m[2]}`),
      perms: m[3] as string,
      offset: BigInt(`0x${m[4]}`),
      dev: m[5] as string,
      inode: BigInt(m[6] as string),
      path: m[7] ?? '',
    });
  }
  return out;
}

/** The entries overlapping [start, end). */
export function mapsIn(entries: readonly MapsEntry[], start: bigint, end: bigint): MapsEntry[] {
  return entries.filter((e) => e.end > start && e.start < end);
}

/** Ranges the library owns; a MAP_FIXED anywhere else is refused before it reaches the kernel. */
export class OwnedRanges {
  readonly #ranges = new Map<bigint, bigint>(); // start -> end
  /** The same ranges as Numbers, for `coversNumber` (ranges that end past 2^53 are left out: the bigint check covers them). */
  #numbers: number[] = [];

  /** Record [addr, addr+length) as owned. @throws RemapError E_NOT_OWNED if it overlaps one already owned */
  claim(addr: bigint, length: bigint): void {
    const end = addr + length;
    for (const [s, e] of this.#ranges) {
      if (addr < e && s < end) {
        throw new RemapError('E_NOT_OWNED', `claiming 0x${addr.toString(16)}+0x${length.toString(16)}: overlaps owned range 0x${s.toString(16)}-0x${e.toString(16)}`);
      }
    }
    this.#ranges.set(addr, end);
    this.#mirror();
  }

  #mirror(): void {
    this.#numbers = [];
    for (const [s, e] of this.#ranges) if (e <= BigInt(Number.MAX_SAFE_INTEGER)) this.#numbers.push(Number(s), Number(e));
  }

  /** Forget a range claimed with exactly these bounds (a no-op if it is not owned). */
  release(addr: bigint, length: bigint): void {
    if (this.#ranges.get(addr) === addr + length) {
      this.#ranges.delete(addr);
      this.#mirror();
    }
  }

  /** `covers` for Numbers (the hot path's check: no BigInt made); false where it cannot tell, so ask `check`. */
  coversNumber(addr: number, length: number): boolean {
    // Integers only: koffi truncates a fraction, so a covered 0x1000.5 would reach the kernel as 0x1000
    // (and then the caller's `r !== addr` would report a mapping that was made as failed).
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length)) return false;
    const r = this.#numbers;
    for (let k = 0; k < r.length; k += 2) if (addr >= (r[k] as number) && addr + length <= (r[k + 1] as number)) return length > 0;
    return false;
  }

  /** Whether [addr, addr+length) lies inside one owned range. */
  covers(addr: bigint, length: bigint): boolean {
    for (const [s, e] of this.#ranges) if (addr >= s && addr + length <= e) return true;
    return false;
  }

  /** @throws RemapError E_NOT_OWNED unless [addr, addr+length) lies inside one owned range (invariant 2) */
  check(addr: bigint, length: bigint): void {
    if (length <= 0n || !this.covers(addr, length)) {
      throw new RemapError('E_NOT_OWNED', `refusing MAP_FIXED at 0x${addr.toString(16)}+0x${length.toString(16)}: not inside a region xive-remap owns`);
    }
  }
}
