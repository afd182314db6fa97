/**
 * Hot-plug on any Linux, with the fake devices: what a VMM's device-hotplug path does with
 * xive-remap. Run: `node dist/examples/mock-hotplug.js`.
 *
 * 1. open the region once (the memslot a VMM registers with KVM_SET_USER_MEMORY_REGION, once);
 * 2. plug a device: its MSI block with attachRange (one mmap), a lone interrupt with attach;
 * 3. show what backs each touched guest interrupt, read back through the region;
 * 4. unplug it: detachRange, detach — the IPI pages are back;
 * 5. audit the region against /proc/self/maps, close.
 */
import { EsbController, PageSource } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, readStamp } from 'xive-remap/native-stubs';

const xive = FakeXiveDevice.create({ nrIrqs: 4096 });
const esb = EsbController.open(xive);
const { userspaceAddr, size } = esb.memslot;
console.log(`region at 0x${userspaceAddr.toString(16)}, ${size >> 20n} MiB: register it as one memslot, once`);

// A passthrough device: 32 host interrupts. Its pages could equally come from a VFIO fd:
// PageSource.fromFd(vfioFd, regionOffset, count, { length: regionSize }).
const nic = FakePassthroughDevice.create({ nrIrqs: 32, id: 1 });
esb.attachRange(256, 8, nic.pages(0, 8)); // MSI-X vectors 0-7 -> guest interrupts 256-263
esb.attach(300, PageSource.fromFd(nic.fd, 20n * esb.geometry.bytesPerIrq, 1, { name: 'nic-fd' }));

for (const irq of [255, 256, 263, 300, 301]) {
  const b = esb.backingOf(irq);
  const what = b.kind === 'ipi' ? 'ipi' : `passthrough ${b.source}`;
  console.log(`guest irq ${irq}: ${what.padEnd(22)} trigger page reads ${readStamp(esb, irq, 0)}, management page ${readStamp(esb, irq, 1)}`);
}

console.log(`unplug: restored ${esb.detachRange(256, 8)} + ${esb.detach(300) ? 1 : 0} interrupts`);
console.log(`guest irq 256 reads ${readStamp(esb, 256)}; audit: ${JSON.stringify(esb.audit())}`);
esb.close();
nic.close();
xive.close();
