/**
 * The run table on its own: pure arithmetic, table-driven. A run's source here is a string naming
 * its interrupts, so `cut`'s pieces can be checked by value.
 */
import { expect } from 'chai';
import { RunTable, StaleBoundaries, type Run } from '../src/run-table.js';

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
    it('adds a run in order, in place', () => {
      const t = table([4, 4], [20, 8]);
      t.insert({ first: 10, count: 2, source: 'n' });
      expect(spans(t)).to.deep.equal([[4, 4], [10, 2], [20, 8]]);
      t.insert({ first: 0, count: 1, source: 'm' });
      t.insert({ first: 63, count: 1, source: 'z' });
      expect(spans(t)).to.deep.equal([[0, 1], [4, 4], [10, 2], [20, 8], [63, 1]]);
      expect(() => RunTable.from(t.runs, NR), 'the result keeps the invariant').to.not.throw();
    });
    const refused: [number, number][] = [
      [3, 2],
      [7, 1],
      [19, 2],
      [62, 4],
      [30, 0],
    ];
    for (const [first, count] of refused) {
      it(`refuses [${first}, ${first + count}) and stays as it was`, () => {
        const t = table([4, 4], [20, 8]);
        expect(() => t.insert({ first, count, source: 'n' })).to.throw(RangeError);
        expect(spans(t)).to.deep.equal([[4, 4], [20, 8]]);
      });
    }
    it('from() copies what it was given; snapshot() is a frozen copy', () => {
      const runs: Run<string>[] = [{ first: 1, count: 1, source: 'x' }];
      const t = RunTable.from(runs, NR);
      runs.push({ first: 5, count: 1, source: 'y' });
      expect(t.length).to.equal(1);
      const snap = t.snapshot();
      t.insert({ first: 9, count: 1, source: 'z' });
      expect(Object.isFrozen(snap)).to.equal(true);
      expect(snap.map((r) => r.first)).to.deep.equal([1]);
    });
  });

  describe('removeAt', () => {
    it('removes one run whole, returns its source, keeps the rest in order; refuses a run that is not there', () => {
      const t = table([2, 2], [6, 1], [10, 4]);
      expect(t.removeAt(1)).to.equal('s6');
      expect(spans(t)).to.deep.equal([[2, 2], [10, 4]]);
      expect(t.removeAt(1)).to.equal('s10');
      expect(t.removeAt(0)).to.equal('s2');
      expect(t.length).to.equal(0);
      for (const k of [0, -1, 0.5]) expect(() => t.removeAt(k)).to.throw(RangeError);
      t.insert({ first: 5, count: 1, source: 'n' });
      expect(t.runs.map((r) => [r.first, r.count, r.source])).to.deep.equal([[5, 1, 'n']]);
    });
  });

  describe('cut', () => {
    const piece = (r: Run<string>, skip: number, count: number): string => `${r.source}+${skip}x${count}`;
    const cases: [string, [number, number], [number, number][], string[], string[], number][] = [
      ['nothing overlaps', [0, 4], [[4, 4], [20, 8]], ['s4', 's20'], [], 0],
      ['a whole run', [4, 8], [[20, 8]], ['s20'], ['s4'], 4],
      ['the middle of a run', [22, 24], [[4, 4], [20, 2], [24, 4]], ['s4', 's20+0x2', 's20+4x4'], ['s20'], 2],
      ['the head of a run', [0, 6], [[6, 2], [20, 8]], ['s4+2x2', 's20'], ['s4'], 2],
      ['the tail of one run and the head of the next', [6, 22], [[4, 2], [22, 6]], ['s4+0x2', 's20+2x6'], ['s4', 's20'], 4],
      ['everything', [0, 64], [], [], ['s4', 's20'], 12],
    ];
    for (const [what, [a, b], after, sources, dropped, restored] of cases) {
      it(`cuts ${what}, in place`, () => {
        const t = table([4, 4], [20, 8]);
        const gone: string[] = [];
        const made: string[] = [];
        const n = t.cut(a, b, (r, skip, count) => {
          expect(gone, 'pieces are made before any run is dropped').to.deep.equal([]);
          const p = piece(r, skip, count);
          made.push(p);
          return p;
        }, (source) => gone.push(source));
        expect(n).to.equal(restored);
        expect(spans(t)).to.deep.equal(after);
        expect(t.runs.map((r) => r.source)).to.deep.equal(sources);
        expect(gone).to.deep.equal(dropped);
        expect(made).to.deep.equal(sources.filter((x) => x.includes('+')));
        expect(() => RunTable.from(t.runs, NR), 'the result keeps the invariant').to.not.throw();
      });
    }
    it('cuts three runs into two pieces (shrinks) and one run into two (grows)', () => {
      const t = table([2, 2], [6, 2], [10, 4]);
      t.cut(3, 12, piece);
      expect(spans(t)).to.deep.equal([[2, 1], [12, 2]]);
      t.cut(12, 13, piece);
      t.insert({ first: 5, count: 2, source: 'n' });
      t.cut(5, 6, piece);
      expect(spans(t)).to.deep.equal([[2, 1], [6, 1], [13, 1]]);
    });
  });
});

describe('StaleBoundaries', () => {
  it('keeps positions sorted and unique, removes by closed range, counts by closed range', () => {
    const s = new StaleBoundaries();
    for (const p of [9, 3, 5, 3, 12]) s.add(p);
    expect(s.list()).to.deep.equal([3, 5, 9, 12]);
    const counts: [number, number, number][] = [
      [0, 2, 0],
      [3, 3, 1],
      [3, 9, 3],
      [4, 8, 1],
      [10, 100, 1],
      [6, 5, 0],
    ];
    for (const [a, b, n] of counts) expect(s.countIn(a, b), `countIn(${a}, ${b})`).to.equal(n);
    s.removeIn(5, 9);
    expect(s.list()).to.deep.equal([3, 12]);
    s.removeIn(13, 20);
    expect(s.size).to.equal(2);
    s.clear();
    expect(s.size).to.equal(0);
  });
});
