/**
 * The long model-based fuzz run: `node dist/bench/fuzz.js --ops 100000 [--seed N]`.
 *
 * Splits the ops into episodes (a fresh fake device and region each, alternating merging and
 * never-merging devices), generates each episode's ops from a seed derived from `--seed`, replays
 * them against the model of `test/model.ts` with random mmap faults mixed in (hole mode and failed
 * restores included), and prints a summary. On the first mismatch it prints the episode's seed and
 * the failure shrunk to a minimal op list, as a test to paste, and exits 1.
 *
 * Options: --ops N (100000), --seed S (random, printed), --episode N (ops per episode, 2000),
 * --fault-rate P (0.03), --nr-irqs N (128), --kind merging|unmergeable|both (both),
 * --shrink-seconds N (120), --vma-slack K|mixed (mixed: never-merging episodes cycle through
 * K = 0, 2, 8 and the default, so the amortized VMA bound 2 × runs + 1 + K and its compaction are
 * checked after every op at several K).
 */
import { parseArgs } from 'node:util';
import { Rng, runSeed, type ModelConfig, type ReplayStats } from '../test/model.js';

function main(): number {
  const { values } = parseArgs({
    options: {
      ops: { type: 'string', default: '100000' },
      seed: { type: 'string' },
      episode: { type: 'string', default: '2000' },
      'fault-rate': { type: 'string', default: '0.03' },
      'nr-irqs': { type: 'string', default: '128' },
      kind: { type: 'string', default: 'both' },
      'shrink-seconds': { type: 'string', default: '120' },
      'vma-slack': { type: 'string', default: 'mixed' },
    },
  });
  const num = (name: keyof typeof values, v: string | undefined, ok: (n: number) => boolean): number => {
    const n = Number(v);
    if (!ok(n)) throw new Error(`--${String(name)} ${String(v)} is not valid`);
    return n;
  };
  const total = num('ops', values.ops, (n) => Number.isInteger(n) && n > 0);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : num('seed', values.seed, Number.isInteger);
  const perEpisode = num('episode', values.episode, (n) => Number.isInteger(n) && n > 0);
  const faultRate = num('fault-rate', values['fault-rate'], (n) => n >= 0 && n <= 1);
  const nrIrqs = num('nr-irqs', values['nr-irqs'], (n) => Number.isInteger(n) && n >= 8 && n <= 4096);
  const shrinkMs = num('shrink-seconds', values['shrink-seconds'], (n) => n >= 0) * 1000;
  const kinds = values.kind === 'both' ? [false, true] : values.kind === 'unmergeable' ? [true] : values.kind === 'merging' ? [false] : undefined;
  if (!kinds) throw new Error(`--kind ${values.kind} is not merging, unmergeable or both`);
  const slacks = values['vma-slack'] === 'mixed' ? [0, 2, 8, undefined] : [num('vma-slack', values['vma-slack'], (n) => Number.isInteger(n) && n >= 0)];

  console.log(`fuzz: ${total} ops, seed ${seed}, episodes of ${perEpisode}, fault rate ${faultRate}, ${nrIrqs} irqs, ${values.kind} devices, vmaSlack ${values['vma-slack']}`);
  const seeds = new Rng(seed);
  const sum: ReplayStats = { ops: 0, errors: {}, faults: 0 };
  const t0 = process.hrtime.bigint();
  let lastReport = t0;
  for (let episode = 0, done = 0; done < total; episode++) {
    const ops = Math.min(perEpisode, total - done);
    const unmergeable = kinds[episode % kinds.length] as boolean;
    const vmaSlack = unmergeable ? slacks[Math.floor(episode / kinds.length) % slacks.length] : undefined;
    // Every other pair of episodes gives the controller bigint mmap calls only (its fallback path).
    const hotPath = Math.floor(episode / 2) % 2 === 0;
    const config: ModelConfig = vmaSlack === undefined ? { nrIrqs, unmergeable, hotPath } : { nrIrqs, unmergeable, vmaSlack, hotPath };
    const episodeSeed = seeds.int(2 ** 31);
    let stats: ReplayStats;
    try {
      stats = runSeed(config, { seed: episodeSeed, ops, faultRate, timeMs: shrinkMs });
    } catch (e) {
      console.error(`\nFAILED in episode ${episode} (episode seed ${episodeSeed}) after ${done} ops of run seed ${seed}`);
      console.error(`rerun: node dist/bench/fuzz.js --ops ${total} --seed ${seed} --episode ${perEpisode} --fault-rate ${faultRate} --nr-irqs ${nrIrqs} --kind ${values.kind} --vma-slack ${values['vma-slack']} (this episode: vmaSlack ${vmaSlack ?? 'default'}, ${hotPath ? 'Number hot path' : 'bigint mmap path'})\n`);
      console.error(e instanceof Error ? e.message : String(e));
      return 1;
    }
    done += ops;
    sum.ops += stats.ops;
    sum.faults += stats.faults;
    for (const [code, n] of Object.entries(stats.errors)) sum.errors[code] = (sum.errors[code] ?? 0) + n;
    const now = process.hrtime.bigint();
    if (now - lastReport > 10_000_000_000n || done === total) {
      lastReport = now;
      console.log(`  ${done} ops, ${episode + 1} episodes, ${(Number(now - t0) / 1e9).toFixed(1)} s`);
    }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const errors = Object.entries(sum.errors).sort().map(([c, n]) => `${c} ${n}`).join(', ');
  console.log(`ok: ${sum.ops} ops in ${secs.toFixed(1)} s (${Math.round(sum.ops / secs)} ops/s), ${sum.faults} injected faults fired; refusals: ${errors}`);
  return 0;
}

process.exitCode = main();
