import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EsbController } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative } from 'xive-remap/native-stubs';
import { RemapError, NativeError } from 'xive-remap';
import { MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, realNative } from '../src/internal.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

for (const unmergeable of [false, true]) {
  describe(`esb.audit() on a ${unmergeable ? 'never-merging' : 'merging'} device`, () => {
    let dev: FakeXiveDevice;
    let pt: FakePassthroughDevice;
    let esb: EsbController;
    beforeEach(() => {
      dev = FakeXiveDevice.create({ nrIrqs: 64, unmergeable, esbShift: 13 });
      pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 3, esbShift: 13 });
      esb = EsbController.open(dev);
      esb.attachRange(10, 4, pt.pages(2, 4));
      esb.attach(20, pt.pages(9));
    });
    afterEach(() => {
      esb.close();
      dev.close();
      pt.close();
    });

    const bpi = (): bigint => esb.geometry.bytesPerIrq;
    const at = (irq: number): bigint => esb.memslot.userspaceAddr + BigInt(irq) * bpi();
    /** Tamper with the region behind the controller's back (the tests own the address range). */
    const overlay = (irq: number, len: bigint, fd: number, offset: bigint): void => {
      realNative.mmap(at(irq), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
    };

    it('finds nothing wrong after attaches and detaches', () => {
      expect(esb.audit()).to.deep.equal([]);
      esb.detach(11);
      esb.detach(20);
      expect(esb.audit()).to.deep.equal([]);
      esb.detachRange(0, 64);
      expect(esb.audit()).to.deep.equal([]);
    });

    it('reports pages from the wrong file', () => {
      overlay(30, bpi(), pt.fd, 0n);
      const d = esb.audit();
      expect(d.map((x) => [x.kind, x.first, x.last])).to.deep.include(['wrong-file', 30, 30]);
    });

    it('reports pages from the wrong offset of the right file', () => {
      overlay(11, bpi(), pt.fd, 7n * bpi());
      expect(esb.audit().map((x) => [x.kind, x.first, x.last])).to.deep.include(['wrong-offset', 11, 11]);
    });

    it('reports a hole, and a VMA boundary inside an interrupt', () => {
      realNative.munmap(at(40), bpi());
      overlay(50, esb.geometry.esbPageSize, pt.fd, 0n);
      const kinds = esb.audit().map((x) => [x.kind, x.first]);
      expect(kinds).to.deep.include(['hole', 40]);
      expect(kinds).to.deep.include(['split', 50]);
    });
  });
}

describe('esb.audit() when the kernel cannot be asked', () => {
  it('throws E_MAP with the errno error as cause, not a bare NativeError', () => {
    const f = new FaultyNative();
    const dev = FakeXiveDevice.create({ nrIrqs: 8, native: f });
    const esb = EsbController.open(dev, { native: f });
    try {
      f.inject({ call: 'fstat', errno: 'EMFILE' });
      let err: unknown;
      try {
        esb.audit();
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_MAP');
      expect((err as RemapError).cause).to.be.instanceOf(NativeError).with.property('code', 'EMFILE');
      expect(esb.audit()).to.deep.equal([]);
    } finally {
      esb.close();
      dev.close();
    }
  });
});

describe('xive-remap inspect --pid', () => {
  it('renders the ESB region of a running process from its /proc/PID/maps', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 256 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 32, id: 7 });
    const esb = EsbController.open(dev);
    try {
      esb.attachRange(64, 16, pt.pages(0, 16));
      esb.attach(200, pt.pages(20));
      const out = JSON.parse(execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid), '--json'], { encoding: 'utf8' })) as {
        regions: { base: string; ranges: { first: number; last: number; backing: string; ipi: boolean }[] }[];
      };
      const mine = out.regions.find((r) => BigInt(r.base) === esb.memslot.userspaceAddr);
      expect(mine, JSON.stringify(out)).to.not.equal(undefined);
      expect(mine?.ranges.map((r) => [r.first, r.last, r.ipi ? 'ipi' : r.backing.replace(/ \(deleted\)$/, '')])).to.deep.equal([
        [0, 63, 'ipi'],
        [64, 79, '/memfd:fake-pt7'],
        [80, 199, 'ipi'],
        [200, 200, '/memfd:fake-pt7'],
        [201, 255, 'ipi'],
      ]);
      const text = execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid)], { encoding: 'utf8' });
      expect(text).to.match(/64-79\s+\/memfd:fake-pt7/);
    } finally {
      esb.close();
      dev.close();
      pt.close();
    }
  });
});
