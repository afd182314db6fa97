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

/**
 * A mutable, sorted table of disjoint runs over [0, nrIrqs), with one owner (see above). Stored as
 * columns (first and count in typed arrays, sources in an array) rather than run objects: the hot
 * path reads them with `firstAt`/`endAt`/`sourceAt` and adds with `add`, making no object, so the
 * little JavaScript that runs between a detach's and an attach's system calls touches few cache
 * lines (README, Performance: run objects alone cost ~2.5% of an attach+detach pair there).
 * `get`, `runs`, `overlapping` and `at` make `Run` objects for the cold paths.
 */
export class RunTable<S> {
  /** Columns of the runs in [0, #n); slots past #n are spare capacity (sources undefined). */
  #first: Int32Array;
  #count: Int32Array;
  readonly #src: (S | undefined)[];
  #n: number;
  /** Number of guest interrupts the table covers. */
  readonly nrIrqs: number;

  private constructor(runs: readonly Run<S>[], nrIrqs: number) {
    const cap = Math.max(8, runs.length);
    this.#first = new Int32Array(cap);
    this.#count = new Int32Array(cap);
    this.#src = new Array<S | undefined>(cap).fill(undefined);
    runs.forEach((r, k) => {
      this.#first[k] = r.first;
      this.#count[k] = r.count;
      this.#src[k] = r.source;
    });
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

  /** The runs, sorted by `first`, disjoint (new objects: O(runs), not for the hot path). */
  get runs(): Run<S>[] {
    const out: Run<S>[] = [];
    for (let k = 0; k < this.#n; k++) out.push(this.get(k));
    return out;
  }

  /** A frozen copy of the runs. */
  snapshot(): readonly Run<S>[] {
    return Object.freeze(this.runs);
  }

  /** Run `k` (0 ≤ k < length), in interrupt order, as a new object (the hot path reads the columns). */
  get(k: number): Run<S> {
    return { first: this.#first[k] as number, count: this.#count[k] as number, source: this.#src[k] as S };
  }

  /** First interrupt of run `k`. */
  firstAt(k: number): number {
    return this.#first[k] as number;
  }

  /** One past the last interrupt of run `k`. */
  endAt(k: number): number {
    return (this.#first[k] as number) + (this.#count[k] as number);
  }

  /** Source of run `k`. */
  sourceAt(k: number): S {
    return this.#src[k] as S;
  }

  /** Number of runs. */
  get length(): number {
    return this.#n;
  }

  /** Index of the first run whose first interrupt is ≥ irq (binary search; insert's index for a run starting at irq). */
  lowerBound(irq: number): number {
    const f = this.#first;
    let lo = 0;
    let hi = this.#n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((f[mid] as number) < irq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the first run that ends after `irq` (the first that can overlap a range starting at `irq`). */
  hitIndex(irq: number): number {
    const i = this.lowerBound(irq);
    return i > 0 && this.endAt(i - 1) > irq ? i - 1 : i;
  }

  /** The run that holds `irq`, if any. */
  at(irq: number): Run<S> | undefined {
    const k = this.lowerBound(irq + 1) - 1;
    return k >= 0 && this.endAt(k) > irq ? this.get(k) : undefined;
  }

  /** The first run overlapping [first, last), if any. */
  firstOverlap(first: number, last: number): Run<S> | undefined {
    const i = this.hitIndex(first);
    return i < this.#n && this.firstAt(i) < last ? this.get(i) : undefined;
  }

  /** The runs overlapping [first, last), in order (new objects: runs `hitIndex(first)` to `lowerBound(last)`). */
  overlapping(first: number, last: number): Run<S>[] {
    const out: Run<S>[] = [];
    for (let k = this.hitIndex(first), j = this.lowerBound(last); k < j; k++) out.push(this.get(k));
    return out;
  }

  /** The IPI gap containing [first, last), which must hold no run: [end of the run before, first of the run after). */
  gapAround(first: number, last: number): [number, number] {
    return [this.gapStart(last), this.gapEnd(last)];
  }

  /** Start of the IPI gap that holds interrupt `irq - 1` … `irq` (end of the last run that starts before `irq`, or 0). */
  gapStart(irq: number): number {
    const k = this.lowerBound(irq) - 1;
    return k >= 0 ? this.endAt(k) : 0;
  }

  /** End of the IPI gap that reaches `irq` (first of the first run that starts at or after `irq`, or nrIrqs). */
  gapEnd(irq: number): number {
    const i = this.lowerBound(irq);
    return i < this.#n ? this.firstAt(i) : this.nrIrqs;
  }

  /** Whether some run starts or ends at `irq` (a VMA boundary the table needs there). */
  isEdge(irq: number): boolean {
    const i = this.lowerBound(irq);
    if (i < this.#n && this.firstAt(i) === irq) return true;
    return i > 0 && this.endAt(i - 1) === irq;
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
      if (this.firstAt(k) > pos) vmas++;
      vmas++;
      pos = this.endAt(k);
    }
    return pos < this.nrIrqs ? vmas + 1 : vmas;
  }

  /** How many VMAs attaching [first, last) would add: one for each side of its IPI gap it leaves. */
  attachVmas(first: number, last: number): number {
    return Number(first > this.gapStart(last)) + Number(last < this.gapEnd(last));
  }

  /** `add(run.first, run.count, run.source, i)`. */
  insert(run: Run<S>, i = this.lowerBound(run.first)): void {
    this.add(run.first, run.count, run.source, i);
  }

  /**
   * Add the run [first, first + count) of `source`, in place (after its mmap succeeded), at index
   * `i` (`lowerBound(first)`). O(runs) moves, no object made beyond the columns' growth; the
   * invariant is checked against its two neighbours only (the rest is unchanged).
   * @throws RangeError if it overlaps a run or leaves [0, nrIrqs) (the caller checks first); the table is then unchanged
   */
  add(first: number, count: number, source: S, i = this.lowerBound(first)): void {
    const n = this.#n;
    if (!Number.isInteger(count) || count < 1 || first < (i > 0 ? this.endAt(i - 1) : 0) || first + count > (i < n ? this.firstAt(i) : this.nrIrqs)) {
      throw new RangeError(`RunTable.insert: [${first}, ${first + count}) overlaps a run or leaves [0, ${this.nrIrqs})`);
    }
    this.#room(n + 1);
    const f = this.#first;
    const c = this.#count;
    const src = this.#src;
    for (let k = n; k > i; k--) {
      f[k] = f[k - 1] as number;
      c[k] = c[k - 1] as number;
      src[k] = src[k - 1];
    }
    f[i] = first;
    c[i] = count;
    src[i] = source;
    this.#n = n + 1;
  }

  /**
   * Remove run `k` whole (after its mmap succeeded) and return its source: `cut` of exactly that
   * run, without callbacks (the single-interrupt detach's hot path).
   */
  removeAt(k: number): S {
    const n = this.#n;
    if (!Number.isInteger(k) || k < 0 || k >= n) throw new RangeError(`RunTable.removeAt: no run ${k} (${n} runs)`);
    const f = this.#first;
    const c = this.#count;
    const src = this.#src;
    const gone = src[k] as S;
    for (let m = k + 1; m < n; m++) {
      f[m - 1] = f[m] as number;
      c[m - 1] = c[m] as number;
      src[m - 1] = src[m];
    }
    src[n - 1] = undefined;
    this.#n = n - 1;
    return gone;
  }

  /** Grow the columns to hold at least `cap` runs (doubling: the columns never shrink). */
  #room(cap: number): void {
    if (cap <= this.#first.length) return;
    const size = Math.max(cap, this.#first.length * 2);
    const f = new Int32Array(size);
    const c = new Int32Array(size);
    f.set(this.#first);
    c.set(this.#count);
    this.#first = f;
    this.#count = c;
    while (this.#src.length < size) this.#src.push(undefined);
  }

  /**
   * Put [first, last) back to IPI, in place (after its mmap succeeded): the runs overlapping it are
   * removed and their pieces outside it kept, each made by `piece(run, skip, count)` (the `count`
   * interrupts of `run` from its interrupt `skip`). Every piece is made before `dropped(source)` is
   * called for any removed run's source (pieces may share what a removed run holds, such as an fd
   * reference). Returns how many interrupts went back to IPI (0: nothing overlapped, no change).
   * `i` and `j` (`hitIndex(first)`, `lowerBound(last)`) may be passed by a caller that has them.
   */
  cut(first: number, last: number, piece: (run: Run<S>, skip: number, count: number) => S, dropped?: (source: S) => void, i = this.hitIndex(first), j = this.lowerBound(last)): number {
    if (i >= j) return 0;
    const headFirst = this.firstAt(i);
    const tailEnd = this.endAt(j - 1);
    // Pieces (rare: a detach inside a run) are made first, from run objects made for them.
    const left = headFirst < first ? piece(this.get(i), 0, first - headFirst) : undefined;
    const right = tailEnd > last ? piece(this.get(j - 1), last - this.firstAt(j - 1), tailEnd - last) : undefined;
    const hasLeft = headFirst < first;
    const hasRight = tailEnd > last;
    let restored = 0;
    for (let k = i; k < j; k++) restored += Math.min(this.endAt(k), last) - Math.max(this.firstAt(k), first);
    if (dropped) for (let k = i; k < j; k++) dropped(this.#src[k] as S);
    // Replace runs[i, j) by the kept pieces (0, 1 or 2) with one pass of moves.
    const kept = Number(hasLeft) + Number(hasRight);
    const shift = kept - (j - i);
    const n = this.#n;
    if (shift < 0) {
      const fi = this.#first;
      const c = this.#count;
      const src = this.#src;
      for (let k = j; k < n; k++) {
        fi[k + shift] = fi[k] as number;
        c[k + shift] = c[k] as number;
        src[k + shift] = src[k];
      }
      for (let k = n + shift; k < n; k++) src[k] = undefined; // spare slots hold no source
    } else if (shift > 0) {
      this.#room(n + shift);
      const fi = this.#first;
      const c = this.#count;
      const src = this.#src;
      for (let k = n - 1; k >= j; k--) {
        fi[k + shift] = fi[k] as number;
        c[k + shift] = c[k] as number;
        src[k + shift] = src[k];
      }
    }
    this.#n = n + shift;
    let at = i;
    if (hasLeft) {
      this.#first[at] = headFirst;
      this.#count[at] = first - headFirst;
      this.#src[at] = left as S;
      at++;
    }
    if (hasRight) {
      this.#first[at] = last;
      this.#count[at] = tailEnd - last;
      this.#src[at] = right as S;
    }
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
