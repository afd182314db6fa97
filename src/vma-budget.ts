/**
 * The process's VMA budget. The kernel refuses a mapping that would take a process past
 * `vm.max_map_count` VMAs with ENOMEM — the same errno as running out of memory, and only after
 * the fact. A change that splits VMAs (an attach into the middle of an IPI gap, a detach from the
 * middle of a run) adds at most two, so the controller asks `ensure(2)` first and gets a clear
 * `E_VMA_BUDGET` instead.
 *
 * Counting VMAs means reading /proc/self/maps, which the hot path must not do (invariant 4). So the
 * budget reads it once, then spends the headroom it found without looking again, and re-reads only
 * when the headroom left is within a safety margin: far from the limit that is once every tens of
 * thousands of changes; near it, every change pays for a precise count. Changes that remove VMAs
 * are not credited, so the estimate only errs towards reading again.
 */
import { readFileSync } from 'node:fs';
import { RemapError } from './errors.js';
import type { NativeLayer } from './native/types.js';

/** Headroom below which the budget re-reads /proc/self/maps rather than trusting its estimate. */
const MARGIN = 64;

/** The system's vm.max_map_count (65530 by default), or undefined where /proc/sys cannot be read. */
export function systemMaxMapCount(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/vm/max_map_count', 'latin1').trim());
  } catch {
    return undefined;
  }
}

/** Tracks how many more VMAs the process may create before the limit. */
export class VmaBudget {
  #headroom = -1; // unknown until the first read
  /** How many times /proc/self/maps was read (for tests and stats). */
  reads = 0;

  constructor(
    private readonly native: NativeLayer,
    /** The most VMAs the process may have (vm.max_map_count unless the caller sets a lower one). */
    readonly limit: number,
  ) {}

  /** Count the process's VMAs now and reset the headroom. */
  refresh(): number {
    this.reads++;
    this.#headroom = this.limit - this.native.readMaps().length;
    return this.#headroom;
  }

  /**
   * Make sure `extra` more VMAs fit, and spend them from the headroom.
   * @throws RemapError E_VMA_BUDGET if they do not (nothing has been changed)
   */
  ensure(extra: number, op: string): void {
    if (this.#headroom - extra < MARGIN && this.refresh() < extra) {
      throw new RemapError(
        'E_VMA_BUDGET',
        `${op}: would need up to ${extra} more VMAs, but the process has ${this.limit - this.#headroom} of at most ${this.limit} (vm.max_map_count); detach something or raise the limit`,
      );
    }
    this.#headroom -= extra;
  }

  /** Whether the process is (nearly) out of VMAs now: used to name an ENOMEM from mmap. */
  exhausted(extra = 2): boolean {
    return this.refresh() < extra;
  }
}
