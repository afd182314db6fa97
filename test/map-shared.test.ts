/**
 * The library maps devices MAP_SHARED only (issue 15).
 *
 * A private mapping of the KVM XIVE device is a copy-on-write mapping of a VM_PFNMAP vma: on kernels
 * without kernel/series-6.1/0001 its first fault BUG()s the host (vmf_insert_pfn_prot). And a private
 * mapping of any page source would give the guest a copy, not the device's pages. So every mmap the
 * library makes of a file — the IPI range at open, each attach, attachRange, detach and detachRange —
 * must ask for MAP_SHARED and never MAP_PRIVATE. Checked twice: on the flags of
 * every mmap, seen through a recording native layer over the real one, and on what the kernel made
 * of them, the `s` in /proc/self/maps of the region's VMAs and of an overlay.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { EsbController } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice } from 'xive-remap/native-stubs';
import { MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, mapsIn, parseMaps, realNative, type NativeLayer } from '../src/internal.js';

interface MmapCall {
  readonly flags: number;
  readonly fd: number;
  readonly offset: bigint;
}

/** The real native layer, with every mmap's flags, fd and offset recorded. */
function recording(): { native: NativeLayer; mmaps: MmapCall[] } {
  const mmaps: MmapCall[] = [];
  const native: NativeLayer = {
    ...realNative,
    mmap(addr, length, prot, flags, fd, offset) {
      mmaps.push({ flags, fd, offset });
      return realNative.mmap(addr, length, prot, flags, fd, offset);
    },
  };
  return { native, mmaps };
}

/** The /proc/self/maps entries of the controller's region. */
function regionMaps(esb: EsbController): ReturnType<typeof parseMaps> {
  const { userspaceAddr, size } = esb.memslot;
  return mapsIn(parseMaps(readFileSync('/proc/self/maps', 'utf8')), userspaceAddr, userspaceAddr + size);
}

describe('the library maps devices MAP_SHARED only', () => {
  it('every mmap of a file from open to close asks for MAP_SHARED, never MAP_PRIVATE', () => {
    const { native, mmaps } = recording();
    const dev = FakeXiveDevice.create({ nrIrqs: 64, native });
    const pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 1, native });
    const esb = EsbController.open(dev, { native });
    try {
      esb.attach(5, pt.pages(3));
      esb.attachRange(20, 4, pt.pages(8, 4));
      expect(esb.detach(5)).to.equal(true);
      esb.detachRange(20, 4);
      esb.attach(7, pt.pages(1));
    } finally {
      esb.close();
      pt.close();
      dev.close();
    }
    // Anonymous mappings (reservations, the fakes' scratch space) carry no device: left out.
    const fileMaps = mmaps.filter((m) => (m.flags & MAP_ANONYMOUS) === 0 && m.fd >= 0);
    // open, 3 attaches, 2 detaches (close unmaps): at least 6, or the test saw nothing.
    expect(fileMaps.length).to.be.at.least(6);
    for (const m of fileMaps) {
      const what = `mmap of fd ${m.fd} at offset 0x${m.offset.toString(16)}, flags 0x${m.flags.toString(16)}`;
      expect(m.flags & MAP_SHARED, what).to.equal(MAP_SHARED);
      expect(m.flags & MAP_PRIVATE, what).to.equal(0);
    }
  });

  it("the kernel shows the region and an overlay as shared ('s' in /proc/self/maps)", () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 64 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 16, id: 2 });
    const esb = EsbController.open(dev);
    try {
      const before = regionMaps(esb);
      expect(before.length).to.be.at.least(1);
      for (const e of before) expect(e.perms, `${e.path} at 0x${e.start.toString(16)}`).to.match(/^...s$/);

      esb.attach(9, pt.pages(4));
      const after = regionMaps(esb);
      const ptAddr = esb.memslot.userspaceAddr + 9n * esb.geometry.bytesPerIrq;
      const overlay = after.find((e) => e.start === ptAddr);
      expect(overlay, 'a VMA starting at interrupt 9').to.not.equal(undefined);
      expect(after.length).to.equal(3);
      for (const e of after) expect(e.perms, `${e.path} at 0x${e.start.toString(16)}`).to.match(/^...s$/);
    } finally {
      esb.close();
      pt.close();
      dev.close();
    }
  });
});
