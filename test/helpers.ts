/**
 * Test helpers that look at memory, not at the library's bookkeeping: stamps read through the
 * region, VMAs counted from /proc/self/maps.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RemapError, type EsbController, type EsbDevice } from 'xive-remap';
import { readStamp } from 'xive-remap/native-stubs';
import { mapsIn, realNative, type MapsEntry } from '../src/internal.js';

/** The VMAs inside the region, from /proc/self/maps. */
export function regionVmas(esb: EsbController): MapsEntry[] {
  const { userspaceAddr, size } = esb.memslot;
  return mapsIn(realNative.readMaps(), userspaceAddr, userspaceAddr + size);
}

/** What every interrupt's pages must read, from `expected` (irq → stamp prefix, default `ipi:<irq>`). */
export function expectStamps(esb: EsbController, expected: ReadonlyMap<number, string> = new Map(), irqs?: Iterable<number>): void {
  const pages = esb.geometry.pagesPerIrq;
  const wrong: string[] = [];
  for (const irq of irqs ?? Array.from({ length: esb.nrIrqs }, (_, i) => i)) {
    for (let p = 0; p < pages; p++) {
      const want = `${expected.get(irq) ?? `ipi:${irq}`}:${p}`;
      const got = readStamp(esb, irq, p as 0 | 1);
      if (got !== want) wrong.push(`irq ${irq} page ${p}: read ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
  }
  expect(wrong, wrong.slice(0, 5).join('\n')).to.deep.equal([]);
}

/** Every interrupt's stamps match what backingOf says (no hole, no stale overlay). */
export function expectBackingMatchesMemory(esb: EsbController, irqs?: Iterable<number>): void {
  const expected = new Map<number, string>();
  for (const irq of irqs ?? Array.from({ length: esb.nrIrqs }, (_, i) => i)) {
    const b = esb.backingOf(irq);
    expected.set(irq, b.kind === 'ipi' ? `ipi:${irq}` : b.source);
  }
  expectStamps(esb, expected, expected.keys());
}

/** What `fn` threw, or undefined if it returned (for outcomes where either is allowed). */
export function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** Run `fn`, expect a RemapError with `code`, and return it. */
export function expectRemapError(fn: () => unknown, code: string): RemapError {
  const caught = thrownBy(fn);
  expect(caught, `expected a RemapError ${code}`).to.be.instanceOf(RemapError);
  const err = caught as RemapError;
  expect(err.code, err.message).to.equal(code);
  return err;
}

/** A plain object device that forwards to `dev` (its properties read now), with some of them replaced. */
export function forwardingDevice(dev: EsbDevice, over: Partial<EsbDevice> = {}): EsbDevice {
  return {
    name: dev.name,
    nrIrqs: dev.nrIrqs,
    geometry: dev.geometry,
    contract: dev.contract,
    mergeable: dev.mergeable,
    native: dev.native,
    openIpiPages: () => dev.openIpiPages(),
    ...over,
  };
}

/**
 * Run `body` (an ES module body with `EsbController`, `PageSource`, `RemapError`, `FakeXiveDevice`,
 * `FakePassthroughDevice`, `readStamp`, `realNative` in scope) in a child process (what could kill
 * the process: SIGBUS, SIGSEGV); return its exit status, signal and output.
 */
export function inChild(body: string): { status: number | null; signal: NodeJS.Signals | null; out: string } {
  const dist = fileURLToPath(new URL('..', import.meta.url));
  const code = [
    `import { EsbController, PageSource, RemapError } from ${JSON.stringify(`${dist}src/index.js`)};`,
    `import { realNative } from ${JSON.stringify(`${dist}src/internal.js`)};`,
    `import { FakeXiveDevice, FakePassthroughDevice, readStamp } from ${JSON.stringify(`${dist}native-stubs/index.js`)};`,
    body,
  ].join('\n');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}
