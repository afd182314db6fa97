/**
 * The process's VMA budget. The kernel refuses a mapping that would take a process past
 * `vm.max_map_count` VMAs with ENOMEM — the same errno as running out of memory, and only after
 * the fact. A change adds at most two VMAs (an attach into the middle of an IPI gap, a detach from
 * the middle of a run), so the controller asks `ensure` first and gets a clear `E_VMA_BUDGET`.
 *
 * Counting VMAs means reading /proc/self/maps, which the hot path must not do (invariant 4). So the
 * budget splits the count in two: the region's own VMAs, which the controller knows from its run
 * table at no cost, and everyone else's, read from /proc when the region is opened. A change only
 * re-reads /proc when that estimate comes within a safety margin of the limit: far from it, never;
 * near it, every change pays for a precise count. Detaches that merge VMAs are credited at once,
 * since the region's count comes from the table.
 */
import { readFileSync } from 'node:fs';
import { RemapError } from './errors.js';
import type { NativeLayer } from './native/types.js';

/** Headroom below which the budget re-reads /proc/self/maps rather than trusting its estimate. */
const MARGIN = 64;

/** The system's vm.max_map_count (65530 by default), or undefined where /proc/sys cannot be read or makes no sense. */
export function systemMaxMapCount(): number | undefined {
  try {
    const n = Number(readFileSync('/proc/sys/vm/max_map_count', 'latin1').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Tracks how many more VMAs the process may create before the limit. */
export class VmaBudget {
  /** VMAs of the process outside the region, at the last read of /proc/self/maps. */
  #others = 0;

  constructor(
    private readonly native: NativeLayer,
    /** The most VMAs the process may have (vm.max_map_count unless the caller sets a lower one). */
    readonly limit: number,
    private readonly start: bigint,
    private readonly end: bigint,
    /** Where `limit` came from, for messages: `the vmaLimit option`, `vm.max_map_count`, … */
    readonly limitSource = 'vm.max_map_count',
  ) {
    this.refresh();
  }

  /** Count the VMAs outside the region now. Returns the process's total. @throws RemapError E_VMA_BUDGET if /proc/self/maps cannot be read */
  refresh(): number {
    let maps;
    try {
      maps = this.native.readMaps();
    } catch (e) {
      throw new RemapError('E_VMA_BUDGET', `counting the process's VMAs: reading /proc/self/maps failed`, { cause: e });
    }
    this.#others = maps.filter((m) => m.end <= this.start || m.start >= this.end).length;
    return maps.length;
  }

  /**
   * Make sure a change to a region of `runs` passthrough runs fits. The fast path uses bounds only
   * (the region has at most 2 × runs + 1 + `slack` VMAs, invariant 5; a change adds at most 2): O(1), no
   * system call. Near the limit it asks `exact()` for the region's VMAs now and the VMAs this change
   * adds, and re-reads /proc only if the change adds any: a change that adds no VMA (a detach that
   * cuts no run in two, an attach that fills a gap exactly) is never refused, even over the limit,
   * so a VMM over its budget can still hot-unplug.
   * @throws RemapError E_VMA_BUDGET if it does not fit (nothing has been changed)
   */
  ensure(op: string, runs: number, exact: () => { own: number; extra: number }, slack = 0): void {
    if (this.roomy(2 * runs + 1 + slack)) return;
    const { own, extra } = exact();
    if (extra === 0) return;
    this.refresh();
    if (this.#others + own + extra > this.limit) {
      throw new RemapError(
        'E_VMA_BUDGET',
        `${op}: would need up to ${extra} more VMAs, but the process has ${this.#others + own} of at most ${this.limit} (${this.limitSource}); detach something or raise the limit`,
      );
    }
  }

  /** The largest `regionBound` for which `roomy` holds until the next `refresh` (the controller keeps a copy: its hot path then reads no budget object). */
  get roomyUpTo(): number {
    return this.limit - this.#others - 2 - MARGIN;
  }

  /** The fast path of `ensure`: whether a region of at most `regionBound` VMAs can take any change without counting. */
  roomy(regionBound: number): boolean {
    return this.limit - this.#others - regionBound - 2 >= MARGIN;
  }

  /** Whether the process is (nearly) out of VMAs now: used to name an ENOMEM from mmap (false if it cannot tell). */
  exhausted(extra = 2): boolean {
    try {
      return this.refresh() + extra > this.limit;
    } catch {
      return false;
    }
  }
}
