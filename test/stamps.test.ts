// The stand-ins' stamp readers under hostile arguments. A load from an unmapped address kills the
// process, so every case that used to (an interrupt past the region or negative, any read after
// close(), an interrupt a failed restore left a hole, an address nothing maps) runs in a child
// process only: a regression fails this test instead of killing mocha. The cases that never crashed
// (1.5, a page index past the interrupt that read another interrupt's page) run here.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { EsbController, RemapError } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp, readStampAt } from 'xive-remap/native-stubs';

const dist = (path: string): string => pathToFileURL(fileURLToPath(new URL(`../${path}`, import.meta.url))).href;

/** What `fn` threw, as its RemapError code, or what it returned. */
function outcome(fn: () => unknown): string {
  try {
    return `returned ${String(fn())}`;
  } catch (e) {
    return e instanceof RemapError ? e.code : `${(e as Error).name}: ${(e as Error).message}`;
  }
}

// The child: the same cases as `crashers` below, each printed as `name=outcome` as soon as it is done.
const CHILD = `
import { EsbController, RemapError } from ${JSON.stringify(dist('src/index.js'))};
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative, readStamp, readStampAt } from ${JSON.stringify(dist('native-stubs/index.js'))};
const outcome = (fn) => { try { return 'returned ' + String(fn()); } catch (e) { return e instanceof RemapError ? e.code : e.name + ': ' + e.message; } };
const say = (name, fn) => process.stdout.write(name + '=' + outcome(fn) + '\\n');
const dev = FakeXiveDevice.create({ nrIrqs: 1024 });
const esb = EsbController.open(dev);
say('irq 2000', () => readStamp(esb, 2000));
say('irq -1', () => readStamp(esb, -1));
say('irq 1024', () => readStamp(esb, 1024));
say('irq 1 page 5', () => readStamp(esb, 1, 5));
say('irq 1023 page 1', () => readStamp(esb, 1023, 1));
const addr = esb.memslot.userspaceAddr;
esb.close();
say('after close', () => readStamp(esb, 1));
say('at the closed region', () => readStampAt(addr));
say('at 0', () => readStampAt(0n));
dev.close();
const f = new FaultyNative();
const xive = FakeXiveDevice.create({ nrIrqs: 64, native: f });
const pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 1, native: f });
const broken = EsbController.open(xive, { native: f });
f.inject({ call: 'mmap', errno: 'ENOMEM', mode: 'hole' });
f.inject({ call: 'mmap', nth: 2, errno: 'EINVAL', mode: 'hole' });
say('the failed attach', () => broken.attach(40, pt.pages(3)));
say('a hole of a degraded region', () => readStamp(broken, 40));
say('at the hole', () => readStampAt(broken.memslot.userspaceAddr + 40n * broken.geometry.bytesPerIrq));
// Every interrupt backingOf vouches for reads as ever; every other one is refused.
const sweep = { read: 0, refused: 0, wrong: [] };
for (let irq = 0; irq < 64; irq++) {
  const vouched = outcome(() => broken.backingOf(irq)).startsWith('returned');
  const got = outcome(() => readStamp(broken, irq));
  if (got === (vouched ? 'returned ipi:' + irq + ':0' : 'E_DEGRADED')) sweep[vouched ? 'read' : 'refused']++;
  else sweep.wrong.push(irq + ': ' + got);
}
say('sweep', () => JSON.stringify(sweep));
say('at -1', () => readStampAt(-1n));
say('at 2^64', () => readStampAt(1n << 64n));
say('at a number', () => readStampAt(4096));
const live = FakeXiveDevice.create({ nrIrqs: 8 });
const region = EsbController.open(live);
say('straddling the end of a region', () => readStampAt(region.memslot.userspaceAddr + region.memslot.size - 16n));
`;

describe('readStamp and readStampAt (native-stubs) under hostile arguments', () => {
  it('refuse, in a child process, every case that used to kill the process with SIGSEGV', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', CHILD], { encoding: 'utf8' });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).to.deep.equal({ status: 0, signal: null, stderr: '' });
    const seen = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=') as [string, string]));
    // The sweep over the degraded region: how wide "may be a hole" is belongs to the controller.
    const sweep = JSON.parse((seen.sweep ?? '').replace(/^returned /, '')) as { read: number; refused: number; wrong: string[] };
    expect(sweep.wrong).to.deep.equal([]);
    expect(sweep.read + sweep.refused).to.equal(64);
    expect(sweep.refused).to.be.at.least(1);
    delete seen.sweep;
    expect(seen).to.deep.equal({
      'irq 2000': 'E_IRQ_RANGE',
      'irq -1': 'E_IRQ_RANGE',
      'irq 1024': 'E_IRQ_RANGE',
      'irq 1 page 5': 'E_IRQ_RANGE',
      'irq 1023 page 1': 'returned ipi:1023:1', // the last page of the region is still read
      'after close': 'E_CLOSED',
      'at the closed region': 'E_NOT_OWNED',
      'at 0': 'E_NOT_OWNED',
      'the failed attach': 'E_DEGRADED',
      'a hole of a degraded region': 'E_DEGRADED',
      'at the hole': 'E_NOT_OWNED',
      'at -1': 'E_NOT_OWNED',
      'at 2^64': 'E_NOT_OWNED',
      'at a number': 'E_NOT_OWNED',
      'straddling the end of a region': 'E_NOT_OWNED',
    });
  });

  describe('in this process', () => {
    let dev: FakeXiveDevice;
    let one: FakeXiveDevice;
    let pt: FakePassthroughDevice;
    let esb: EsbController;
    let esb1: EsbController;
    before(() => {
      dev = FakeXiveDevice.create({ nrIrqs: 1024 });
      one = FakeXiveDevice.create({ nrIrqs: 16, esbShift: 16 }); // one page per interrupt
      pt = FakePassthroughDevice.create({ nrIrqs: 8, id: 4 });
      esb = EsbController.open(dev);
      esb1 = EsbController.open(one);
      esb.attach(7, pt.pages(2));
    });
    after(() => {
      esb.close();
      esb1.close();
      pt.close();
      dev.close();
      one.close();
    });

    it('refuse an interrupt that is not an integer, a page index past the interrupt, with E_IRQ_RANGE (these never crashed)', () => {
      const table: [string, () => unknown][] = [
        ['irq 1.5', () => readStamp(esb, 1.5)],
        ['irq NaN', () => readStamp(esb, NaN)],
        ['irq Infinity', () => readStamp(esb, Infinity)],
        ['irq "3"', () => readStamp(esb, '3' as unknown as number)],
        ['irq 3n', () => readStamp(esb, 3n as unknown as number)],
        ['irq null', () => readStamp(esb, null as unknown as number)],
        ['page 5', () => readStamp(esb, 1, 5 as 0 | 1)],
        ['page 2', () => readStamp(esb, 1, 2 as 0 | 1)],
        ['page -1', () => readStamp(esb, 1, -1 as 0 | 1)],
        ['page 0.5', () => readStamp(esb, 1, 0.5 as 0 | 1)],
        ['page 1 of a one-page interrupt', () => readStamp(esb1, 3, 1)],
      ];
      for (const [what, fn] of table) expect(outcome(fn), what).to.equal('E_IRQ_RANGE');
      expect(() => readStamp(esb, 1, 5 as 0 | 1)).to.throw(RemapError, 'readStamp(1, 5): page index (this region has 2 per interrupt) 5 is not an integer in [0, 2)');
      expect(() => readStamp(esb, 1.5)).to.throw(RemapError, 'readStamp(1.5, 0): interrupt 1.5 is not an integer in [0, 1024)');
    });

    it('read what is there otherwise, on both pages and on the last interrupt', () => {
      expect(readStamp(esb, 7, 0)).to.equal('pt4:2:0');
      expect(readStamp(esb, 7, 1)).to.equal('pt4:2:1');
      expect(readStamp(esb, 1023, 1)).to.equal('ipi:1023:1');
      expect(readStamp(esb1, 15)).to.equal('ipi:15:0');
      expect(readStampAt(esb.memslot.userspaceAddr + 7n * esb.geometry.bytesPerIrq)).to.equal('pt4:2:0');
    });
  });
});
