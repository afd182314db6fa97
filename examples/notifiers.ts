// Notifiers and pins on the fake devices: a migration tracker that mirrors the passthrough runs,
// a backend that holds irq 100's trigger page, and a veto. Run: npm run build && node dist/examples/notifiers.js
import { EsbController, RemapError, type MappingEvent, type Pin } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStampAt } from 'xive-remap/native-stubs';

const dev = FakeXiveDevice.create({ nrIrqs: 1024 });
const pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 1 });
const esb = EsbController.open(dev);
esb.attachRange(64, 4, pt.pages(0, 4)); // before any notifier: the tracker learns it by replay

const show = (e: MappingEvent): string =>
  `${e.kind} ${e.first}+${e.count} ${e.backing.kind === 'ipi' ? 'ipi' : e.backing.source} (${e.reason})`;

// A migration tracker: which interrupts are passthrough, kept right by map/unmap alone.
const passthrough = new Set<number>();
esb.register(
  {
    name: 'tracker',
    handles: { pagesPerIrq: [1, 2] }, // what it understands; a region outside it is refused
    unmap(e) {
      console.log(`tracker: ${show(e)}`);
      for (let i = e.first; i < e.first + e.count; i++) passthrough.delete(i);
    },
    map(e) {
      console.log(`tracker: ${show(e)}`);
      if (e.backing.kind === 'passthrough') for (let i = e.first; i < e.first + e.count; i++) passthrough.add(i);
    },
  },
  { replay: true },
);

// A backend that was handed irq 100's trigger page: it pins it, lets go when told, takes the new one.
let trigger: Pin | undefined;
const backend = esb.register({
  name: 'backend',
  handles: { pagesPerIrq: [2] },
  filter: { irqs: { first: 100, count: 1 } },
  unmap() {
    trigger?.unpin(); // must happen before returning, or the change is refused with E_PINNED
  },
  map() {
    trigger = esb.pin(100, backend);
    console.log(`backend: irq 100's trigger page now reads ${readStampAt(trigger.addr)}`);
  },
  destroy() {
    console.log(`backend: region closing, pin held: ${trigger?.held}`);
  },
});
trigger = esb.pin(100, backend);
console.log(`backend: pinned 0x${trigger.addr.toString(16)}, reads ${readStampAt(trigger.addr)}`);

esb.attach(100, pt.pages(9)); // tracker: unmap ipi, map pt1:9; backend: unpin, re-pin

// A component that refuses: the detach is rolled back before anything is mapped.
const guard = esb.register({
  name: 'guard',
  handles: { pagesPerIrq: [2] },
  unmap() {
    throw new Error('migration in progress');
  },
  map() {},
});
try {
  esb.detach(64);
} catch (e) {
  console.log(`detach(64): ${(e as RemapError).code}, ${(e as RemapError).cause}; irq 64 is ${esb.backingOf(64).kind}`);
}
guard.dispose();

console.log(`detachRange: ${esb.detachRange(0, 1024)} restored`);
console.log(`tracker sees ${passthrough.size} passthrough interrupts; stats ${JSON.stringify(esb.stats())}`);
esb.close(); // every notifier hears destroy, then all are dropped
pt.close();
dev.close();
