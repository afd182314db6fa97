/**
 * The run table: which guest interrupts are overlaid by passthrough pages, as an immutable,
 * sorted list of disjoint runs (vm-memory's `GuestRegionCollection` is the model). Pure arithmetic:
 * no system call, no knowledge of where a run's pages come from — a run carries an opaque `source`
 * of type `S`, and the one operation that must derive new sources (`cut`, which keeps the pieces of
 * a run on either side of a detached range) is handed a function that makes them.
 *
 * Data flow: the controller validates a change, asks the current table for what it needs
 * (`firstOverlap`, `overlapping`, `gapAround`, `vmas`), builds the next table (`insert` or `cut`),
 * makes its one mmap, and only then commits the new table. A table is never changed in place, so a
 * failed mmap leaves the old one as the truth to restore from.
 *
 * Invariant (checked by `RunTable.from`, kept by `insert` and `cut`): every run has a positive
 * integer count, lies inside [0, nrIrqs), and runs are sorted by `first` and do not overlap.
 * Memory is O(runs), never O(nrIrqs) (ARCHITECTURE invariant 8).
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

/** The result of `cut`: the next table, the runs it touched, and the pieces of them it kept. */
export interface Cut<S> {
  /** The table without [first, last). */
  readonly table: RunTable<S>;
  /** The runs of the old table that overlapped [first, last), in order. */
  readonly hit: readonly Run<S>[];
  /** Pieces of `hit` outside [first, last), now in `table` (at most two). */
  readonly kept: readonly Run<S>[];
  /** How many interrupts went back to IPI. */
  readonly restored: number;
}

/** An immutable, sorted table of disjoint runs over [0, nrIrqs). */
export class RunTable<S> {
  /** The runs, sorted by `first`, disjoint. Never mutated. */
  readonly runs: readonly Run<S>[];
  /** Number of guest interrupts the table covers. */
  readonly nrIrqs: number;

  private constructor(runs: readonly Run<S>[], nrIrqs: number) {
    this.runs = runs;
    this.nrIrqs = nrIrqs;
  }

  /** The table with no run. */
  static empty<S>(nrIrqs: number): RunTable<S> {
    if (!Number.isInteger(nrIrqs) || nrIrqs < 1) throw new RangeError(`RunTable: nrIrqs ${nrIrqs} is not a positive integer`);
    return new RunTable<S>([], nrIrqs);
  }

  /**
   * A table of `runs`, checked: positive integer counts, inside [0, nrIrqs), sorted, disjoint.
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
    return new RunTable(Object.freeze([...runs]), nrIrqs);
  }

  /** Number of runs. */
  get length(): number {
    return this.runs.length;
  }

  /** Index of the first run whose first interrupt is ≥ irq (binary search). */
  lowerBound(irq: number): number {
    const runs = this.runs;
    let lo = 0;
    let hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((runs[mid] as Run<S>).first < irq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The run that holds `irq`, if any. */
  at(irq: number): Run<S> | undefined {
    const run = this.runs[this.lowerBound(irq + 1) - 1];
    return run && runEnd(run) > irq ? run : undefined;
  }

  /** The first run overlapping [first, last), if any (no allocation: the attach path's check). */
  firstOverlap(first: number, last: number): Run<S> | undefined {
    const i = this.lowerBound(first);
    const before = this.runs[i - 1];
    if (before && runEnd(before) > first) return before;
    const at = this.runs[i];
    return at && at.first < last ? at : undefined;
  }

  /** The runs overlapping [first, last), in order. */
  overlapping(first: number, last: number): Run<S>[] {
    const runs = this.runs;
    let i = this.lowerBound(first);
    if (i > 0 && runEnd(runs[i - 1] as Run<S>) > first) i--;
    const out: Run<S>[] = [];
    for (; i < runs.length && (runs[i] as Run<S>).first < last; i++) out.push(runs[i] as Run<S>);
    return out;
  }

  /** The IPI gap containing [first, last), which must hold no run: [end of the run before, first of the run after). */
  gapAround(first: number, last: number): [number, number] {
    const i = this.lowerBound(last);
    const before = this.runs[i - 1];
    return [before ? runEnd(before) : 0, this.runs[i]?.first ?? this.nrIrqs];
  }

  /**
   * VMAs the table implies: one per run and one per IPI gap (a detach remaps or merges a whole
   * gap). Exact where the kernel never merges; an upper bound where it merges adjacent runs of
   * one file. O(runs).
   */
  vmas(): number {
    let vmas = 0;
    let pos = 0;
    for (const r of this.runs) {
      if (r.first > pos) vmas++;
      vmas++;
      pos = runEnd(r);
    }
    return pos < this.nrIrqs ? vmas + 1 : vmas;
  }

  /** How many VMAs attaching [first, last) would add: one for each side of its IPI gap it leaves. */
  attachVmas(first: number, last: number): number {
    const [g0, g1] = this.gapAround(first, last);
    return Number(first > g0) + Number(last < g1);
  }

  /**
   * The table with `run` added. O(runs) for the copy; the invariant is checked against its two
   * neighbours only (the rest is unchanged).
   * @throws RangeError if it overlaps a run or leaves [0, nrIrqs) (the caller checks first)
   */
  insert(run: Run<S>): RunTable<S> {
    const i = this.lowerBound(run.first);
    const before = this.runs[i - 1];
    const after = this.runs[i];
    if (!Number.isInteger(run.count) || run.count < 1 || run.first < (before ? runEnd(before) : 0) || runEnd(run) > (after ? after.first : this.nrIrqs)) {
      throw new RangeError(`RunTable.insert: [${run.first}, ${runEnd(run)}) overlaps a run or leaves [0, ${this.nrIrqs})`);
    }
    const next = this.runs.slice();
    next.splice(i, 0, run);
    return new RunTable(next, this.nrIrqs);
  }

  /**
   * The table with [first, last) back to IPI: the runs overlapping it are removed and their pieces
   * outside it kept, each made by `piece(run, skip, count)` (the `count` interrupts of `run` from
   * its interrupt `skip`). Returns null when nothing overlaps (no change).
   */
  cut(first: number, last: number, piece: (run: Run<S>, skip: number, count: number) => S): Cut<S> | null {
    const hit = this.overlapping(first, last);
    if (hit.length === 0) return null;
    const kept: Run<S>[] = [];
    let restored = 0;
    for (const r of hit) {
      if (r.first < first) kept.push({ first: r.first, count: first - r.first, source: piece(r, 0, first - r.first) });
      if (runEnd(r) > last) kept.push({ first: last, count: runEnd(r) - last, source: piece(r, last - r.first, runEnd(r) - last) });
      restored += Math.min(runEnd(r), last) - Math.max(r.first, first);
    }
    const i = this.runs.indexOf(hit[0] as Run<S>);
    const next = [...this.runs.slice(0, i), ...kept, ...this.runs.slice(i + hit.length)];
    return { table: new RunTable(next, this.nrIrqs), hit, kept, restored };
  }
}
