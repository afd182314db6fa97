import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EsbController } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative } from 'xive-remap/native-stubs';
import { RemapError, NativeError, inspectMaps, timaMappings } from 'xive-remap';
import { MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, parseMaps, realNative } from '../src/internal.js';

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
        regions: { base: string; nrIrqs: number; mappings: number; kernelManaged: boolean; ranges: { first: number; last: number; backing: string; ipi: boolean }[] }[];
        tima: unknown[];
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
      expect([mine?.nrIrqs, mine?.mappings, mine?.kernelManaged]).to.deep.equal([256, 5, false]);
      expect(out.tima).to.deep.equal([]);
      const text = execFileSync(process.execPath, [cli, 'inspect', '--pid', String(process.pid)], { encoding: 'utf8' });
      expect(text).to.match(/64-79\s+\/memfd:fake-pt7/);
      expect(text).to.match(/: 256 interrupts, 5 mappings$/m);
    } finally {
      esb.close();
      dev.close();
      pt.close();
    }
  });
});

describe('inspectMaps on maps text: size in interrupts, mappings, kernel-managed, TIMA', () => {
  // QEMU 7.2's mappings of its KVM XIVE device, as the emulated POWER9 showed them (64 KiB pages):
  // the ESB pages of 8,192 interrupts at page offset 4, the TIMA at page offset 0.
  const qemuEsb = '7fff13e00000-7fff53e00000 rw-s 00040000 00:0d 9129   anon_inode:kvm-xive-native';
  const qemuTima = '7fff80050000-7fff80090000 rw-s 00000000 00:0d 9129   anon_inode:kvm-xive-native';
  const page = 0x10000n;
  const bpi = 0x20000n; // esbShift 17: two 64 KiB pages per interrupt
  const cases: { name: string; maps: string[]; want: { base: bigint; nrIrqs: number; mappings: number; kernelManaged: boolean }[]; tima: number }[] = [
    { name: "QEMU's whole-range mapping and TIMA", maps: [qemuEsb, qemuTima], want: [{ base: 0x7fff13e00000n, nrIrqs: 8192, mappings: 1, kernelManaged: true }], tima: 1 },
    {
      name: 'a private anonymous mapping right after the region is not part of it',
      maps: [qemuEsb, '7fff53e00000-7fff53e10000 rw-p 00000000 00:00 0', qemuTima],
      want: [{ base: 0x7fff13e00000n, nrIrqs: 8192, mappings: 1, kernelManaged: true }],
      tima: 1,
    },
    {
      name: 'an overlay over interrupt 2 of a 16-interrupt KVM region',
      maps: [
        '7f0000000000-7f0000040000 rw-s 00040000 00:0d 77   anon_inode:kvm-xive-native',
        '7f0000040000-7f0000060000 rw-s 00000000 00:01 5   /memfd:pt (deleted)',
        '7f0000060000-7f0000200000 rw-s 000a0000 00:0d 77   anon_inode:kvm-xive-native',
      ],
      want: [{ base: 0x7f0000000000n, nrIrqs: 16, mappings: 3, kernelManaged: false }],
      tima: 0,
    },
    {
      name: "a fake device's single mapping is not a kernel's",
      maps: ['7f0000000000-7f0000100000 rw-s 00000000 00:01 9   /memfd:fake-xive-ipi (deleted)'],
      want: [{ base: 0x7f0000000000n, nrIrqs: 8, mappings: 1, kernelManaged: false }],
      tima: 0,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const maps = parseMaps(c.maps.join('\n'));
      const got = inspectMaps(maps, bpi, page).map((r) => ({ base: r.base, nrIrqs: r.nrIrqs, mappings: r.mappings, kernelManaged: r.kernelManaged }));
      expect(got).to.deep.equal(c.want);
      expect(timaMappings(maps)).to.have.length(c.tima);
    });
  }
  it('the TIMA is found by page offset 0 of a KVM XIVE device, with its size', () => {
    const [t] = timaMappings(parseMaps([qemuEsb, qemuTima].join('\n')));
    expect(t).to.deep.equal({ start: 0x7fff80050000n, end: 0x7fff80090000n, path: 'anon_inode:kvm-xive-native' });
  });
});
