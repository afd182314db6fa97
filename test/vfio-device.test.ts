// The VFIO test harness (native-stubs/vfio-device.ts) off POWER: its struct layouts (table-driven),
// the order and numbers of its ioctls against a canned native layer with powerpc's encoding, what a
// failure leaves open, real eventfds, and KVM_IRQFD reaching this host's KVM (x86: refused without an
// in-kernel irqchip, which proves the number is KVM_IRQFD's; a wrong one would be ENOTTY).
import { writeSync } from 'node:fs';
import { expect } from 'chai';
import { NativeError, RemapError, errnoOf, errnoValue } from '../src/errors.js';
import { KvmSystem, kvmIoctls } from '../src/kvm/index.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import {
  VfioDevice,
  VFIO_IOMMU,
  createEventfd,
  decodeDeviceInfo,
  decodeIrqInfo,
  decodeRegionInfo,
  decodeSpaprTceInfo,
  drainEventfd,
  packIrqSet,
  packVfioArg,
  decodeEqEntries,
  packXiveEq,
  sourceConfigValue,
} from '../native-stubs/index.js';
import { kvmUnusable } from './kvm-fixtures.js';

describe('VFIO harness: struct layouts', () => {
  for (const le of [true, false]) {
    const u32 = (b: Uint8Array, at: number): number => (le ? Buffer.from(b).readUInt32LE(at) : Buffer.from(b).readUInt32BE(at));
    it(`packs argsz-first structs and vfio_irq_set (${le ? 'little' : 'big'}-endian)`, () => {
      const cases: [Uint8Array, number[]][] = [
        [packVfioArg(8, [], le), [8, 0]],
        [packVfioArg(32, [0, 7], le), [32, 0, 7, 0]],
        [packIrqSet(1, [9], le), [24, 4 | 32, 1, 0, 1, 9]], // DATA_EVENTFD | ACTION_TRIGGER, MSI, start 0, count 1, fd
        [packIrqSet(1, [], le), [20, 1 | 32, 1, 0, 0]], // DATA_NONE | ACTION_TRIGGER, count 0: off
        [packIrqSet(2, [5, 6], le), [28, 36, 2, 0, 2, 5, 6]],
      ];
      for (const [b, words] of cases) {
        expect(b.length).to.equal(words[0]);
        expect(words.map((_, i) => u32(b, 4 * i))).to.deep.equal(words);
      }
      expect(() => packVfioArg(8, [1, 2])).to.throw(RangeError, /no room/);
    });

    it(`decodes vfio_device_info, region_info, irq_info and spapr_tce_info (${le ? 'little' : 'big'}-endian)`, () => {
      const b = Buffer.alloc(32);
      const w32 = (at: number, v: number): void => void (le ? b.writeUInt32LE(v, at) : b.writeUInt32BE(v, at));
      const w64 = (at: number, v: bigint): void => void (le ? b.writeBigUInt64LE(v, at) : b.writeBigUInt64BE(v, at));
      [32, 3, 9, 5].forEach((v, i) => w32(4 * i, v));
      expect(decodeDeviceInfo(b, le)).to.deep.equal({ flags: 3, numRegions: 9, numIrqs: 5 });
      expect(decodeIrqInfo(b, le)).to.deep.equal({ flags: 3, index: 9, count: 5 });
      w64(16, 0x100000n);
      w64(24, 7n << 40n);
      expect(decodeRegionInfo(b, le)).to.deep.equal({ flags: 3, index: 9, size: 0x100000n, offset: 0x70000000000n });
      [32, 1, 0, 0x80000000].forEach((v, i) => w32(4 * i, v));
      w64(16, 0x40211000n);
      w32(24, 2);
      w32(28, 5);
      expect(decodeSpaprTceInfo(b, le)).to.deep.equal({ flags: 1, dma32WindowStart: 0, dma32WindowSize: 0x80000000, ddwPageSizes: 0x40211000n, ddwMaxDynamicWindows: 2, ddwLevels: 5 });
    });
  }
});

interface Call {
  fd: number;
  request: number;
  arg: number | bigint | Uint8Array | undefined;
}

/** A ppc64 native layer whose open/ioctl/close are scripted and recorded (no system call is made). */
function canned(fail?: { request: number; errno: string }): NativeLayer & { calls: Call[]; opened: string[]; closed: number[] } {
  const calls: Call[] = [];
  const opened: string[] = [];
  const closed: number[] = [];
  const t = kvmIoctls('ppc64');
  let next = 40;
  return {
    ...realNative,
    arch: 'ppc64',
    pageSize: 65536,
    calls,
    opened,
    closed,
    open(path: string) {
      opened.push(path);
      return next++;
    },
    close(fd: number) {
      closed.push(fd);
    },
    ioctl(fd: number, request: number, arg?: number | bigint | Uint8Array) {
      calls.push({ fd, request, arg });
      if (fail && request === fail.request) throw new NativeError('ioctl', errnoValue(fail.errno));
      if (request === t.VFIO_CHECK_EXTENSION) return 1;
      if (request === t.VFIO_GROUP_GET_STATUS && arg instanceof Uint8Array) new DataView(arg.buffer).setUint32(4, 1, true); // viable
      if (request === t.VFIO_GROUP_GET_DEVICE_FD) return next++;
      return 0;
    },
  };
}

describe('VFIO harness: VfioDevice.open (canned ppc64 native layer)', () => {
  const t = kvmIoctls('ppc64');

  it('opens container, group and device in the order VFIO needs, with the powerpc numbers and sPAPR TCE v2', () => {
    const native = canned();
    const dev = VfioDevice.open({ group: 0, bdf: '0000:01:00.0', native });
    expect(native.opened).to.deep.equal(['/dev/vfio/vfio', '/dev/vfio/0']);
    expect(native.calls.map((c) => `0x${c.request.toString(16)}`)).to.deep.equal(
      ['VFIO_GET_API_VERSION', 'VFIO_CHECK_EXTENSION', 'VFIO_GROUP_GET_STATUS', 'VFIO_GROUP_SET_CONTAINER', 'VFIO_SET_IOMMU', 'VFIO_IOMMU_SPAPR_TCE_GET_INFO', 'VFIO_GROUP_GET_DEVICE_FD', 'VFIO_DEVICE_GET_INFO'].map(
        (n) => `0x${(t[n as keyof typeof t] as number).toString(16)}`,
      ),
    );
    expect(native.calls[0]?.request).to.equal(0x20003b64);
    const [container, group] = [40, 41];
    expect(native.calls.map((c) => c.fd)).to.deep.equal([container, container, group, group, container, container, group, 42]);
    expect(native.calls[1]?.arg).to.equal(VFIO_IOMMU.SPAPR_TCE_V2);
    expect(native.calls[4]?.arg).to.equal(VFIO_IOMMU.SPAPR_TCE_V2);
    expect(Buffer.from(native.calls[3]?.arg as Uint8Array).readInt32LE(0)).to.equal(container);
    expect(Buffer.from(native.calls[6]?.arg as Uint8Array).toString('latin1')).to.equal('0000:01:00.0\0');
    expect([dev.iommu, dev.apiVersion, dev.fd]).to.deep.equal([7, 0, 42]);
    dev.close();
    dev.close();
    expect(native.closed).to.deep.equal([42, 41, 40]);
    expect(() => dev.fd).to.throw(RemapError, /closed/);
  });

  it('names the step that failed and closes what it opened', () => {
    const native = canned({ request: t.VFIO_SET_IOMMU as number, errno: 'EINVAL' });
    let err: unknown;
    try {
      VfioDevice.open({ group: 3, bdf: '0000:01:00.0', native });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RemapError).with.property('code', 'E_DEVICE_UNAVAILABLE');
    expect((err as Error).message).to.match(/VFIO_SET_IOMMU\(7\) on fd 40 failed/);
    expect(errnoOf((err as Error).cause)).to.equal(errnoValue('EINVAL'));
    expect(native.closed).to.deep.equal([41, 40]);
  });

  it('refuses a group that is not viable, and bad arguments before any system call', () => {
    const native = canned();
    native.ioctl = (fd, request, arg) => {
      native.calls.push({ fd, request, arg });
      return request === t.VFIO_CHECK_EXTENSION ? 1 : 0; // status flags stay 0
    };
    expect(() => VfioDevice.open({ group: 0, bdf: '0000:01:00.0', native })).to.throw(RemapError, /group 0 is not viable/);
    expect(native.closed).to.deep.equal([41, 40]);
    const quiet = canned();
    expect(() => VfioDevice.open({ group: -1, bdf: '0000:01:00.0', native: quiet })).to.throw(RangeError);
    expect(() => VfioDevice.open({ group: 0, bdf: '01:00.0', native: quiet })).to.throw(RangeError, /not a PCI address/);
    expect(quiet.opened).to.deep.equal([]);
  });

  it('refuses region accesses outside the region before any read or write, and everything after close()', () => {
    const native = canned();
    const writes: bigint[] = [];
    native.pwrite = (_fd, data, offset) => (writes.push(offset), data.byteLength);
    const t64 = kvmIoctls('ppc64');
    const ioctl = native.ioctl.bind(native);
    native.ioctl = (fd, request, arg) => {
      const r = ioctl(fd, request, arg);
      if (request === t64.VFIO_DEVICE_GET_REGION_INFO && arg instanceof Uint8Array) {
        const v = new DataView(arg.buffer);
        v.setBigUint64(16, 0x100n, true); // a 256-byte region ...
        v.setBigUint64(24, 7n << 40n, true); // ... at the config region's file offset
      }
      return r;
    };
    const dev = VfioDevice.open({ group: 0, bdf: '0000:01:00.0', native });
    for (const [offset, length] of [[-4, 4], [0x100, 4], [0xfe, 4], [1.5, 2], [0, 0]] as const) {
      expect(() => dev.read(7, offset, length), `${offset}+${length}`).to.throw(RangeError, /outside region 7/);
      if (length > 0) expect(() => dev.write(7, offset, new Uint8Array(length)), `${offset}+${length}`).to.throw(RangeError, /outside region 7/);
    }
    expect(writes).to.deep.equal([]);
    dev.write(7, 4, new Uint8Array(2));
    expect(writes).to.deep.equal([(7n << 40n) + 4n]);
    dev.close();
    expect(() => dev.regionInfo(0)).to.throw(RemapError, /closed/);
    expect(() => dev.setMsi([3])).to.throw(RemapError, /closed/);
  });

  it('says why VFIO is not usable on a host without /dev/vfio/vfio', function () {
    const why = VfioDevice.usable();
    if (why === null) this.skip(); // this host has VFIO: nothing to check here
    expect(why).to.match(/no \/dev\/vfio\/vfio/);
  });
});

describe('VFIO harness: eventfd and KVM_IRQFD on this host', () => {
  it('creates a non-blocking eventfd through the native layer; drainEventfd reads and resets its counter', () => {
    const fd = createEventfd();
    try {
      expect(drainEventfd(fd)).to.equal(0n);
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(3n); // an eventfd counter is host-endian; this host is little-endian
      writeSync(fd, one);
      writeSync(fd, one);
      expect(drainEventfd(fd)).to.equal(6n);
      expect(drainEventfd(fd)).to.equal(0n);
    } finally {
      realNative.close(fd);
    }
  });

  it('KvmVm.assignIrqfd reaches KVM_IRQFD (x86 without an irqchip: EINVAL, not ENOTTY)', function () {
    const why = kvmUnusable();
    if (why !== null || realNative.arch !== 'x64') {
      console.log(`      skipped: ${why ?? `KVM_IRQFD's refusal is checked on x86_64 only (this is ${realNative.arch})`}`);
      this.skip();
    }
    const sys = KvmSystem.open();
    const vm = sys.createVm();
    const efd = createEventfd();
    try {
      let err: unknown;
      try {
        vm.assignIrqfd(efd, 5);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError).with.property('code', 'E_KVM');
      expect((err as Error).message).to.match(new RegExp(`KVM_IRQFD eventfd ${efd} -> gsi 5 on VM fd \\d+ failed: EINVAL`));
      expect(() => vm.assignIrqfd(efd, -1)).to.throw(RangeError, /gsi -1/);
    } finally {
      realNative.close(efd);
      vm.close();
      sys.close();
    }
  });
});

describe('XIVE event queue harness: SOURCE_CONFIG values, kvm_ppc_xive_eq, queue entries', () => {
  it('encodes SOURCE_CONFIG: priority bits 0-2, server from bit 3, masked bit 32, EISN from bit 33', () => {
    const cases: [number, number, number, boolean, bigint][] = [
      [0, 5, 0x1234, false, 5n | (0x1234n << 33n)],
      [0, 5, 0, true, 5n | (1n << 32n)],
      [3, 6, 1, false, 6n | (3n << 3n) | (1n << 33n)],
      [0, 0, 0x7fffffff, false, 0x7fffffffn << 33n],
    ];
    for (const [server, prio, eisn, masked, want] of cases) expect(sourceConfigValue(server, prio, eisn, masked), `${server}/${prio}/${eisn}/${masked}`).to.equal(want);
    expect(() => sourceConfigValue(0, 8, 0)).to.throw(RangeError, /priority 8/);
    expect(() => sourceConfigValue(0, 5, 2 ** 31)).to.throw(RangeError, /EISN/);
  });

  it('packs kvm_ppc_xive_eq as u32 flags, u32 qshift, u64 qaddr, u32 qtoggle, u32 qindex, 40 bytes of padding', () => {
    for (const le of [true, false]) {
      const b = Buffer.from(packXiveEq({ flags: 1, qshift: 16, qaddr: 0x10000n, qtoggle: 1, qindex: 3 }, le));
      const u32 = (at: number): number => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
      expect([b.length, u32(0), u32(4), u32(16), u32(20)]).to.deep.equal([64, 1, 16, 1, 3]);
      expect(le ? b.readBigUInt64LE(8) : b.readBigUInt64BE(8)).to.equal(0x10000n);
      expect(b.subarray(24).every((x) => x === 0)).to.equal(true);
    }
  });

  it('reads queue entries (big-endian words, generation bit 31) up to the first unwritten word', () => {
    const page = Buffer.alloc(32);
    expect(decodeEqEntries(page)).to.deep.equal([]);
    page.writeUInt32BE(0x80001234, 0);
    page.writeUInt32BE(0x80000020, 4);
    page.writeUInt32BE(0x00000005, 8); // generation 0: not written on this pass
    page.writeUInt32BE(0x80000007, 12);
    expect(decodeEqEntries(page)).to.deep.equal([
      { generation: 1, eisn: 0x1234 },
      { generation: 1, eisn: 0x20 },
    ]);
    expect(decodeEqEntries(page, 1)).to.have.length(1);
  });
});
