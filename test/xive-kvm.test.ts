// XiveKvmDevice off POWER: the encodings and attribute values it sends, the contract probe's
// decision table (a native layer that wraps the real one and answers the probe's mmap), the whole
// open/close flow against a canned ppc64 native layer (vfio-ioctls style: ioctls answered from a
// script, memory real), and what open says on this host.
import { expect } from 'chai';
import { arch as osArch } from 'node:os';
import { EsbController, NativeError, XiveKvmDevice, formatPq, type Pq } from 'xive-remap';
import {
  KVM_CAP,
  KVM_DEV_XIVE,
  KVM_XIVE_ESB_PAGE_OFFSET,
  KvmSystem,
  XIVE_ESB,
  encodeSourceState,
  kvmIoctls,
  probeXiveContract,
  xiveEsbFileOffset,
  xiveGeometry,
} from 'xive-remap/kvm';
import { errnoValue } from '../src/errors.js';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
  realNative,
  type NativeLayer,
} from '../src/native/index.js';
import { expectRemapError } from './helpers.js';

const PPC = kvmIoctls('ppc64');
const PAGE64K = 65536;
const KVM_FD = 100;
const VM_FD = 101;
const DEV_FD = 102;
/** Fds the canned process holds that are not the XIVE device: a memfd, the XICS-on-XIVE device. */
const MEMFD_FD = 90;
const XICS_ON_XIVE_FD = 91;

interface MmapCall {
  addr: bigint;
  length: bigint;
  prot: number;
  flags: number;
  fd: number;
  offset: bigint;
}

/** How the canned kernel answers the probe's mmap (interrupt 1's pages at their own offset). */
type ProbeAnswer = 'EINVAL' | 'ok' | 'EACCES' | 'ENODEV' | 'ENOMEM';

function answerProbe(answer: ProbeAnswer, call: MmapCall, real: () => bigint): bigint {
  if (answer === 'ok') return real();
  throw new NativeError('mmap', errnoValue(answer), `fd ${call.fd} offset 0x${call.offset.toString(16)}`);
}

/** What the canned kernel knows and what it was asked. */
interface Canned extends NativeLayer {
  readonly ioctls: { fd: number; request: number; group?: number; attr?: bigint; value?: bigint; type?: number }[];
  readonly mmaps: MmapCall[];
  readonly closed: number[];
  readonly loads: bigint[];
  /** Number of peeks/pokes/loads made into device memory (never, for the probe). */
  esbTouches: number;
}

/**
 * A ppc64 KVM with 64 KiB pages, as a canned native layer: /dev/kvm is fd 100, the VM 101, the XIVE
 * device 102, dups from 103. Memory (the attribute scratch page, the region) is real anonymous memory.
 */
function cannedPpc(opts: { noKvm?: boolean; xiveCap?: number; probe?: ProbeAnswer; createDevice?: string; load?: bigint } = {}): Canned {
  let nextDup = 103;
  const devFds = new Set([DEV_FD]);
  // What /proc/self/fd says each open fd is; a dup inherits its original's name.
  const names = new Map<number, string>([
    [KVM_FD, '/dev/kvm'],
    [VM_FD, 'anon_inode:kvm-vm'],
    [DEV_FD, 'anon_inode:kvm-xive-native'],
    [MEMFD_FD, '/memfd:not-a-device (deleted)'],
    [XICS_ON_XIVE_FD, 'anon_inode:kvm-xive'],
  ]);
  const realMaps = new Map<bigint, bigint>();
  const c: Canned = {
    ...realNative,
    arch: 'ppc64',
    pageSize: PAGE64K,
    ioctls: [],
    mmaps: [],
    closed: [],
    loads: [],
    esbTouches: 0,
    open(path) {
      if (opts.noKvm) throw new NativeError('open', errnoValue('ENOENT'), path);
      return KVM_FD;
    },
    close(fd) {
      c.closed.push(fd);
      if (fd > DEV_FD) names.delete(fd); // the canned kernel's own fds stay nameable after a test "closes" them
    },
    dupCloexec(fd) {
      const name = names.get(fd);
      if (name === undefined) throw new NativeError('fcntl', errnoValue('EBADF'));
      if (devFds.has(fd)) devFds.add(nextDup);
      names.set(nextDup, name);
      return nextDup++;
    },
    fdPath(fd) {
      const name = names.get(fd);
      if (name === undefined) throw new NativeError('readlink', errnoValue('EBADF'));
      return name;
    },
    ioctl(fd, request, arg) {
      const buf = arg instanceof Uint8Array ? Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength) : undefined;
      const rec: Canned['ioctls'][number] = { fd, request };
      c.ioctls.push(rec);
      switch (request) {
        case PPC.KVM_GET_API_VERSION:
          return 12;
        case PPC.KVM_CHECK_EXTENSION:
          return Number(arg) === KVM_CAP.PPC_IRQ_XIVE ? (opts.xiveCap ?? 1) : Number(arg) === KVM_CAP.NR_MEMSLOTS ? 512 : 1;
        case PPC.KVM_GET_VCPU_MMAP_SIZE:
          return PAGE64K;
        case PPC.KVM_CREATE_VM:
          return VM_FD;
        case PPC.KVM_CREATE_DEVICE: {
          rec.type = buf?.readUInt32LE(0);
          if (opts.createDevice) throw new NativeError('ioctl', errnoValue(opts.createDevice));
          buf?.writeUInt32LE(DEV_FD, 4);
          return 0;
        }
        case PPC.KVM_SET_DEVICE_ATTR: {
          if (!buf) throw new NativeError('ioctl', errnoValue('EFAULT'));
          rec.group = buf.readUInt32LE(4);
          rec.attr = buf.readBigUInt64LE(8);
          const addr = buf.readBigUInt64LE(16);
          // The kernel reads the value at the time of the call: so does the script.
          rec.value = rec.group === KVM_DEV_XIVE.GRP_CTRL ? BigInt(realNative.peek(addr, 4).readUInt32LE(0)) : realNative.peek(addr, 8).readBigUInt64LE(0);
          return 0;
        }
        default:
          throw new NativeError('ioctl', errnoValue('ENOTTY'));
      }
    },
    mmap(addr, length, prot, flags, fd, offset) {
      const call = { addr, length, prot, flags, fd, offset };
      if (fd === -1) return realNative.mmap(addr, length, prot, flags, fd, offset); // scratch pages
      c.mmaps.push(call);
      if (!devFds.has(fd)) throw new NativeError('mmap', errnoValue('EBADF'));
      // Anonymous memory stands in for the device's pages; MAP_FIXED (an overlay) lands where asked.
      const real = (): bigint => {
        const a = realNative.mmap(flags & MAP_FIXED ? addr : 0n, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0n);
        realMaps.set(a, length);
        return a;
      };
      const pg = BigInt(PAGE64K);
      if (offset === 4n * pg) return real(); // the whole ESB range from interrupt 0: always fine
      if (offset === 6n * pg && !(flags & MAP_FIXED)) return answerProbe(opts.probe ?? 'EINVAL', call, real);
      if (opts.probe === 'ok' && offset > 4n * pg) return real(); // a per-irq-offsets kernel maps any interrupt
      throw new NativeError('mmap', errnoValue('EINVAL'));
    },
    munmap(addr, length) {
      realMaps.delete(addr);
      realNative.munmap(addr, length);
    },
    loadBe64(addr) {
      c.esbTouches++;
      c.loads.push(addr);
      return opts.load ?? 0n;
    },
  };
  return c;
}

const requestName = (r: number): string => Object.entries(PPC).find(([k, v]) => k !== 'arch' && v === r)?.[0] ?? `0x${r.toString(16)}`;

describe('XiveKvmDevice: encodings and layout (pure)', () => {
  it('uses the powerpc ioctl numbers for the device ioctls (3 direction bits, 13 size bits)', () => {
    expect(PPC.KVM_CREATE_DEVICE).to.equal(0xc00caee0); // _IOWR(KVMIO, 0xe0, struct kvm_create_device)
    expect(PPC.KVM_SET_DEVICE_ATTR).to.equal(0x8018aee1); // _IOW(KVMIO, 0xe1, struct kvm_device_attr)
    expect(PPC.KVM_HAS_DEVICE_ATTR).to.equal(0x8018aee3);
    expect(PPC.KVM_CHECK_EXTENSION).to.equal(0x2000ae03);
    expect(kvmIoctls('x64').KVM_SET_DEVICE_ATTR).to.equal(0x4018aee1); // the generic layout differs
  });

  it('names the attribute groups and ESB load offsets of the uapi headers', () => {
    expect(KVM_DEV_XIVE).to.deep.include({ GRP_CTRL: 1, RESET: 1, EQ_SYNC: 2, NR_SERVERS: 3, GRP_SOURCE: 2, GRP_SOURCE_CONFIG: 3, GRP_EQ_CONFIG: 4, GRP_SOURCE_SYNC: 5 });
    expect(XIVE_ESB).to.deep.equal({ GET: 0x800, SET_PQ_00: 0xc00, SET_PQ_01: 0xd00, SET_PQ_10: 0xe00, SET_PQ_11: 0xf00 });
    expect(([0, 1, 2, 3] as Pq[]).map(formatPq)).to.deep.equal(['00', '01', '10', '11']);
  });

  it('packs the KVM_DEV_XIVE_GRP_SOURCE value: bit 0 level-sensitive, bit 1 asserted', () => {
    expect(encodeSourceState()).to.equal(0n);
    expect(encodeSourceState({ levelSensitive: true })).to.equal(1n);
    expect(encodeSourceState({ levelSensitive: true, asserted: true })).to.equal(3n);
    expectRemapError(() => encodeSourceState({ asserted: true }), 'E_SOURCE');
  });

  it('lays interrupts out two host pages each from page offset 4: esbShift 17 on 64 KiB pages, 13 on 4 KiB', () => {
    const g = xiveGeometry(PAGE64K);
    expect(g).to.deep.include({ esbShift: 17, pagesPerIrq: 2, esbPageSize: 0x10000n, bytesPerIrq: 0x20000n, hostPageSize: 0x10000n });
    expect(xiveGeometry(4096)).to.deep.include({ esbShift: 13, bytesPerIrq: 0x2000n });
    expect(KVM_XIVE_ESB_PAGE_OFFSET).to.equal(4);
    expect(xiveEsbFileOffset(g, 0)).to.equal(0x40000n);
    expect(xiveEsbFileOffset(g, 1)).to.equal(0x60000n); // page 6: where the probe maps
    expect(xiveEsbFileOffset(g, (1 << 20) - 1)).to.equal(0x40000n + 0xfffffn * 0x20000n);
    expectRemapError(() => xiveGeometry(16384), 'E_GEOMETRY');
  });

  it('reads 8 bytes big-endian in one load through the native layer (loadBe64)', () => {
    const ps = BigInt(realNative.pageSize);
    const page = realNative.mmap(0n, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
    try {
      realNative.poke(page + 8n, Uint8Array.from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0e]));
      expect(realNative.loadBe64?.(page + 8n)).to.equal(0x010203040506070en);
      expect(() => realNative.loadBe64?.(page + 4n)).to.throw(RangeError, /not 8-byte aligned/);
    } finally {
      realNative.munmap(page, ps);
    }
  });
});

describe('XiveKvmDevice: the contract probe never touches an ESB page', () => {
  /** The real native layer, with the probe's mmap answered as the table says and every access recorded. */
  function wrapped(answer: ProbeAnswer, probeOffset: bigint): { native: NativeLayer; mmaps: MmapCall[]; munmaps: [bigint, bigint][]; touches: () => number } {
    const mmaps: MmapCall[] = [];
    const munmaps: [bigint, bigint][] = [];
    let touches = 0;
    const native: NativeLayer = {
      ...realNative,
      mmap(addr, length, prot, flags, fd, offset) {
        const call = { addr, length, prot, flags, fd, offset };
        mmaps.push(call);
        const real = (): bigint => realNative.mmap(addr, length, prot, flags, fd, offset);
        return offset === probeOffset ? answerProbe(answer, call, real) : real();
      },
      munmap(addr, length) {
        munmaps.push([addr, length]);
        realNative.munmap(addr, length);
      },
      peek(addr, length) {
        touches++;
        return realNative.peek(addr, length);
      },
      poke(addr, data) {
        touches++;
        realNative.poke(addr, data);
      },
      loadBe64(addr) {
        touches++;
        return realNative.loadBe64?.(addr) ?? 0n;
      },
    };
    return { native, mmaps, munmaps, touches: () => touches };
  }

  const g = xiveGeometry(realNative.pageSize);
  const probeOffset = xiveEsbFileOffset(g, 1);
  let fd = -1;
  beforeEach(() => {
    // A stand-in device file long enough for interrupt 1's pages, so the "success" rows really map.
    fd = realNative.memfdCreate('xive-probe-test', MFD_CLOEXEC);
    realNative.ftruncate(fd, probeOffset + g.bytesPerIrq);
  });
  afterEach(() => realNative.close(fd));

  const table: { answer: ProbeAnswer; contract?: string; error?: RegExp }[] = [
    { answer: 'EINVAL', contract: 'fixed-offset' },
    { answer: 'ok', contract: 'per-irq-offsets' },
    { answer: 'EACCES', error: /EACCES.*contract.*unknown/ },
    { answer: 'ENODEV', error: /ENODEV/ },
    { answer: 'ENOMEM', error: /ENOMEM/ },
  ];
  for (const row of table) {
    it(`mmap of interrupt 1's pages answering ${row.answer} → ${row.contract ?? 'E_DEVICE_UNAVAILABLE'}`, () => {
      const w = wrapped(row.answer, probeOffset);
      if (row.contract) {
        expect(probeXiveContract(w.native, fd, g)).to.equal(row.contract);
      } else {
        const err = expectRemapError(() => probeXiveContract(w.native, fd, g), 'E_DEVICE_UNAVAILABLE');
        expect(err.message).to.match(row.error as RegExp);
        expect(err.cause).to.be.instanceOf(NativeError);
      }
      // One trial mmap: a fresh address, no MAP_FIXED, interrupt 1's two pages at their own offset.
      expect(w.mmaps).to.deep.equal([{ addr: 0n, length: g.bytesPerIrq, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd, offset: probeOffset }]);
      expect((w.mmaps[0]?.flags ?? MAP_FIXED) & MAP_FIXED).to.equal(0);
      expect(w.touches(), 'loads or stores made by the probe').to.equal(0);
      if (row.answer === 'ok') {
        // Unmapped at once, and really gone.
        expect(w.munmaps).to.have.length(1);
        const [addr, len] = w.munmaps[0] as [bigint, bigint];
        expect(len).to.equal(g.bytesPerIrq);
        expect(realNative.readMaps().some((m) => m.start <= addr && addr < m.end)).to.equal(false);
      } else {
        expect(w.munmaps).to.deep.equal([]);
      }
    });
  }
});

describe('XiveKvmDevice.open on a canned ppc64 KVM', () => {
  it('creates a VM and a type-9 device, sets NR_SERVERS as a u32, probes the contract, and closes what it made', () => {
    const n = cannedPpc();
    const dev = XiveKvmDevice.open({ nrIrqs: 16, nrServers: 8, native: n });
    expect(n.ioctls.map((c) => requestName(c.request))).to.deep.equal([
      'KVM_GET_API_VERSION',
      'KVM_CHECK_EXTENSION',
      'KVM_GET_VCPU_MMAP_SIZE',
      'KVM_CREATE_VM',
      'KVM_CREATE_DEVICE',
      'KVM_SET_DEVICE_ATTR',
    ]);
    expect(n.ioctls[4]).to.include({ fd: VM_FD, type: 9 });
    expect(n.ioctls[5]).to.deep.include({ fd: DEV_FD, group: KVM_DEV_XIVE.GRP_CTRL, attr: BigInt(KVM_DEV_XIVE.NR_SERVERS), value: 8n });
    expect(n.mmaps.map((m) => m.offset)).to.deep.equal([0x60000n]);
    expect(n.closed, '/dev/kvm is closed once the VM exists').to.deep.equal([KVM_FD]);
    expect(dev).to.include({ name: 'kvm-xive', nrIrqs: 16, contract: 'fixed-offset', mergeable: false, fd: DEV_FD });
    expect(dev.geometry.esbShift).to.equal(17);
    expect(dev.esbFileOffset(3)).to.equal((4n + 6n) * 0x10000n);
    expect(n.esbTouches).to.equal(0);
    dev.close();
    dev.close();
    expect(n.closed).to.deep.equal([KVM_FD, DEV_FD, VM_FD]);
    expectRemapError(() => dev.fd, 'E_CLOSED');
  });

  it('reports per-irq-offsets where the kernel maps interrupt 1 on its own', () => {
    const dev = XiveKvmDevice.open({ nrIrqs: 4, native: cannedPpc({ probe: 'ok' }) });
    expect(dev.contract).to.equal('per-irq-offsets');
    dev.close();
  });

  it('turns an inconclusive probe into E_DEVICE_UNAVAILABLE and closes the device and the VM', () => {
    const n = cannedPpc({ probe: 'EACCES' });
    const err = expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 4, native: n }), 'E_DEVICE_UNAVAILABLE');
    expect(err.message).to.match(/EACCES/);
    expect(n.closed).to.have.members([KVM_FD, DEV_FD, VM_FD]);
  });

  it('names /dev/kvm when it cannot be opened (and not ppc64, which is there)', () => {
    const err = expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 4, native: cannedPpc({ noKvm: true }) }), 'E_DEVICE_UNAVAILABLE');
    expect(err.message).to.match(/missing \/dev\/kvm \(opening \/dev\/kvm failed: open \(\/dev\/kvm\) failed: ENOENT/);
    expect(err.message).not.to.match(/ppc64 \(/);
  });

  it('names KVM_CAP_PPC_IRQ_XIVE when KVM lacks it, and closes /dev/kvm', () => {
    const n = cannedPpc({ xiveCap: 0 });
    const err = expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 4, native: n }), 'E_DEVICE_UNAVAILABLE');
    expect(err.message).to.match(/missing KVM_CAP_PPC_IRQ_XIVE/);
    expect(err.message).not.to.match(/\/dev\/kvm \(|ppc64 \(/);
    expect(n.closed).to.deep.equal([KVM_FD]);
  });

  it('passes a refused KVM_CREATE_DEVICE on as E_KVM, closing the VM it made', () => {
    const n = cannedPpc({ createDevice: 'EEXIST' });
    const err = expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 4, native: n }), 'E_KVM');
    expect(err.message).to.match(/KVM_CREATE_DEVICE type 9 .*EEXIST/);
    expect(n.closed).to.have.members([KVM_FD, VM_FD]);
  });

  it("uses a caller's VM and leaves it open", () => {
    const n = cannedPpc();
    const sys = KvmSystem.open({ native: n });
    const vm = sys.createVm();
    sys.close();
    const dev = XiveKvmDevice.open({ nrIrqs: 4, vm, native: n });
    expect(dev.vm).to.equal(vm);
    dev.close();
    expect(n.closed).to.deep.equal([KVM_FD, DEV_FD]);
    expect(vm.closed).to.equal(false);
  });

  it('refuses a bad nrIrqs or nrServers before any system call', () => {
    const n = cannedPpc();
    expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 0, native: n }), 'E_IRQ_RANGE');
    expectRemapError(() => XiveKvmDevice.open({ nrIrqs: (1 << 20) + 1, native: n }), 'E_IRQ_RANGE');
    expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 4, nrServers: 0, native: n }), 'E_KVM');
    expect(n.ioctls).to.deep.equal([]);
  });

  it('gives the controller its own dup at page offset 4 + 2n; auto picks kernel-managed and overlay is refused before any mmap', () => {
    const n = cannedPpc();
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    const ipi = dev.openIpiPages();
    expect(ipi.withFd((fd) => fd)).to.equal(103);
    expect(ipi.offsetOf(0)).to.equal(0x40000n);
    expect(ipi.offsetOf(5)).to.equal(0x40000n + 5n * 0x20000n);
    ipi.close();
    ipi.close();
    expect(n.closed).to.include(103);
    expectRemapError(() => ipi.withFd((fd) => fd), 'E_CLOSED');

    const before = n.mmaps.length;
    const err = expectRemapError(() => EsbController.open(dev, { mode: 'overlay', native: n }), 'E_DEVICE_CONTRACT');
    expect(err.message).to.match(/fixed-offset/);
    expect(n.mmaps.length, 'mmaps made by a refused overlay open').to.equal(before);

    const esb = EsbController.open(dev, { mode: 'auto', native: n });
    expect(esb.mode).to.equal('kernel-managed');
    expect(n.mmaps.at(-1)).to.deep.include({ offset: 0x40000n, length: 8n * 0x20000n, flags: MAP_SHARED, addr: 0n });
    dev.close(); // the region keeps its own dup
    expect(esb.closed).to.equal(false);
    esb.close();
  });
});

describe('XiveKvmDevice: sources and ESB loads (canned ppc64 KVM)', () => {
  it('setSourceState sends KVM_DEV_XIVE_GRP_SOURCE with the interrupt as attr and the LSI bits as a u64', () => {
    const n = cannedPpc();
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    dev.setSourceState(5);
    dev.setSourceState(6, { levelSensitive: true, asserted: true });
    expect(n.ioctls.slice(-2).map(({ group, attr, value }) => ({ group, attr, value }))).to.deep.equal([
      { group: KVM_DEV_XIVE.GRP_SOURCE, attr: 5n, value: 0n },
      { group: KVM_DEV_XIVE.GRP_SOURCE, attr: 6n, value: 3n },
    ]);
    expect(dev.isConfigured(5)).to.equal(true);
    expect(dev.isConfigured(4)).to.equal(false);
    expectRemapError(() => dev.setSourceState(8), 'E_IRQ_RANGE');
    dev.close();
    expectRemapError(() => dev.setSourceState(1), 'E_CLOSED');
  });

  it('refuses an ESB load from an unconfigured source without loading (it would SIGBUS)', () => {
    const n = cannedPpc();
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    const err = expectRemapError(() => dev.esbGet(0x7f0000000000n, 2), 'E_IRQ_RANGE');
    expect(err.message).to.match(/not configured.*SIGBUS/);
    expectRemapError(() => dev.esbSetPq(0x7f0000000000n, 2, 0), 'E_IRQ_RANGE');
    expect(n.esbTouches).to.equal(0);
    dev.close();
  });

  it('loads once, 8 bytes, at the management page + 0x800 (GET) or 0xc00 + 0x100 × PQ (SET_PQ), and keeps the PQ bits', () => {
    const n = cannedPpc({ load: 0xffff_ffff_ffff_ff06n });
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    dev.setSourceState(3);
    const base = 0x7f0000000000n;
    expect(dev.esbGet(base, 3)).to.equal(2);
    expect(dev.esbSetPq(base, 3, 3)).to.equal(2);
    const mgmt = base + 3n * 0x20000n + 0x10000n;
    expect(n.loads).to.deep.equal([mgmt + 0x800n, mgmt + 0xf00n]);
    expectRemapError(() => dev.esbSetPq(base, 3, 4 as Pq), 'E_SOURCE');
    expectRemapError(() => dev.esbGet(base + 0x100n, 3), 'E_GEOMETRY');
    expect(n.loads).to.have.length(2);
    dev.close();
  });
});

describe('XiveKvmDevice.pages: the device\'s own sources as a PageSource (canned ppc64 KVM)', () => {
  it('duplicates the device fd, starts at page offset 4 + 2n, ends at the last interrupt, names sources kvm-xive:n', () => {
    const n = cannedPpc({ probe: 'ok' });
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    for (let s = 0; s < 8; s++) dev.setSourceState(s);
    const src = dev.pages(5, 2);
    expect(src.offset).to.equal((4n + 2n * 5n) * 0x10000n);
    expect(src.count).to.equal(2);
    expect(src.limit).to.equal((4n + 2n * 8n) * 0x10000n);
    expect([src.nameOf(0), src.nameOf(1)]).to.deep.equal(['kvm-xive:5', 'kvm-xive:6']);
    expect(src.fd).to.not.equal(dev.fd);
    const fd = src.fd;
    src.close();
    expect(n.closed).to.include(fd);
    dev.close();
  });

  it('refuses sources off the device or not configured (a load through them would SIGBUS), and after close', () => {
    const n = cannedPpc({ probe: 'ok' });
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    dev.setSourceState(6);
    dev.setSourceState(7);
    expectRemapError(() => dev.pages(7, 2), 'E_IRQ_RANGE');
    const err = expectRemapError(() => dev.pages(5, 2), 'E_IRQ_RANGE');
    expect(err.message).to.match(/source 5 was not configured.*SIGBUS/);
    expect(dev.pages(6, 2).count).to.equal(2);
    dev.close();
    expectRemapError(() => dev.pages(6), 'E_CLOSED');
  });

  it('turns a failed dup into E_KVM with the errno as cause', () => {
    const n = cannedPpc({ probe: 'ok' });
    const dev = XiveKvmDevice.open({ nrIrqs: 8, native: n });
    dev.setSourceState(1);
    n.dupCloexec = () => {
      throw new NativeError('fcntl', errnoValue('EMFILE'));
    };
    const err = expectRemapError(() => dev.pages(1), 'E_KVM');
    expect(err.cause).to.be.instanceOf(NativeError);
    dev.close();
  });
});

describe("XiveKvmDevice.fromFd: the VMM's own device (canned ppc64 KVM)", () => {
  it('duplicates the fd, names it by /proc/self/fd, probes on the duplicate, sends no ioctl, touches no ESB page', () => {
    const n = cannedPpc();
    const dev = XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 16, native: n });
    expect(dev.fd, 'the device works on its own duplicate').to.equal(103);
    expect(n.ioctls, 'no ioctl: NR_SERVERS and the sources are the VMM\'s').to.deep.equal([]);
    expect(n.mmaps).to.deep.equal([{ addr: 0n, length: 0x20000n, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd: 103, offset: 0x60000n }]);
    expect(n.esbTouches).to.equal(0);
    expect(dev).to.include({ name: 'kvm-xive', nrIrqs: 16, contract: 'fixed-offset', mergeable: false, vm: undefined, native: n });
    expect(dev.geometry.esbShift).to.equal(17);
    dev.close();
    dev.close();
    expect(n.closed, "close() closes the duplicate only, never the caller's fd").to.deep.equal([103]);
  });

  const refusals: [string, number, RegExp][] = [
    ['a memfd', MEMFD_FD, /fd 90 is \/memfd:not-a-device \(deleted\): a memfd; want a KVM XIVE native device fd/],
    ['the XICS-on-XIVE device', XICS_ON_XIVE_FD, /anon_inode:kvm-xive: the XICS-on-XIVE device/],
    ['a VM fd', VM_FD, /anon_inode:kvm-vm: a KVM VM fd/],
    ['/dev/kvm', KVM_FD, /\/dev\/kvm: the \/dev\/kvm system fd/],
    ['a closed fd', 77, /fd 77 cannot be duplicated \(EBADF/],
    ['-1', -1, /-1 is not a file descriptor/],
    ['1.5', 1.5, /1\.5 is not a file descriptor/],
  ];
  for (const [what, fd, message] of refusals) {
    it(`refuses ${what} with E_DEVICE_UNAVAILABLE naming what it is, and closes its duplicate`, () => {
      const n = cannedPpc();
      const err = expectRemapError(() => XiveKvmDevice.fromFd(fd, { nrIrqs: 16, native: n }), 'E_DEVICE_UNAVAILABLE');
      expect(err.message).to.match(message);
      expect(err.message).to.match(/^XiveKvmDevice\.fromFd\(/);
      expect(n.ioctls, 'no ioctl reached an fd of unknown kind').to.deep.equal([]);
      expect(n.mmaps).to.deep.equal([]);
      expect(n.closed, 'every duplicate made was closed').to.deep.equal(fd >= 0 && Number.isInteger(fd) && fd !== 77 ? [103] : []);
    });
  }

  it('refuses when the native layer cannot name fds (no fdPath), closing its duplicate', () => {
    const n = cannedPpc();
    const { fdPath: _unused, ...without } = n;
    void _unused;
    const err = expectRemapError(() => XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 4, native: without }), 'E_DEVICE_UNAVAILABLE');
    expect(err.message).to.match(/cannot tell what fd 102 is .*want a KVM XIVE native device fd/);
    expect(n.closed).to.deep.equal([103]);
  });

  it('refuses a bad nrIrqs or configured source before any system call', () => {
    const n = cannedPpc();
    expectRemapError(() => XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 0, native: n }), 'E_IRQ_RANGE');
    expectRemapError(() => XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: (1 << 20) + 1, native: n }), 'E_IRQ_RANGE');
    expectRemapError(() => XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 4, configured: [4], native: n }), 'E_IRQ_RANGE');
    expect(n.closed).to.deep.equal([]);
  });

  it('closes its duplicate when the probe is inconclusive', () => {
    const n = cannedPpc({ probe: 'EACCES' });
    expectRemapError(() => XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 4, native: n }), 'E_DEVICE_UNAVAILABLE');
    expect(n.closed).to.deep.equal([103]);
  });

  it('works like a device from open: sources, ESB loads, pages(), the VMM\'s configured sources, vm', () => {
    const n = cannedPpc({ load: 0x3n });
    const sys = KvmSystem.open({ native: n });
    const vm = sys.createVm();
    sys.close();
    const dev = XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 8, vm, configured: [1, 2], native: n });
    expect(dev.vm).to.equal(vm);
    expect([dev.isConfigured(1), dev.isConfigured(2), dev.isConfigured(3)]).to.deep.equal([true, true, false]);
    expect(dev.esbGet(0x7f0000000000n, 2), 'a source the VMM configured may be loaded from').to.equal(3);
    expectRemapError(() => dev.esbGet(0x7f0000000000n, 3), 'E_IRQ_RANGE');
    dev.setSourceState(3, { levelSensitive: true });
    expect(n.ioctls.at(-1)).to.deep.include({ fd: dev.fd, group: KVM_DEV_XIVE.GRP_SOURCE, attr: 3n, value: 1n });
    expect(dev.esbGet(0x7f0000000000n, 3)).to.equal(3);
    const src = dev.pages(1, 3);
    expect(src.offset).to.equal((4n + 2n) * 0x10000n);
    src.close();
    dev.close();
    expect(vm.closed, "the VMM's VM stays open").to.equal(false);
    expect(n.closed).to.not.include(DEV_FD);
    vm.close();
  });

  for (const [probe, mode] of [['EINVAL', 'kernel-managed'], ['ok', 'overlay']] as const) {
    it(`drives the controller in mode 'auto' (${mode}), 'kernel-managed'${probe === 'ok' ? " and 'overlay'" : ''}: attach, attachRange, detach`, () => {
      const n = cannedPpc({ probe });
      const dev = XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 16, configured: [8, 9, 10, 11], native: n });
      const modes = probe === 'ok' ? (['auto', 'kernel-managed', 'overlay'] as const) : (['auto', 'kernel-managed'] as const);
      for (const m of modes) {
        const esb = EsbController.open(dev, { mode: m, native: n });
        expect(esb.mode).to.equal(m === 'auto' ? mode : m);
        const before = n.mmaps.length;
        esb.attach(3, dev.pages(8));
        esb.attachRange(4, 2, dev.pages(9, 2));
        expect(esb.backingOf(3)).to.deep.include({ kind: 'passthrough', source: 'kvm-xive:8' });
        expect(esb.backingOf(5)).to.deep.include({ kind: 'passthrough', source: 'kvm-xive:10' });
        expect(esb.detach(3)).to.equal(true);
        expect(esb.detachRange(0, 16)).to.equal(2);
        const overlays = n.mmaps.slice(before).filter((c) => c.flags & MAP_FIXED);
        expect(overlays.length, `MAP_FIXED calls in mode ${esb.mode}`).to.equal(esb.mode === 'overlay' ? 4 : 0);
        esb.close();
      }
      if (probe === 'EINVAL') expectRemapError(() => EsbController.open(dev, { mode: 'overlay', native: n }), 'E_DEVICE_CONTRACT');
      dev.close();
      expect(n.closed).to.not.include(DEV_FD);
    });
  }

  it('disposes with `using`', () => {
    const n = cannedPpc();
    {
      using dev = XiveKvmDevice.fromFd(DEV_FD, { nrIrqs: 4, native: n });
      expect(dev.closed).to.equal(false);
    }
    expect(n.closed).to.deep.equal([103]);
  });
});

describe('XiveKvmDevice.open on this host', () => {
  before(function () {
    if (osArch() === 'ppc64') this.skip(); // the in-guest checks (native-stubs/power9) cover POWER
  });

  it('fails with E_DEVICE_UNAVAILABLE naming ppc64, and KVM_CAP_PPC_IRQ_XIVE or /dev/kvm', () => {
    const err = expectRemapError(() => XiveKvmDevice.open({ nrIrqs: 16 }), 'E_DEVICE_UNAVAILABLE');
    expect(err.message).to.include(`missing ppc64 (this host is ${osArch()})`);
    expect(err.message).to.match(/KVM_CAP_PPC_IRQ_XIVE|\/dev\/kvm/);
  });
});
