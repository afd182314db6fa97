/**
 * Model-based random testing, short run (the long one is `bench/fuzz.ts`): seeded random op lists
 * on a merging and a never-merging device, each op checked against the model in `model.ts`
 * through memory. A failure prints the seed and a shrunk reproduction as code. Set MODEL_SEED to
 * try another seed, MODEL_OPS for a longer run.
 */
import { expect } from 'chai';
import { Model, ModelFailure, generate, replay, reproduction, runSeed, shrink, type ModelConfig } from './model.js';

const SEED = Number(process.env.MODEL_SEED ?? 20240611);
const OPS = Number(process.env.MODEL_OPS ?? 1500);

describe('model-based random testing', () => {
  // hotPath: the controller's Number entry (NativeLayer.remapShared) or, as any layer without it, bigint mmap calls.
  for (const [unmergeable, hotPath] of [[false, true], [true, true], [false, false], [true, false]] as const) {
    const config: ModelConfig = { nrIrqs: 128, unmergeable, hotPath };
    it(`${OPS} random ops with mmap faults on a ${unmergeable ? 'never-merging' : 'merging'} device agree with the model (${hotPath ? 'Number hot path' : 'bigint mmap path'}, seed ${SEED})`, () => {
      const stats = runSeed(config, { seed: SEED + (unmergeable ? 1 : 0) + (hotPath ? 0 : 2), ops: OPS, faultRate: 0.05, timeMs: 20_000 });
      // The run must have exercised what it claims to: successes, each refusal, faults and degraded regions.
      expect(stats.ops).to.equal(OPS);
      expect(Object.keys(stats.errors)).to.include.members(['E_IRQ_RANGE', 'E_ALREADY_ATTACHED', 'E_SOURCE', 'E_MAP', 'E_DEGRADED']);
      expect(stats.faults).to.be.greaterThan(20);
    });
  }

  // Small slacks make the amortized VMA bound's compaction (a detach that maps back its whole gap) frequent.
  for (const vmaSlack of [0, 2, 6]) {
    const config: ModelConfig = { nrIrqs: 64, unmergeable: true, vmaSlack };
    it(`${OPS} random ops with mmap faults on a never-merging device with vmaSlack ${vmaSlack} agree with the model, VMAs ≤ 2 × runs + 1 + ${vmaSlack} after each`, () => {
      const stats = runSeed(config, { seed: SEED + 10 + vmaSlack, ops: OPS, faultRate: 0.05, timeMs: 20_000 });
      expect(stats.ops).to.equal(OPS);
      expect(stats.faults).to.be.greaterThan(20);
    });
  }

  it('predicts an own-pages detach on a never-merging device, and the whole gap once the slack is used up or the table empties', () => {
    const pages = (host: number) => ({ pt: 1, host, via: 'pages' as const });
    const u = new Model(32, /* mergeable */ false, /* slack */ 2);
    for (const irq of [4, 8, 12]) u.apply({ op: 'attach', irq, src: pages(irq) });
    u.apply({ op: 'detach', irq: 8 }); // own pages: boundaries at 8 and 9 go stale
    expect([...u.stale].sort((a, b) => a - b)).to.deep.equal([8, 9]);
    expect(u.vmaBound()).to.equal(2 * 2 + 1 + 2);
    u.apply({ op: 'detach', irq: 4 }); // would make 4 stale boundaries > 2: the whole gap [0, 12)
    expect([...u.stale]).to.deep.equal([]);
    u.apply({ op: 'detach', irq: 12 }); // empties the table: the whole region
    expect([...u.stale]).to.deep.equal([]);
  });

  it('generates the same ops from the same seed, and different ones from another', () => {
    const config: ModelConfig = { nrIrqs: 64, unmergeable: false };
    expect(generate(config, 7, 200, { faultRate: 0.1 })).to.deep.equal(generate(config, 7, 200, { faultRate: 0.1 }));
    expect(generate(config, 7, 200)).to.not.deep.equal(generate(config, 8, 200));
  });

  it('predicts the controller: a split run, a refused double attach, a gap remapped on a never-merging device', () => {
    const m = new Model(16, /* mergeable */ true);
    expect(m.apply({ op: 'attachRange', first: 4, count: 4, src: { pt: 1, host: 0, via: 'pages' } }).outcome).to.deep.equal({ ok: true, value: undefined });
    expect(m.apply({ op: 'attach', irq: 5, src: { pt: 2, host: 0, via: 'pages' } }).outcome).to.deep.equal({ ok: false, code: 'E_ALREADY_ATTACHED' });
    expect(m.apply({ op: 'detach', irq: 5 }).outcome).to.deep.equal({ ok: true, value: true });
    expect(m.runs()).to.equal(2);
    expect(m.runOf(6)).to.deep.equal([6, 8]);
    const u = new Model(16, /* mergeable */ false);
    u.apply({ op: 'attach', irq: 2, src: { pt: 1, host: 0, via: 'pages' } });
    u.apply({ op: 'attach', irq: 12, src: { pt: 1, host: 1, via: 'pages' } });
    const fault = { errno: 'ENOMEM', hole: true, restore: { errno: 'EAGAIN', hole: true } };
    expect(u.apply({ op: 'attach', irq: 7, src: { pt: 1, host: 2, via: 'pages' }, fault }).outcome).to.deep.equal({ ok: false, code: 'E_DEGRADED' });
    expect(u.degraded).to.deep.equal([3, 12]);
    expect(u.apply({ op: 'detach', irq: 2 }).outcome).to.deep.equal({ ok: false, code: 'E_DEGRADED' });
  });

  it('notices a kernel that silently skips an mmap, and shrinks the failure to a few ops printed as code', () => {
    // The harness's own test: a lying inner layer (FaultyNative `skip`) must be caught and shrunk.
    const config: ModelConfig = { nrIrqs: 64, unmergeable: false, sabotage: { call: 'mmap', nth: 5, mode: 'skip' } };
    const ops = generate(config, 99, 300);
    let failure: unknown;
    try {
      replay(config, ops);
    } catch (e) {
      failure = e;
    }
    expect(failure).to.be.instanceOf(ModelFailure);
    const small = shrink(config, ops, failure as ModelFailure, { timeMs: 10_000 });
    // Five mmaps are needed to reach the skipped one; the checks see it at once.
    expect(small.ops.length).to.be.within(5, 6);
    expect(() => replay(config, small.ops, { full: true })).to.throw(ModelFailure);
    const code = reproduction(config, small.ops, small.failure, 'self-test');
    expect(code).to.match(/^it\('reproduces self-test', \(\) => \{$/m);
    expect(code).to.include("sabotage: { call: 'mmap', nth: 5, mode: 'skip' }");
    expect(code.match(/^ {4}\{ op: /gm)).to.have.length(small.ops.length);
  });

  it('reports a failure with its seed and the shrunk reproduction', () => {
    const config: ModelConfig = { nrIrqs: 32, unmergeable: true, sabotage: { call: 'mmap', nth: 2, mode: 'skip' } };
    let message = '';
    try {
      runSeed(config, { seed: 5, ops: 100, timeMs: 10_000 });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).to.match(/^model failure, seed 5 \(unmergeable device, 32 irqs, 100 ops\), at op \d+: /);
    expect(message).to.match(/shrunk from \d+ to [23] ops/);
    expect(message).to.include('replay({ nrIrqs: 32, unmergeable: true, sabotage:');
  });
});
