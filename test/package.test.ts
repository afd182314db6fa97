// The package as a new user meets it: `npm install` leaves package-lock.json as it is, the license
// the manifest names is there, what `npm pack` ships is complete (every source map's sources, the
// bin, the exports), and the README's JSON key paths of the bench are the bench's.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(join(repo, path), 'utf8');

interface Manifest {
  name: string;
  version: string;
  license: string;
  engines: Record<string, string>;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  exports: Record<string, { types: string; default: string }>;
}

describe('the package', () => {
  const pkg = JSON.parse(read('package.json')) as Manifest;

  it('has a package-lock.json whose root entry npm install would not rewrite', () => {
    const root = (JSON.parse(read('package-lock.json')) as { name: string; version: string; packages: Record<string, Partial<Manifest>> }).packages[''];
    const bin = Object.fromEntries(Object.entries(pkg.bin).map(([k, v]) => [k, v.replace(/^\.\//, '')])); // npm writes bin paths without ./
    expect(root).to.deep.equal({
      name: pkg.name,
      version: pkg.version,
      license: pkg.license,
      engines: pkg.engines,
      bin,
      dependencies: pkg.dependencies,
      devDependencies: pkg.devDependencies,
    });
  });

  it('ships the MIT license its manifest names', () => {
    expect(pkg.license).to.equal('MIT');
    const license = read('LICENSE');
    expect(license).to.match(/^MIT License\n\nCopyright \(c\) \d{4} the xive-remap authors\n/);
    expect(license).to.include('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND');
  });

  it('packs the license, the bin, every export, and the TypeScript source of every source map', function () {
    this.timeout(120_000);
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const files = new Set((JSON.parse(out) as { files: { path: string }[] }[])[0]?.files.map((f) => f.path));
    for (const f of ['LICENSE', 'README.md', 'package.json', ...Object.values(pkg.bin)]) expect(files, f).to.include(normalize(f));
    for (const e of Object.values(pkg.exports)) for (const f of [e.types, e.default]) expect(files, f).to.include(normalize(f));
    const maps = [...files].filter((f) => f.endsWith('.map'));
    expect(maps.length, 'source maps shipped').to.be.greaterThan(50);
    const missing: string[] = [];
    for (const map of maps) {
      for (const source of (JSON.parse(read(map)) as { sources: string[] }).sources) {
        const target = normalize(join(dirname(map), source));
        if (!files.has(target)) missing.push(`${map} → ${target}`);
      }
    }
    expect(missing, 'sources the shipped maps point to but the package lacks').to.deep.equal([]);
    expect([...files].filter((f) => /^(dist\/)?(test|examples|bench)\/|power9/.test(f)), 'tests, examples, bench and the POWER9 runner stay out').to.deep.equal([]);
  });
});

describe('the README\'s bench JSON keys', () => {
  it('are key paths of `npm run -s bench -- --json` (run with --quick), and every null target says why in notes', function () {
    this.timeout(300_000);
    const readme = read('README.md');
    const perf = readme.slice(readme.indexOf('## Performance'), readme.indexOf('\n## ', readme.indexOf('## Performance') + 1));
    const top = ['controllerJsNsPerPair', 'overlayVsKoffi', 'overlayVsC', 'overlayVsCThreaded', 'syscallsPerOp', 'rangeVsSingles', 'approach2VsOverlay', 'scale', 'vmas', 'detachGapCost', 'targets', 'notes', 'details', 'env'];
    const paths = [...perf.matchAll(/`([A-Za-z0-9]+(?:\.[A-Za-z0-9]+|\["[^"]+"\])+)`/g)].map((m) => m[1] as string).filter((p) => top.includes(p.split(/[.[]/)[0] as string));
    expect(paths).to.include.members(['detachGapCost.gap16Ki.perDetach.median', 'details.overlay.esbShift13Populated.kernelUsPerPair', 'targets.overlayVsC']);
    // The bench as `npm run -s bench -- --json --quick` runs it, without the build npm test just did.
    const out = execFileSync(process.execPath, ['--expose-gc', join(repo, 'dist/bench/bench.js'), '--json', '--quick'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const json = JSON.parse(out) as Record<string, unknown>;
    const at = (path: string): unknown =>
      [...path.matchAll(/([A-Za-z0-9]+)|\["([^"]+)"\]/g)].reduce<unknown>((o, m) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[(m[1] ?? m[2]) as string] : undefined), json);
    const unresolved = paths.filter((p) => at(p) === undefined);
    expect(unresolved, 'README key paths the bench JSON does not have').to.deep.equal([]);
    const targets = json.targets as Record<string, boolean | null>;
    const notes = json.notes as Record<string, string>;
    for (const [key, met] of Object.entries(targets)) {
      expect(met, key).to.be.oneOf([true, false, null]);
      if (met === null) expect(notes[key], `notes.${key}`).to.be.a('string');
    }
    // Counts, not timings: these the bench must meet on any machine (a miss here is a bug).
    expect(json.syscallsPerOp).to.deep.equal({ attach: 1, detach: 1, attachRange: 1 });
    expect(targets.syscallsPerOp, 'targets.syscallsPerOp').to.equal(true);
    expect(targets.firstChangeSyscalls, 'targets.firstChangeSyscalls').to.equal(true);
  });
});
