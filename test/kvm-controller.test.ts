// The EsbController seen from a real KVM guest: the controller's region is registered ONCE as the
// guest's memslot, then after every attach, attachRange and detach the guest's very next load of
// each touched interrupt's ESB pages must read the stamp the new backing promises (`ipi:<irq>:<p>`
// or `pt<id>:<hostIrq>:<p>`), with no memslot update. Skips, with the reason, without /dev/kvm.
import { expect } from 'chai';
import { EsbController, esbOffset } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice } from 'xive-remap/native-stubs';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';

const unusable = KvmX86Guest.usable();

for (const unmergeable of [false, true]) {
  describe(`EsbController under a real KVM guest, ${unmergeable ? 'never-merging' : 'merging'} fake XIVE${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
    const NR_IRQS = 4096;
    let dev: FakeXiveDevice;
    let pt: FakePassthroughDevice;
    let esb: EsbController;
    let guest: KvmX86Guest;

    before(function () {
      if (unusable) this.skip(); // the reason is printed once, by test/hooks.ts
    });

    beforeEach(() => {
      dev = FakeXiveDevice.create({ nrIrqs: NR_IRQS, unmergeable });
      pt = FakePassthroughDevice.create({ nrIrqs: 64, id: 1 });
      esb = EsbController.open(dev);
      guest = KvmX86Guest.create({ memslot: esb.memslot });
    });

    afterEach(() => {
      guest?.close();
      esb?.close();
      pt?.close();
      dev?.close();
    });

    /** What the guest reads on interrupt `irq`'s page `p`. */
    const seen = (irq: number, p: 0 | 1 = 0): string => guest.readString(esbOffset(esb.geometry, irq, p));

    /** Expect each interrupt's pages (both of them) to read `want(irq)` + `:<p>` in the guest. */
    function expectGuestSees(irqs: Iterable<number>, want: (irq: number) => string): void {
      const wrong: string[] = [];
      for (const irq of irqs) {
        for (const p of esb.geometry.pagesPerIrq === 2 ? ([0, 1] as const) : ([0] as const)) {
          const got = seen(irq, p);
          if (got !== `${want(irq)}:${p}`) wrong.push(`irq ${irq} page ${p}: guest read ${JSON.stringify(got)}, want ${JSON.stringify(`${want(irq)}:${p}`)}`);
        }
      }
      expect(wrong, wrong.slice(0, 5).join('\n')).to.deep.equal([]);
    }

    const range = (first: number, count: number): number[] => Array.from({ length: count }, (_, i) => first + i);

    it('reads every touched interrupt\'s new pages on its very next load after attach, attachRange and detach', () => {
      expectGuestSees([0, 41, 42, 43, NR_IRQS - 1], (irq) => `ipi:${irq}`);

      esb.attach(42, pt.pages(3));
      expectGuestSees([42], () => 'pt1:3');
      expectGuestSees([41, 43], (irq) => `ipi:${irq}`);

      esb.attachRange(100, 16, pt.pages(16, 16));
      expectGuestSees(range(100, 16), (irq) => `pt1:${irq - 100 + 16}`);
      expectGuestSees([99, 116], (irq) => `ipi:${irq}`);

      expect(esb.detach(42)).to.equal(true);
      expectGuestSees([42], () => 'ipi:42');

      expect(esb.detach(105)).to.equal(true); // splits the run
      expectGuestSees([105], () => 'ipi:105');
      expectGuestSees([104, 106], (irq) => `pt1:${irq - 100 + 16}`);

      esb.detachRange(100, 16);
      expectGuestSees(range(99, 18), (irq) => `ipi:${irq}`);
      expect(guest.memslotUpdates).to.equal(1);
    });

    it('sees 10,000 attach/detach cycles with 0 stale reads, the memslot registered once', function () {
      this.timeout(300_000);
      const cycles = 10_000;
      let stale = 0;
      const firstStale: string[] = [];
      /** One full stamp read per step, alternating trigger and management pages. */
      const check = (step: number, irq: number, want: string): void => {
        const p = (step & 1) as 0 | 1;
        const got = seen(irq, p);
        if (got !== `${want}:${p}`) {
          stale++;
          if (firstStale.length < 5) firstStale.push(`step ${step}, irq ${irq}: guest read ${JSON.stringify(got)}, want ${want}:${p}`);
        }
      };
      const t0 = performance.now();
      for (let i = 0; i < cycles; i++) {
        const irq = (i * 977) % NR_IRQS; // wander over the whole region
        const hostIrq = i % 64;
        esb.attach(irq, pt.pages(hostIrq));
        check(2 * i, irq, `pt1:${hostIrq}`);
        esb.detach(irq);
        check(2 * i + 1, irq, `ipi:${irq}`);
      }
      const ms = performance.now() - t0;
      console.log(`      ${cycles} attach+detach cycles (${2 * cycles} guest stamp reads) in ${ms.toFixed(0)} ms, ${stale} stale`);
      expect(firstStale, firstStale.join('\n')).to.deep.equal([]);
      expect(stale).to.equal(0);
      expect(guest.memslotUpdates).to.equal(1);
    });
  });
}
