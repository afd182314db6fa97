// A guest running during remaps: a worker thread keeps a real KVM guest loading one interrupt's
// trigger page while this thread flips that interrupt between its IPI pages and a passthrough
// source 10,000 times. Every load must return one of the two stamps: MAP_FIXED replaces the
// mapping under the mmap lock, and KVM's MMU notifier drops the old page first, so the guest can
// never see a hole, a half-made mapping or a stale page after the change it already saw.
import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { EsbController, esbOffset } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';
import type { GuestLoadJob, GuestLoadReport } from '../native-stubs/guest-load-worker.js';

const unusable = KvmX86Guest.usable();
const word = (stamp: string): number => Buffer.from(`${stamp}\0\0\0\0`, 'latin1').readUInt32LE(0);

for (const unmergeable of [false, true]) {
  describe(`a KVM guest loading during 10,000 remaps, ${unmergeable ? 'never-merging' : 'merging'} fake${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
    before(function () {
      if (unusable) this.skip();
    });

    it('only ever loads the IPI stamp or the passthrough stamp, never a fault or anything else', async () => {
      const dev = FakeXiveDevice.create({ nrIrqs: 64, unmergeable });
      const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 1 });
      const esb = EsbController.open(dev);
      const irq = 9;
      // The first 4 bytes tell the stamps apart: 'ipi:' and 'pt1:'.
      const expected = [word('ipi:'), word('pt1:')];
      const control = new SharedArrayBuffer(8);
      const flags = new Int32Array(control);
      const job: GuestLoadJob = { memslot: esb.memslot, offset: esbOffset(esb.geometry, irq, 0), expected, control };
      const worker = new Worker(fileURLToPath(new URL('../native-stubs/guest-load-worker.js', import.meta.url)), { workerData: job });
      const report = new Promise<GuestLoadReport>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      try {
        // Wait until the guest is loading, then flip while it does.
        while (Atomics.load(flags, 1) === 0) await new Promise((r) => setTimeout(r, 5));
        const source = pt.pages(2);
        let flips = 0;
        const loadsBefore = Atomics.load(flags, 1);
        for (; flips < 10_000; flips++) {
          if (flips % 2 === 0) esb.attach(irq, source);
          else esb.detach(irq);
          // Let the guest in now and then, so loads and changes interleave all along.
          if (flips % 100 === 99) await new Promise((r) => setImmediate(r));
        }
        const loadsDuring = Atomics.load(flags, 1) - loadsBefore;
        Atomics.store(flags, 0, 1);
        const r = await report;
        expect(r.unexpected, `${r.unexpectedCount} unexpected loads`).to.deep.equal([]);
        expect(r.loads).to.be.greaterThan(100);
        expect(loadsDuring, 'the guest was loading while the region changed').to.be.greaterThan(50);
        expect(r.seen[0], 'loads that saw the IPI page').to.be.greaterThan(0);
        expect(r.seen[1], 'loads that saw the passthrough page').to.be.greaterThan(0);
        expect(r.memslotUpdates).to.equal(1);
        expect(readStamp(esb, irq)).to.equal('ipi:9:0');
        console.log(`      ${flips} flips; the guest made ${r.loads} loads (${loadsDuring} during the flips): ${r.seen[0]} ipi, ${r.seen[1]} pt1, 0 other`);
      } finally {
        Atomics.store(flags, 0, 1);
        await worker.terminate();
        esb.close();
        dev.close();
        pt.close();
      }
    });
  });
}
