/**
 * The run table: which guest interrupts are overlaid by passthrough pages, as a sorted list of
 * disjoint runs (vm-memory's `GuestRegionCollection` is the model, but changed in place: see below). Pure arithmetic:
 * no system call, no knowledge of where a run's pages come from — a run carries an opaque `source`
 * of type `S`, and the one operation that must derive new sources (`cut`, which keeps the pieces of
 * a run on either side of a detached range) is handed a function that makes them.
 *
 * Data flow: the controller validates a change, asks the table for what it needs (`firstOverlap`,
 * `hitIndex`, `gapAround`, `vmas`: queries, nothing changes), makes its one mmap, and only once
 * that succeeded applies the change (`insert` or `cut`). So a failed mmap leaves the table as the
 * truth to restore from, exactly as an immutable snapshot would, without copying the table on
 * every change (the attach/detach hot path: ~25% of its time went to those copies with 64 runs).
 * The table has one owner (the controller keeps it private and hands out copies only), so
 * "changed in place after the mmap" is, from the outside, the same as "a new snapshot committed".
 *
 * Invariant (checked by `RunTable.from`, kept by `insert` and `cut`): every run has a positive
 * integer count, lies inside [0, nrIrqs), and runs are sorted by `first` and do not overlap.
 * Memory is O(runs), never O(nrIrqs) (ARCHITECTURE invariant 8).
 *
 * `StaleBoundaries` is the second half of the region's VMA picture on devices the kernel never
 * merges (real ESB mappings are VM_IO|VM_PFNMAP): VMA boundaries inside IPI gaps, left where a
 * detach restored only the interrupt's own pages. The region then has exactly
 * `table.vmas() + stale.size` VMAs; the controller keeps `stale.size ≤ K` (invariant 5, amortized).
 */

/** Consecutive guest interrupts backed by consecutive interrupts of one source. */
export interface Run<S> {
  /** First guest interrupt. */
  readonly first: number;
  /** Number of interrupts (≥ 1). */
  readonly count: number;
  /** Where the pages come from (a `PageSource` in the controller). */
  readonly source: S;
}

/** What backs one guest interrupt's ESB pages. */
export type Backing =
  | { readonly kind: 'ipi' }
  | {
      readonly kind: 'passthrough';
      /** The source's name for this interrupt, e.g. `pt1:3` (device pt1, host interrupt 3). */
      readonly source: string;
      /** File offset of this interrupt's first page in the source. */
      readonly sourceOffset: bigint;
      /** The attached run this interrupt belongs to. */
      readonly run: { readonly first: number; readonly count: number };
    };

/** One contiguous run of passthrough interrupts, as `runs()` lists them. */
export interface RunInfo {
  /** First guest interrupt. */
  readonly first: number;
  /** Number of interrupts. */
  readonly count: number;
  /** Source name of the first interrupt (e.g. `pt1:16`). */
  readonly source: string;
  /** Source name without the interrupt index (e.g. `pt1`). */
  readonly device: string;
}

/** One past the last interrupt of a run. */
export const runEnd = (r: { readonly first: number; readonly count: number }): number => r.first + r.count;

/** A mutable, sorted table of disjoint runs over [0, nrIrqs), with one owner (see above). */
export class RunTable<S> {
  /**
   * The runs in [0, #n); slots past #n are spare capacity (undefined): the array never shrinks, so
   * a region that goes from one run to none and back allocates nothing.
   */
  readonly #runs: (Run<S> | undefined)[];
  #n: number;
  /** Number of guest interrupts the table covers. */
  readonly nrIrqs: number;

  private constructor(runs: Run<S>[], nrIrqs: number) {
    this.#runs = runs;
    this.#n = runs.length;
    this.nrIrqs = nrIrqs;
  }

  /** The table with no run. */
  static empty<S>(nrIrqs: number): RunTable<S> {
    if (!Number.isInteger(nrIrqs) || nrIrqs < 1) throw new RangeError(`RunTable: nrIrqs ${nrIrqs} is not a positive integer`);
    return new RunTable<S>([], nrIrqs);
  }

  /**
   * A table of a copy of `runs`, checked: positive integer counts, inside [0, nrIrqs), sorted, disjoint.
   * @throws RangeError naming the first run that breaks the invariant (a library bug, not bad input)
   */
  static from<S>(runs: readonly Run<S>[], nrIrqs: number): RunTable<S> {
    let pos = 0;
    for (const [i, r] of runs.entries()) {
      if (!Number.isInteger(r.first) || !Number.isInteger(r.count) || r.count < 1 || r.first < pos || runEnd(r) > nrIrqs) {
        throw new RangeError(`RunTable: run ${i} [${r.first}, ${runEnd(r)}) is empty, out of [0, ${nrIrqs}), unsorted or overlaps the one before (which ends at ${pos})`);
      }
      pos = runEnd(r);
    }
    return new RunTable([...runs], nrIrqs);
  }

  /** The runs, sorted by `first`, disjoint (a copy: O(runs), not for the hot path). */
  get runs(): Run<S>[] {
    return this.#runs.slice(0, this.#n) as Run<S>[];
  }

  /** A frozen copy of the runs. */
  snapshot(): readonly Run<S>[] {
    return Object.freeze(this.runs);
  }

  /** Run `k` (0 ≤ k < length), in interrupt order. */
  get(k: number): Run<S> {
    return this.#runs[k] as Run<S>;
  }

  /** Number of runs. */
  get length(): number {
    return this.#n;
  }

  /** Index of the first run whose first interrupt is ≥ irq (binary search; insert's index for a run starting at irq). */
  lowerBound(irq: number): number {
    const runs = this.#runs;
    let lo = 0;
    let hi = this.#n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((runs[mid] as Run<S>).first < irq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the first run that ends after `irq` (the first that can overlap a range starting at `irq`). */
  hitIndex(irq: number): number {
    const i = this.lowerBound(irq);
    return i > 0 && runEnd(this.#runs[i - 1] as Run<S>) > irq ? i - 1 : i;
  }

  /** The run that holds `irq`, if any. */
  at(irq: number): Run<S> | undefined {
    const run = this.#runs[this.lowerBound(irq + 1) - 1];
    return run && runEnd(run) > irq ? run : undefined;
  }

  /** The first run overlapping [first, last), if any (no allocation: the attach path's check). */
  firstOverlap(first: number, last: number): Run<S> | undefined {
    const i = this.hitIndex(first);
    const at = i < this.#n ? this.#runs[i] : undefined;
    return at && at.first < last ? at : undefined;
  }

  /** The runs overlapping [first, last), in order (a new array: runs `hitIndex(first)` to `lowerBound(last)`). */
  overlapping(first: number, last: number): Run<S>[] {
    return this.#runs.slice(this.hitIndex(first), this.lowerBound(last)) as Run<S>[];
  }

  /** The IPI gap containing [first, last), which must hold no run: [end of the run before, first of the run after). */
  gapAround(first: number, last: number): [number, number] {
    return [this.gapStart(last), this.gapEnd(last)];
  }

  /** Start of the IPI gap that holds interrupt `irq - 1` … `irq` (end of the last run that starts before `irq`, or 0). */
  gapStart(irq: number): number {
    const before = this.#runs[this.lowerBound(irq) - 1];
    return before ? runEnd(before) : 0;
  }

  /** End of the IPI gap that reaches `irq` (first of the first run that starts at or after `irq`, or nrIrqs). */
  gapEnd(irq: number): number {
    const i = this.lowerBound(irq);
    return i < this.#n ? (this.#runs[i] as Run<S>).first : this.nrIrqs;
  }

  /** Whether some run starts or ends at `irq` (a VMA boundary the table needs there). */
  isEdge(irq: number): boolean {
    const i = this.lowerBound(irq);
    const at = i < this.#n ? this.#runs[i] : undefined;
    if (at && at.first === irq) return true;
    const before = this.#runs[i - 1];
    return before !== undefined && runEnd(before) === irq;
  }

  /**
   * VMAs the table implies: one per run and one per IPI gap (gaps kept whole). Exact where the
   * kernel never merges and no stale boundary is left (see `StaleBoundaries`); an upper bound
   * where it merges adjacent runs of one file. O(runs).
   */
  vmas(): number {
    let vmas = 0;
    let pos = 0;
    for (let k = 0; k < this.#n; k++) {
      const r = this.#runs[k] as Run<S>;
      if (r.first > pos) vmas++;
      vmas++;
      pos = runEnd(r);
    }
    return pos < this.nrIrqs ? vmas + 1 : vmas;
  }

  /** How many VMAs attaching [first, last) would add: one for each side of its IPI gap it leaves. */
  attachVmas(first: number, last: number): number {
    return Number(first > this.gapStart(last)) + Number(last < this.gapEnd(last));
  }

  /**
   * Add `run`, in place (after its mmap succeeded). O(runs) moves, no allocation beyond the
   * array's growth; the invariant is checked against its two neighbours only (the rest is unchanged).
   * @throws RangeError if it overlaps a run or leaves [0, nrIrqs) (the caller checks first); the table is then unchanged
   */
  insert(run: Run<S>, i = this.lowerBound(run.first)): void {
    const runs = this.#runs;
    const n = this.#n;
    const before = runs[i - 1];
    const after = i < n ? runs[i] : undefined;
    if (!Number.isInteger(run.count) || run.count < 1 || run.first < (before ? runEnd(before) : 0) || runEnd(run) > (after ? after.first : this.nrIrqs)) {
      throw new RangeError(`RunTable.insert: [${run.first}, ${runEnd(run)}) overlaps a run or leaves [0, ${this.nrIrqs})`);
    }
    if (n === runs.length) runs.push(undefined);
    for (let k = n; k > i; k--) runs[k] = runs[k - 1];
    runs[i] = run;
    this.#n = n + 1;
  }

  /**
   * Put [first, last) back to IPI, in place (after its mmap succeeded): the runs overlapping it are
   * removed and their pieces outside it kept, each made by `piece(run, skip, count)` (the `count`
   * interrupts of `run` from its interrupt `skip`). Every piece is made before `dropped(run)` is
   * called for any removed run (pieces may share what a removed run holds, such as an fd
   * reference). Returns how many interrupts went back to IPI (0: nothing overlapped, no change).
   * `i` and `j` (`hitIndex(first)`, `lowerBound(last)`) may be passed by a caller that has them.
   */
  cut(first: number, last: number, piece: (run: Run<S>, skip: number, count: number) => S, dropped?: (run: Run<S>) => void, i = this.hitIndex(first), j = this.lowerBound(last)): number {
    const runs = this.#runs;
    if (i >= j) return 0;
    const head = runs[i] as Run<S>;
    const tail = runs[j - 1] as Run<S>;
    const left = head.first < first ? { first: head.first, count: first - head.first, source: piece(head, 0, first - head.first) } : undefined;
    const right = runEnd(tail) > last ? { first: last, count: runEnd(tail) - last, source: piece(tail, last - tail.first, runEnd(tail) - last) } : undefined;
    let restored = 0;
    for (let k = i; k < j; k++) {
      const r = runs[k] as Run<S>;
      restored += Math.min(runEnd(r), last) - Math.max(r.first, first);
    }
    if (dropped) for (let k = i; k < j; k++) dropped(runs[k] as Run<S>);
    // Replace runs[i, j) by the kept pieces (0, 1 or 2) with one pass of moves.
    const kept = Number(left !== undefined) + Number(right !== undefined);
    const shift = kept - (j - i);
    const n = this.#n;
    if (shift < 0) {
      for (let k = j; k < n; k++) runs[k + shift] = runs[k];
      for (let k = n + shift; k < n; k++) runs[k] = undefined; // spare slots hold no run
    } else if (shift > 0) {
      while (runs.length < n + shift) runs.push(undefined);
      for (let k = n - 1; k >= j; k--) runs[k + shift] = runs[k];
    }
    this.#n = n + shift;
    let at = i;
    if (left) runs[at++] = left;
    if (right) runs[at] = right;
    return restored;
  }
}

/**
 * VMA boundaries inside IPI gaps, as positions (interrupt numbers in (0, nrIrqs) where one VMA ends
 * and the next begins, though no run starts or ends there). On a never-merging device a detach
 * that maps back only the interrupt's own pages leaves its two edges as such boundaries; an
 * attach over one, or a mapping of a whole gap, removes them. Sorted, O(size) memory and moves:
 * the controller keeps size ≤ its stated bound K.
 */
export class StaleBoundaries {
  readonly #at: number[] = [];

  /** How many there are. */
  get size(): number {
    return this.#at.length;
  }

  /** The positions, sorted (a copy). */
  list(): number[] {
    return this.#at.slice();
  }

  /** How many lie in [a, b] (both ends included). */
  countIn(a: number, b: number): number {
    return this.#index(b + 1) - this.#index(a);
  }

  /** Forget those in [a, b] (both ends included): a mapping of [a, b) replaced them, or a run edge now sits there. */
  removeIn(a: number, b: number): void {
    const i = this.#index(a);
    const j = this.#index(b + 1);
    if (j > i) this.#at.splice(i, j - i);
  }

  /** Record a boundary at `p` (nothing if one is there already). */
  add(p: number): void {
    const i = this.#index(p);
    if (this.#at[i] !== p) this.#at.splice(i, 0, p);
  }

  /** Forget all. */
  clear(): void {
    this.#at.length = 0;
  }

  /** Index of the first position ≥ p. */
  #index(p: number): number {
    const at = this.#at;
    let lo = 0;
    let hi = at.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((at[mid] as number) < p) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
