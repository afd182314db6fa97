// The layering of src/ (ARCHITECTURE §3: data flows down, nothing reaches up), read from the sources.
// No import cycle inside src/ (type-only imports count: a cycle of types is still one to a reader).
// The library never reaches up into its stand-ins: no file under src/ imports native-stubs/, by a
// relative path or by the package's own name, statically (import/export … from, import '…',
// import type), dynamically (import('…')) or through require('…'). A dynamic import whose target
// is not a plain string cannot be checked, so src/ may not have one either.
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));

/** What a source file imports: the string specifiers, and how many dynamic imports have no string literal. */
function importsOf(text: string): { specifiers: string[]; unchecked: number } {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1'); // comments say anything
  const specifiers: string[] = [];
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^'"`;]*?\bfrom\s*(['"])([^'"]+)\1/g, // import x from '…', export { x } from '…'
    /\bimport\s*(['"])([^'"]+)\1/g, // import '…'
    /\b(?:import|require)\s*\(\s*(['"`])([^'"`$]+)\1\s*[,)]/g, // import('…'), require('…')
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) specifiers.push(m[2] as string);
  const calls = [...code.matchAll(/\b(?:import|require)\s*\(/g)].length;
  const literal = [...code.matchAll(patterns[2] as RegExp)].length;
  return { specifiers, unchecked: calls - literal };
}

/** Whether `specifier`, imported from `file`, names something in native-stubs/. */
function reachesStubs(file: string, specifier: string): boolean {
  if (specifier === 'xive-remap/native-stubs' || specifier.startsWith('xive-remap/native-stubs/')) return true;
  if (!specifier.startsWith('.')) return false;
  const target = relative(repo, resolve(dirname(file), specifier));
  return target === 'native-stubs' || target.startsWith(`native-stubs${sep}`);
}

function sourcesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.(ts|mts|cts|js|mjs|cjs)$/.test(e.name))
    .map((e) => join(e.parentPath, e.name));
}

describe('layering: src/ never imports native-stubs/', () => {
  it('finds every form of import in a source text (the reader can fail)', () => {
    const table: [string, string[], number][] = [
      [`import { FakeXiveDevice } from '../../native-stubs/index.js';`, ['../../native-stubs/index.js'], 0],
      [`import type { KvmX86Guest } from "../native-stubs/kvm-x86-guest.js";`, ['../native-stubs/kvm-x86-guest.js'], 0],
      [`import {\n  a,\n  b,\n} from 'xive-remap/native-stubs';`, ['xive-remap/native-stubs'], 0],
      [`export { readStamp } from '../native-stubs/stamps.js';`, ['../native-stubs/stamps.js'], 0],
      [`export * from '../native-stubs/index.js';`, ['../native-stubs/index.js'], 0],
      [`import '../native-stubs/fake-devices.js';`, ['../native-stubs/fake-devices.js'], 0],
      [`const m = await import('../../native-stubs/index.js');`, ['../../native-stubs/index.js'], 0],
      [`const m = await import(\`../native-stubs/index.js\`);`, ['../native-stubs/index.js'], 0],
      [`const m = require("../native-stubs/index.js");`, ['../native-stubs/index.js'], 0],
      [`const m = await import(name);`, [], 1],
      [`const m = await import(\`../\${dir}/index.js\`);`, [], 1],
      [`// import { x } from '../native-stubs/index.js';\n/* import('../native-stubs') */`, [], 0],
      [`const url = 'http://example.org/'; import { a } from './a.js';`, ['./a.js'], 0],
    ];
    for (const [text, specifiers, unchecked] of table) expect(importsOf(text), text).to.deep.equal({ specifiers, unchecked });
  });

  it('tells a path into native-stubs/ from one beside it', () => {
    const file = join(repo, 'src', 'cli', 'main.ts');
    expect(reachesStubs(file, '../../native-stubs/index.js')).to.equal(true);
    expect(reachesStubs(file, '../../native-stubs')).to.equal(true);
    expect(reachesStubs(file, 'xive-remap/native-stubs')).to.equal(true);
    expect(reachesStubs(file, '../native/index.js')).to.equal(false);
    expect(reachesStubs(file, '../../native-stubs-extra/x.js')).to.equal(false);
    expect(reachesStubs(file, 'xive-remap')).to.equal(false);
  });

  it('holds for every source file in src/', () => {
    const files = sourcesUnder(join(repo, 'src'));
    expect(files.length).to.be.greaterThan(20);
    const found: string[] = [];
    for (const file of files) {
      const { specifiers, unchecked } = importsOf(readFileSync(file, 'utf8'));
      for (const s of specifiers) if (reachesStubs(file, s)) found.push(`${relative(repo, file)} imports ${s}`);
      if (unchecked > 0) found.push(`${relative(repo, file)} has ${unchecked} dynamic import(s) of a computed name`);
    }
    expect(found).to.deep.equal([]);
  });
});

/** One import cycle of `g` (file → files it imports), as a path that starts and ends at the same file, or null. */
function findCycle(g: ReadonlyMap<string, readonly string[]>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const d of g.get(n) ?? []) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const n of [...g.keys()].sort()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

describe('layering: no import cycle in src/', () => {
  it('finds a cycle where there is one, and none where there is none', () => {
    expect(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]]))).to.deep.equal(['a', 'b', 'c', 'a']);
    expect(findCycle(new Map([['a', ['b', 'c']], ['b', ['c']], ['c', []]]))).to.equal(null);
  });

  it('holds for the import graph of src/', () => {
    const src = join(repo, 'src');
    const g = new Map<string, string[]>();
    for (const file of sourcesUnder(src).filter((f) => f.endsWith('.ts'))) {
      const deps = importsOf(readFileSync(file, 'utf8'))
        .specifiers.filter((s) => s.startsWith('.'))
        .map((s) => relative(src, resolve(dirname(file), s)).replace(/\.js$/, '.ts'));
      g.set(relative(src, file), deps);
    }
    expect(g.size).to.be.greaterThan(20);
    const cycle = findCycle(g);
    expect(cycle, cycle ? `import cycle: ${cycle.join(' → ')}` : '').to.equal(null);
  });
});
