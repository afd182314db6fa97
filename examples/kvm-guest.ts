/**
 * A real KVM guest watching its interrupt pages change during hot-plug (x86_64 with a usable
 * /dev/kvm). Run: `node dist/examples/kvm-guest.js`.
 *
 * The region is registered with KVM as the guest's one memslot, once. Then a device is plugged
 * and unplugged with xive-remap, and after each step the guest itself loads the trigger page of
 * each interrupt it cares about: it sees the new pages on its very next load, while the memslot is
 * never touched again.
 */
import { EsbController, esbOffset } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, KvmX86Guest } from 'xive-remap/native-stubs';

const why = KvmX86Guest.usable();
if (why !== null) {
  console.log(`kvm-guest: skipped: ${why}`);
  process.exit(0);
}

const xive = FakeXiveDevice.create({ nrIrqs: 1024 });
const esb = EsbController.open(xive);
const guest = KvmX86Guest.create({ memslot: esb.memslot }); // KVM_SET_USER_MEMORY_REGION, once
const watched = [31, 32, 33, 40];
const look = (step: string): void => {
  const seen = watched.map((irq) => `${irq}=${guest.readString(esbOffset(esb.geometry, irq, 0))}`);
  console.log(`${step.padEnd(34)} guest loads: ${seen.join('  ')}   (memslot registrations: ${guest.memslotUpdates})`);
};

const nic = FakePassthroughDevice.create({ nrIrqs: 8, id: 1 });
look('before hot-plug');
esb.attachRange(32, 2, nic.pages(0, 2));
look('plug: attachRange(32, 2, pt1 0-1)');
esb.attach(40, nic.pages(5));
look('plug: attach(40, pt1 5)');
esb.detach(32);
look('detach(32)');
esb.detachRange(0, 1024);
look('unplug: detachRange(0, 1024)');

guest.close();
esb.close();
nic.close();
xive.close();
