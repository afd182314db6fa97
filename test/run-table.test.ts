/**
 * The run table on its own: pure arithmetic, table-driven. A run's source here is a string naming
 * its interrupts, so `cut`'s pieces can be checked by value.
 */
import { expect } from 'chai';
import { RunTable, type Run } from '../src/run-table.js';

const NR = 64;
/** A table from [first, count] pairs; each run's source is `s<first>`. */
const table = (...runs: [number, number][]): RunTable<string> => RunTable.from(runs.map(([first, count]) => ({ first, count, source: `s${first}` })), NR);
const spans = (t: RunTable<string>): [number, number][] => t.runs.map((r) => [r.first, r.count]);

describe('RunTable', () => {
  describe('from checks the invariant', () => {
    const bad: [string, [number, number][]][] = [
      ['an empty run', [[3, 0]]],
      ['a negative start', [[-1, 2]]],
      ['a run past nrIrqs', [[60, 5]]],
      ['unsorted runs', [[10, 2], [4, 2]]],
      ['overlapping runs', [[4, 4], [7, 2]]],
      ['a fractional count', [[4, 1.5]]],
    ];
    for (const [what, runs] of bad) it(`refuses ${what}`, () => expect(() => table(...runs)).to.throw(RangeError));
    it('accepts adjacent runs and runs at both ends', () => expect(spans(table([0, 2], [2, 3], [60, 4]))).to.deep.equal([[0, 2], [2, 3], [60, 4]]));
    it('refuses a table of no interrupt', () => expect(() => RunTable.empty(0)).to.throw(RangeError));
    it('copies and freezes what it was given', () => {
      const runs: Run<string>[] = [{ first: 1, count: 1, source: 'x' }];
      const t = RunTable.from(runs, NR);
      runs.push({ first: 5, count: 1, source: 'y' });
      expect(t.length).to.equal(1);
      expect(Object.isFrozen(t.runs)).to.equal(true);
    });
  });

  describe('queries', () => {
    const t = table([4, 4], [10, 1], [20, 8]);
    const at: [number, number | undefined][] = [[0, undefined], [4, 4], [7, 4], [8, undefined], [10, 10], [11, undefined], [27, 20], [28, undefined], [63, undefined]];
    for (const [irq, first] of at) it(`at(${irq}) is the run from ${first ?? '(none)'}`, () => expect(t.at(irq)?.first).to.equal(first));

    const overlap: [number, number, number[]][] = [
      [0, 4, []],
      [0, 5, [4]],
      [7, 11, [4, 10]],
      [8, 10, []],
      [9, 30, [10, 20]],
      [0, 64, [4, 10, 20]],
      [28, 64, []],
    ];
    for (const [a, b, firsts] of overlap) {
      it(`overlapping(${a}, ${b}) and firstOverlap agree: ${firsts.join(', ') || 'none'}`, () => {
        expect(t.overlapping(a, b).map((r) => r.first)).to.deep.equal(firsts);
        expect(t.firstOverlap(a, b)?.first).to.equal(firsts[0]);
      });
    }

    const gaps: [number, number, [number, number]][] = [
      [0, 1, [0, 4]],
      [8, 9, [8, 10]],
      [11, 20, [11, 20]],
      [30, 31, [28, 64]],
    ];
    for (const [a, b, gap] of gaps) it(`gapAround(${a}, ${b}) is [${gap.join(', ')})`, () => expect(t.gapAround(a, b)).to.deep.equal(gap));

    const vmas: [RunTable<string>, number][] = [
      [RunTable.empty(NR), 1],
      [table([0, 64]), 1],
      [table([0, 4]), 2],
      [table([60, 4]), 2],
      [table([4, 4]), 3],
      [table([4, 4], [8, 4]), 4],
      [t, 7],
    ];
    for (const [x, n] of vmas) it(`vmas() of ${JSON.stringify(spans(x))} is ${n}`, () => expect(x.vmas()).to.equal(n));

    const adds: [number, number, number][] = [
      [0, 4, 0], // fills [0, 4) exactly
      [0, 2, 1],
      [1, 4, 1],
      [1, 2, 2],
      [11, 20, 0],
      [40, 41, 2],
    ];
    for (const [a, b, n] of adds) it(`attaching [${a}, ${b}) adds ${n} VMA(s)`, () => expect(t.attachVmas(a, b)).to.equal(n));
  });

  describe('insert', () => {
    it('adds a run in order and leaves the old table as it was', () => {
      const t = table([4, 4], [20, 8]);
      const u = t.insert({ first: 10, count: 2, source: 'n' });
      expect(spans(u)).to.deep.equal([[4, 4], [10, 2], [20, 8]]);
      expect(spans(t)).to.deep.equal([[4, 4], [20, 8]]);
    });
    const refused: [number, number][] = [
      [3, 2],
      [7, 1],
      [19, 2],
      [62, 4],
      [30, 0],
    ];
    for (const [first, count] of refused) it(`refuses [${first}, ${first + count})`, () => expect(() => table([4, 4], [20, 8]).insert({ first, count, source: 'n' })).to.throw(RangeError));
  });

  describe('cut', () => {
    const piece = (r: Run<string>, skip: number, count: number): string => `${r.source}+${skip}x${count}`;
    const cases: [string, [number, number], [number, number][], [number, number][], string[], number][] = [
      ['nothing overlaps', [0, 4], [], [], [], 0],
      ['a whole run', [4, 8], [[20, 8]], [], [], 4],
      ['the middle of a run', [22, 24], [[4, 4], [20, 2], [24, 4]], [[20, 2], [24, 4]], ['s20+0x2', 's20+4x4'], 2],
      ['the head of a run', [0, 6], [[6, 2], [20, 8]], [[6, 2]], ['s4+2x2'], 2],
      ['the tail of one run and the head of the next', [6, 22], [[4, 2], [22, 6]], [[4, 2], [22, 6]], ['s4+0x2', 's20+2x6'], 4],
      ['everything', [0, 64], [], [], [], 12],
    ];
    for (const [what, [a, b], after, keptSpans, keptSources, restored] of cases) {
      it(`cuts ${what}`, () => {
        const t = table([4, 4], [20, 8]);
        const c = t.cut(a, b, piece);
        if (restored === 0) {
          expect(c).to.equal(null);
          return;
        }
        expect(c).to.not.equal(null);
        const { table: u, kept, restored: n } = c as NonNullable<typeof c>;
        expect(spans(u)).to.deep.equal(after);
        expect(kept.map((r) => [r.first, r.count])).to.deep.equal(keptSpans);
        expect(kept.map((r) => r.source)).to.deep.equal(keptSources);
        expect(n).to.equal(restored);
        expect(() => RunTable.from(u.runs, NR), 'the result keeps the invariant').to.not.throw();
        expect(spans(t), 'the old table is unchanged').to.deep.equal([[4, 4], [20, 8]]);
      });
    }
  });
});
