// Bring your own VM, on this host's real KVM: a VMM's VM fd handed to KvmVm.fromFd (and refused when
// it is anything else), memslots registered through it landing on the VMM's VM, a guest reading
// through the VMM's own memslot, and the caller's fds still working after the library's objects
// are closed. XiveKvmDevice.fromFd on the real kernel: every fd this host can make is refused,
// named. (The XIVE device itself is canned in xive-kvm.test.ts and real in the emulated POWER9.)
import { expect } from 'chai';
import { readdirSync, readlinkSync } from 'node:fs';
import { EsbController, XiveKvmDevice, esbOffset } from 'xive-remap';
import { KVM_CAP, KVM_DEV_TYPE, KvmSystem, KvmVm, MemslotTable, UserMemory } from 'xive-remap/kvm';
import { FakePassthroughDevice, FakeXiveDevice, KvmX86Guest, readStamp } from 'xive-remap/native-stubs';
import { MFD_CLOEXEC, realNative } from '../src/internal.js';
import { expectRemapError } from './helpers.js';
import { kvmUnusable } from './kvm-fixtures.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;
const fdPath = (fd: number): string => readlinkSync(`/proc/self/fd/${fd}`);

describe('KvmVm.fromFd and XiveKvmDevice.fromFd on any host (refusals before any ioctl)', () => {
  it('refuses a memfd, a closed fd and a non-fd with E_DEVICE_UNAVAILABLE naming what it is, leaking no fd', () => {
    const memfd = realNative.memfdCreate('not-a-vm', MFD_CLOEXEC);
    try {
      const before = openFds();
      const cases: [number, RegExp][] = [
        [memfd, new RegExp(`fd ${memfd} is /memfd:not-a-vm \\(deleted\\): a memfd; want a KVM VM fd`)],
        [987654, /fd 987654 cannot be duplicated \(EBADF/],
        [-1, /-1 is not a file descriptor/],
      ];
      for (const [fd, message] of cases) {
        expect(expectRemapError(() => KvmVm.fromFd(fd), 'E_DEVICE_UNAVAILABLE').message).to.match(message);
        const devErr = expectRemapError(() => XiveKvmDevice.fromFd(fd, { nrIrqs: 16 }), 'E_DEVICE_UNAVAILABLE');
        expect(devErr.message).to.match(/^XiveKvmDevice\.fromFd\(/);
      }
      expect(openFds(), 'fds leaked by refusals').to.equal(before);
      expect(fdPath(memfd), "the caller's memfd is untouched").to.equal('/memfd:not-a-vm (deleted)');
    } finally {
      realNative.close(memfd);
    }
  });
});

describe('KvmVm.fromFd on this host\'s KVM', function () {
  const why = kvmUnusable();
  before(function () {
    if (why) this.skip();
  });
  if (why) it(`skipped: ${why}`, () => undefined);

  /** The VMM's side: /dev/kvm and a VM it made with its own ioctls (through the KVM module). */
  let sys: KvmSystem;
  let vmmVm: KvmVm;
  beforeEach(() => {
    sys = KvmSystem.open();
    vmmVm = sys.createVm();
  });
  afterEach(() => {
    vmmVm.close();
    sys.close();
  });

  it('works on a duplicate, and closing it leaves the caller\'s VM fd open and working', () => {
    const before = openFds();
    const vm = KvmVm.fromFd(vmmVm.fd);
    expect(vm.fd).to.not.equal(vmmVm.fd);
    expect(fdPath(vm.fd)).to.equal('anon_inode:kvm-vm');
    expect(vm.checkExtension(KVM_CAP.USER_MEMORY)).to.be.greaterThan(0);
    vm.close();
    vm.close();
    expect(openFds(), 'the duplicate is closed, nothing else').to.equal(before);
    expect(vmmVm.closed).to.equal(false);
    expect(fdPath(vmmVm.fd)).to.equal('anon_inode:kvm-vm');
    expect(vmmVm.checkExtension(KVM_CAP.NR_MEMSLOTS), "an ioctl on the caller's fd after close").to.be.greaterThan(0);
  });

  it('registers memslots on the VMM\'s VM: the VMM\'s own overlapping registration is refused with EEXIST', () => {
    const mem = UserMemory.map(realNative, 0x10000n, 'test memory');
    const vm = KvmVm.fromFd(vmmVm.fd);
    try {
      const slots = MemslotTable.open(vm);
      const slot = slots.add({ guestPhysAddr: 0x1_0000_0000n, size: mem.length, userspaceAddr: mem.addr });
      // The same VM in the kernel: a second slot over the same guest range, through the VMM's own fd, collides.
      const err = expectRemapError(
        () => vmmVm.setUserMemoryRegion({ slot: slot.slot + 1, flags: 0, guestPhysAddr: 0x1_0000_0000n, memorySize: mem.length, userspaceAddr: mem.addr }),
        'E_KVM',
      );
      expect(err.message).to.match(/EEXIST/);
      slots.remove(slot.slot);
    } finally {
      vm.close();
      mem.close();
    }
  });

  it('refuses /dev/kvm, a vCPU fd and a KVM device fd, naming each', function () {
    const cases: [number, RegExp][] = [[sys.fd, /is \/dev\/kvm: the \/dev\/kvm system fd/]];
    const vcpu = vmmVm.createVcpu(0);
    cases.push([vcpu.fd, /is anon_inode:kvm-vcpu:0: a KVM vCPU fd/]);
    const vfio = vmmVm.canCreateDevice(KVM_DEV_TYPE.VFIO) ? vmmVm.createDevice(KVM_DEV_TYPE.VFIO) : undefined;
    if (vfio) cases.push([vfio.fd, /is anon_inode:kvm-vfio: the KVM VFIO pseudo-device/]);
    try {
      for (const [fd, message] of cases) {
        expect(expectRemapError(() => KvmVm.fromFd(fd), 'E_DEVICE_UNAVAILABLE').message).to.match(message);
        expect(expectRemapError(() => XiveKvmDevice.fromFd(fd, { nrIrqs: 16 }), 'E_DEVICE_UNAVAILABLE').message).to.match(message);
      }
      const vmErr = expectRemapError(() => XiveKvmDevice.fromFd(vmmVm.fd, { nrIrqs: 16 }), 'E_DEVICE_UNAVAILABLE');
      expect(vmErr.message).to.match(/anon_inode:kvm-vm: a KVM VM fd; want a KVM XIVE native device fd/);
    } finally {
      vfio?.close();
      vcpu.close();
    }
  });

  it('creates vCPUs on the VMM\'s VM (KVM_GET_VCPU_MMAP_SIZE asked of /dev/kvm once)', () => {
    const vm = KvmVm.fromFd(vmmVm.fd);
    try {
      const vcpu = vm.createVcpu(3);
      expect(fdPath(vcpu.fd)).to.equal('anon_inode:kvm-vcpu:3');
      vcpu.close();
    } finally {
      vm.close();
    }
  });
});

describe("A guest reading through the VMM's own memslot (real x86 KVM)", () => {
  const why = KvmX86Guest.usable();
  if (why) it(`skipped: ${why}`, () => undefined);
  else {
    it("KvmX86Guest on KvmVm.fromFd, the region registered once by the VMM: the guest's next load sees attach, attachRange, detach; close leaves the VMM's slot", () => {
      const sys = KvmSystem.open();
      const vmmVm = sys.createVm();
      const dev = FakeXiveDevice.create({ nrIrqs: 64 });
      const pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 1 });
      const esb = EsbController.open(dev);
      const vm = KvmVm.fromFd(vmmVm.fd);
      const slots = MemslotTable.open(vm);
      const region = slots.add({ guestPhysAddr: 4n << 30n, size: esb.memslot.size, userspaceAddr: esb.memslot.userspaceAddr });
      const guest = KvmX86Guest.create({ vm, slots, region });
      const sees = (irq: number): string => guest.readString(esbOffset(esb.geometry, irq, 0));
      try {
        expect(guest.slot).to.equal(region.slot);
        expect(sees(5)).to.equal('ipi:5:0');
        esb.attach(5, pt.pages(3));
        expect(sees(5)).to.equal('pt1:3:0');
        esb.attachRange(8, 4, pt.pages(4, 4));
        expect([8, 9, 10, 11, 12].map(sees)).to.deep.equal(['pt1:4:0', 'pt1:5:0', 'pt1:6:0', 'pt1:7:0', 'ipi:12:0']);
        esb.detach(5);
        esb.detachRange(8, 4);
        expect([5, 8, 11].map(sees)).to.deep.equal(['ipi:5:0', 'ipi:8:0', 'ipi:11:0']);
        expect(guest.memslotUpdates, 'the VMM registered the region once, and it was never touched again').to.equal(1);
      } finally {
        guest.close();
      }
      expect(slots.get(region.slot), "close() leaves the VMM's region slot registered").to.equal(region);
      expect(slots.slots.map((m) => m.slot), "the guest's code slot is gone").to.deep.equal([region.slot]);
      slots.remove(region.slot);
      vm.close();
      vmmVm.close();
      sys.close();
      esb.close();
      pt.close();
      dev.close();
    });

    it('refuses a region that is not in the given table', () => {
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const esb = EsbController.open(dev);
      const vm = KvmSystem.open();
      const own = vm.createVm();
      try {
        const slots = MemslotTable.open(own);
        const other = MemslotTable.open(own);
        const region = other.add({ guestPhysAddr: 4n << 30n, size: esb.memslot.size, userspaceAddr: esb.memslot.userspaceAddr });
        expect(() => KvmX86Guest.create({ vm: own, slots, region })).to.throw(RangeError, /registered in the given `slots`/);
        expect(() => KvmX86Guest.create({ region })).to.throw(RangeError, /registered in the given `slots`/);
        other.remove(region.slot);
      } finally {
        own.close();
        vm.close();
        esb.close();
        dev.close();
      }
    });
  }
});

describe('using', () => {
  it('disposes EsbController and PageSource at the end of the block', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 16 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 2 });
    let esbRef: EsbController | undefined;
    let srcRef: { closed: boolean } | undefined;
    {
      using esb = EsbController.open(dev);
      using src = pt.pages(1);
      esb.attach(3, src);
      esbRef = esb;
      srcRef = src;
      expect(readStamp(esb, 3)).to.equal('pt2:1:0');
    }
    expect(esbRef?.closed).to.equal(true);
    expect(srcRef?.closed).to.equal(true);
    pt.close();
    dev.close();
  });
});
