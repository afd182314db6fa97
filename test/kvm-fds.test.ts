// The KVM fd wrappers: against a canned native layer (any host: which ioctl numbers go out for the
// native layer's architecture, how failures are wrapped, close twice), then against /dev/kvm.
import { expect } from 'chai';
import { NativeError, RemapError, errnoOf, errnoValue } from '../src/errors.js';
import { KVM_API_VERSION, KVM_CAP, KVM_DEV_TYPE, KvmSystem, kvmIoctls, teardown, unwind } from '../src/kvm/index.js';
import { KVM_REG_PPC, KVM_REG_SIZE_U32 } from '../src/kvm/ppc.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import { kvmUnusable } from './kvm-fixtures.js';

interface Call {
  fd: number;
  request: number;
  arg: number | bigint | Uint8Array | undefined;
}

/** A native layer that answers ioctls from a script and records them (vfio-ioctls' canned syscalls). */
function canned(arch: string, answer: (c: Call) => number): NativeLayer & { calls: Call[]; closed: number[] } {
  const calls: Call[] = [];
  const closed: number[] = [];
  let nextFd = 100;
  return {
    ...realNative,
    arch,
    calls,
    closed,
    open: () => nextFd++,
    close: (fd: number) => void closed.push(fd),
    mmap: () => 0x7000_0000_0000n,
    munmap: () => undefined,
    ioctl(fd, request, arg) {
      const c = { fd, request, arg: arg instanceof Uint8Array ? Uint8Array.from(arg) : arg };
      calls.push(c);
      return answer(c);
    },
  };
}

describe('KVM fd wrappers on a canned native layer', () => {
  it('issue the ioctl numbers of the native layer\'s architecture (ppc64 here)', () => {
    const ppc = kvmIoctls('ppc64');
    const n = canned('ppc64', (c) => (c.request === ppc.KVM_GET_API_VERSION ? KVM_API_VERSION : c.request === ppc.KVM_CREATE_VM ? 7 : 4096));
    const sys = KvmSystem.open({ native: n });
    const vm = sys.createVm();
    vm.setUserMemoryRegion({ slot: 2, flags: 0, guestPhysAddr: 0x1000_0000n, memorySize: 0x1_0000n, userspaceAddr: 0x7fff_0000_0000n });
    const reqs = n.calls.map((c) => c.request);
    expect(reqs).to.deep.equal([0x2000ae00, 0x2000ae04, 0x2000ae01, 0x8020ae46]);
    const region = Buffer.from(n.calls[3]?.arg as Uint8Array);
    expect(region.length).to.equal(32);
    expect(region.readUInt32LE(0) === 2 || region.readUInt32BE(0) === 2).to.equal(true);
    vm.close();
    sys.close();
  });

  it('turn a refused ioctl into E_KVM saying what was done to which fd, with the errno error as cause', () => {
    const x = kvmIoctls('x64');
    const n = canned('x64', (c) => {
      if (c.request === x.KVM_GET_API_VERSION) return KVM_API_VERSION;
      if (c.request === x.KVM_CREATE_VM) return 9;
      if (c.request === x.KVM_SET_USER_MEMORY_REGION) throw new NativeError('ioctl', errnoValue('EEXIST'));
      return 4096;
    });
    const vm = KvmSystem.open({ native: n }).createVm();
    let err: unknown;
    try {
      vm.setUserMemoryRegion({ slot: 4, flags: 0, guestPhysAddr: 0x2000n, memorySize: 0x1000n, userspaceAddr: 0x5000n });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RemapError).with.property('code', 'E_KVM');
    expect((err as Error).message).to.equal(
      "KVM_SET_USER_MEMORY_REGION slot 4 (guest 0x2000+0x1000 <- host 0x5000) on VM fd 9 failed: EEXIST (its guest-physical range overlaps another memslot's)",
    );
    expect((err as Error).cause).to.be.instanceOf(NativeError);
    expect(errnoOf(err)).to.equal(errnoValue('EEXIST'));
  });

  it('close once however often close() is called, and refuse calls afterwards with E_CLOSED', () => {
    const x = kvmIoctls('x64');
    const n = canned('x64', (c) => (c.request === x.KVM_GET_API_VERSION ? KVM_API_VERSION : 0));
    const sys = KvmSystem.open({ native: n });
    sys.close();
    sys.close();
    expect(n.closed).to.deep.equal([100]);
    expect(sys.closed).to.equal(true);
    expect(() => sys.checkExtension(KVM_CAP.USER_MEMORY)).to.throw(RemapError, /closed/);
  });

  it('refuse a /dev/kvm of another API version (closing it), and report a missing one as E_DEVICE_UNAVAILABLE', () => {
    const n = canned('x64', () => 11);
    expect(() => KvmSystem.open({ native: n })).to.throw(RemapError, /API version 11, not 12/);
    expect(n.closed).to.deep.equal([100]);
    const missing: NativeLayer = { ...realNative, open: () => { throw new NativeError('open', errnoValue('ENOENT')); } };
    expect(() => KvmSystem.open({ native: missing, path: '/nonexistent/kvm' }))
      .to.throw(RemapError, /opening \/nonexistent\/kvm failed/).with.property('code', 'E_DEVICE_UNAVAILABLE');
  });

  it('refuse x86 register structs on another architecture rather than misdecode them', () => {
    const p = kvmIoctls('ppc64');
    const n = canned('ppc64', (c) => (c.request === p.KVM_GET_API_VERSION ? KVM_API_VERSION : 5));
    const vcpu = KvmSystem.open({ native: n }).createVm().createVcpu(0);
    expect(() => vcpu.getX86Regs()).to.throw(RemapError, /x86_64's struct kvm_regs on ppc64/);
    expect(() => vcpu.getX86Sregs()).to.throw(RemapError, /KVM_GET_SREGS does not exist on ppc64/);
    vcpu.close();
  });

  it('refuse a ONE_REG id whose size field is not u64 before any ioctl (the kernel would copy another size)', () => {
    const p = kvmIoctls('ppc64');
    const n = canned('ppc64', (c) => (c.request === p.KVM_GET_API_VERSION ? KVM_API_VERSION : 5));
    const vcpu = KvmSystem.open({ native: n }).createVm().createVcpu(0);
    const before = n.calls.length;
    expect(() => vcpu.getOneRegU64(KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xb5n)).to.throw(RangeError, /not a 64-bit register's \(size field 0x2, want 0x3\)/);
    expect(() => vcpu.setOneRegU64(KVM_REG_PPC | 0xb5n, 1n)).to.throw(RangeError, /size field 0x0/);
    expect(n.calls.length).to.equal(before);
    vcpu.close();
  });
});


const unusable = kvmUnusable();

describe(`KVM fd wrappers on /dev/kvm${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
  before(function () {
    if (unusable) this.skip();
  });

  it('answer the system questions: API version 12, user memory, a kvm_run size', () => {
    const sys = KvmSystem.open();
    try {
      expect(sys.apiVersion()).to.equal(12);
      expect(sys.checkExtension(KVM_CAP.USER_MEMORY)).to.be.greaterThan(0);
      expect(sys.vcpuMmapSize()).to.be.at.least(realNative.pageSize);
    } finally {
      sys.close();
    }
  });

  it('create a vCPU whose kvm_run is mapped, and unmap it on close (twice is fine)', () => {
    const sys = KvmSystem.open();
    const vm = sys.createVm();
    const vcpu = vm.createVcpu(0);
    const run = vcpu.runAddr;
    expect(realNative.readMaps().some((m) => m.start === run && m.path.includes('kvm-vcpu'))).to.equal(true);
    vcpu.close();
    vcpu.close();
    expect(realNative.readMaps().some((m) => m.start === run)).to.equal(false);
    vm.close();
    sys.close();
  });

  it('report a device type the host lacks (XIVE off POWER) as ENODEV, by test and by create', function () {
    if (realNative.arch === 'ppc64') this.skip();
    const sys = KvmSystem.open();
    const vm = sys.createVm();
    try {
      expect(vm.canCreateDevice(KVM_DEV_TYPE.XIVE)).to.equal(false);
      let err: unknown;
      try {
        vm.createDevice(KVM_DEV_TYPE.XIVE);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError).with.property('message').that.matches(/KVM_CREATE_DEVICE type 9 on VM fd \d+ failed: ENODEV/);
      expect(errnoOf(err)).to.equal(errnoValue('ENODEV'));
    } finally {
      vm.close();
      sys.close();
    }
  });

  it('create a device and pass attribute values through its scratch page (the VFIO pseudo-device)', function () {
    const sys = KvmSystem.open();
    const vm = sys.createVm();
    try {
      if (!vm.canCreateDevice(KVM_DEV_TYPE.VFIO)) this.skip();
      const dev = vm.createDevice(KVM_DEV_TYPE.VFIO);
      try {
        const KVM_DEV_VFIO_FILE = 1;
        const KVM_DEV_VFIO_FILE_ADD = 1;
        expect(dev.hasAttr(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD)).to.equal(true);
        expect(dev.hasAttr(99, 0)).to.equal(false);
        // The kernel reads an fd from the scratch page; a memfd is not a VFIO file, so it refuses.
        const memfd = realNative.memfdCreate('not-vfio', 0);
        try {
          expect(() => dev.setAttrU64(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, BigInt(memfd)))
            .to.throw(RemapError, /KVM_SET_DEVICE_ATTR group 1 attr 0x1 addr 0x[0-9a-f]+ on device \(type 4\) fd \d+ failed: E/);
        } finally {
          realNative.close(memfd);
        }
      } finally {
        dev.close();
        dev.close();
      }
    } finally {
      vm.close();
      sys.close();
    }
  });
});

describe('teardown and unwind: best-effort cleanup', () => {
  const fail = (tag: string) => (): void => {
    throw new Error(tag);
  };
  const cases: { name: string; steps: (string | null)[]; ran: string[]; throws?: string }[] = [
    { name: 'runs every step in order', steps: ['a', 'b', 'c'], ran: ['a', 'b', 'c'] },
    { name: 'goes on past a failure and throws it after the last step', steps: ['a', '!x', 'c'], ran: ['a', 'x', 'c'], throws: 'x' },
    { name: 'throws the FIRST failure when several fail', steps: ['!x', 'b', '!y'], ran: ['x', 'b', 'y'], throws: 'x' },
    { name: 'skips falsy entries', steps: ['a', null, 'c'], ran: ['a', 'c'] },
    { name: 'does nothing for no steps', steps: [], ran: [] },
  ];
  for (const c of cases) {
    it(`teardown ${c.name}`, () => {
      const ran: string[] = [];
      const steps = c.steps.map((s) => (s === null ? null : s.startsWith('!') ? () => (ran.push(s.slice(1)), fail(s.slice(1))()) : () => void ran.push(s)));
      if (c.throws) expect(() => teardown(steps)).to.throw(Error, c.throws);
      else teardown(steps);
      expect(ran).to.deep.equal(c.ran);
    });
  }

  it('unwind runs the steps last first, drops their failures, and leaves the array as it was', () => {
    const ran: string[] = [];
    const steps = [() => void ran.push('a'), fail('b'), () => void ran.push('c')];
    unwind(steps);
    expect(ran).to.deep.equal(['c', 'a']);
    expect(steps).to.have.length(3);
    expect(steps[1]).to.throw('b');
  });
});
