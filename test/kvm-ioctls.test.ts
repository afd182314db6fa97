// KVM ioctl numbers per architecture, and the struct layouts passed to them: table-driven, pure.
// x86_64 values were checked against <linux/kvm.h> with a C compiler on an x86_64 host; ppc64 ones
// against the numbers QEMU/kernel users print and the struct sizes of arch/powerpc/include/uapi/asm/kvm.h.
import { expect } from 'chai';
import { RemapError } from '../src/errors.js';
import {
  GENERIC_IOC,
  KVM_ARCHES,
  KVM_IOCTL_NEEDS,
  POWERPC_IOC,
  VFIO_BASE,
  VFIO_TYPE,
  KVM_PPC_MMUV3_GTSE,
  KVM_PPC_MMUV3_RADIX,
  KVM_REG_PPC_LPCR_64,
  LPCR,
  MSR,
  PATB_GR,
  decodePpcRegs,
  decodeRunExit,
  decodeX86Regs,
  encodePpcRegs,
  decodeX86Sregs,
  encodeX86Regs,
  encodeX86Sregs,
  hostKvmIoctls,
  ioc,
  kvmExitName,
  kvmIoctls,
  packCreateDevice,
  packDeviceAttr,
  packEnableCap,
  packIrqfd,
  KVM_IRQFD_FLAG_DEASSIGN,
  packOneReg,
  packPpcMmuv3Cfg,
  packUserMemoryRegion,
  ppcBit,
  createdDeviceFd,
  decodeStatsData,
  decodeStatsDescs,
  decodeStatsHeader,
  requireIoctl,
  statsDataBytes,
  statsDescBytes,
  type KvmArch,
  type KvmIoctlName,
} from '../src/kvm/index.js';

const KNOWN: Record<KvmArch, Partial<Record<KvmIoctlName, number>>> = {
  x64: {
    KVM_GET_API_VERSION: 0xae00,
    KVM_CREATE_VM: 0xae01,
    KVM_CHECK_EXTENSION: 0xae03,
    KVM_GET_VCPU_MMAP_SIZE: 0xae04,
    KVM_GET_SUPPORTED_CPUID: 0xc008ae05,
    KVM_CREATE_VCPU: 0xae41,
    KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
    KVM_SET_TSS_ADDR: 0xae47,
    KVM_ENABLE_CAP: 0x4068aea3,
    KVM_CREATE_DEVICE: 0xc00caee0,
    KVM_SET_DEVICE_ATTR: 0x4018aee1,
    KVM_GET_DEVICE_ATTR: 0x4018aee2,
    KVM_HAS_DEVICE_ATTR: 0x4018aee3,
    KVM_RUN: 0xae80,
    KVM_GET_REGS: 0x8090ae81,
    KVM_SET_REGS: 0x4090ae82,
    KVM_GET_SREGS: 0x8138ae83,
    KVM_SET_SREGS: 0x4138ae84,
    KVM_SET_CPUID2: 0x4008ae90,
    KVM_GET_ONE_REG: 0x4010aeab,
    KVM_SET_ONE_REG: 0x4010aeac,
    KVM_GET_STATS_FD: 0xaece,
    // <linux/kvm.h> and <linux/vfio.h> of this x86_64 host, printed by a C program (gcc).
    KVM_IRQFD: 0x4020ae76,
    VFIO_GET_API_VERSION: 0x3b64,
    VFIO_CHECK_EXTENSION: 0x3b65,
    VFIO_SET_IOMMU: 0x3b66,
    VFIO_GROUP_GET_STATUS: 0x3b67,
    VFIO_GROUP_SET_CONTAINER: 0x3b68,
    VFIO_GROUP_UNSET_CONTAINER: 0x3b69,
    VFIO_GROUP_GET_DEVICE_FD: 0x3b6a,
    VFIO_DEVICE_GET_INFO: 0x3b6b,
    VFIO_DEVICE_GET_REGION_INFO: 0x3b6c,
    VFIO_DEVICE_GET_IRQ_INFO: 0x3b6d,
    VFIO_DEVICE_SET_IRQS: 0x3b6e,
    VFIO_DEVICE_RESET: 0x3b6f,
    VFIO_IOMMU_SPAPR_TCE_GET_INFO: 0x3b70,
    VFIO_IOMMU_ENABLE: 0x3b73,
    VFIO_IOMMU_DISABLE: 0x3b74,
  },
  ppc64: {
    KVM_GET_API_VERSION: 0x2000ae00,
    KVM_CREATE_VM: 0x2000ae01,
    KVM_CHECK_EXTENSION: 0x2000ae03,
    KVM_GET_VCPU_MMAP_SIZE: 0x2000ae04,
    KVM_CREATE_VCPU: 0x2000ae41,
    KVM_SET_USER_MEMORY_REGION: 0x8020ae46,
    KVM_ENABLE_CAP: 0x8068aea3,
    KVM_CREATE_DEVICE: 0xc00caee0,
    KVM_SET_DEVICE_ATTR: 0x8018aee1,
    KVM_GET_DEVICE_ATTR: 0x8018aee2,
    KVM_HAS_DEVICE_ATTR: 0x8018aee3,
    KVM_RUN: 0x2000ae80,
    KVM_GET_REGS: 0x4188ae81,
    KVM_SET_REGS: 0x8188ae82,
    KVM_GET_ONE_REG: 0x8010aeab,
    KVM_SET_ONE_REG: 0x8010aeac,
    KVM_PPC_CONFIGURE_V3_MMU: 0x8010aeaf,
    KVM_GET_STATS_FD: 0x2000aece,
    // The numbers a C program compiled with powerpc64le-linux-gnu-gcc-12 printed inside the emulated
    // POWER9 (../shared/spikes/vfio-power9/ioctl-numbers-ppc64le.txt).
    KVM_IRQFD: 0x8020ae76,
    VFIO_GET_API_VERSION: 0x20003b64,
    VFIO_CHECK_EXTENSION: 0x20003b65,
    VFIO_SET_IOMMU: 0x20003b66,
    VFIO_GROUP_GET_STATUS: 0x20003b67,
    VFIO_GROUP_SET_CONTAINER: 0x20003b68,
    VFIO_GROUP_GET_DEVICE_FD: 0x20003b6a,
    VFIO_DEVICE_GET_INFO: 0x20003b6b,
    VFIO_DEVICE_GET_REGION_INFO: 0x20003b6c,
    VFIO_DEVICE_GET_IRQ_INFO: 0x20003b6d,
    VFIO_DEVICE_SET_IRQS: 0x20003b6e,
    VFIO_IOMMU_SPAPR_TCE_GET_INFO: 0x20003b70,
  },
  arm64: {
    KVM_CREATE_VM: 0xae01,
    KVM_CHECK_EXTENSION: 0xae03,
    KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
    KVM_CREATE_DEVICE: 0xc00caee0,
    KVM_SET_DEVICE_ATTR: 0x4018aee1,
    KVM_RUN: 0xae80,
    KVM_GET_ONE_REG: 0x4010aeab,
    KVM_SET_ONE_REG: 0x4010aeac,
    KVM_IRQFD: 0x4020ae76,
    VFIO_GET_API_VERSION: 0x3b64,
    VFIO_DEVICE_SET_IRQS: 0x3b6e,
  },
};

/** Ioctls whose argument struct does not exist (or is not encoded here) on an architecture. */
const ABSENT: Record<KvmArch, KvmIoctlName[]> = {
  x64: ['KVM_PPC_CONFIGURE_V3_MMU'],
  ppc64: ['KVM_GET_SREGS', 'KVM_SET_SREGS', 'KVM_SET_CPUID2', 'KVM_GET_SUPPORTED_CPUID', 'KVM_SET_TSS_ADDR'],
  arm64: ['KVM_GET_REGS', 'KVM_SET_REGS', 'KVM_GET_SREGS', 'KVM_SET_SREGS', 'KVM_SET_CPUID2', 'KVM_GET_SUPPORTED_CPUID', 'KVM_SET_TSS_ADDR', 'KVM_PPC_CONFIGURE_V3_MMU'],
};

describe('KVM ioctl numbers', () => {
  for (const arch of KVM_ARCHES) {
    describe(arch, () => {
      for (const [name, value] of Object.entries(KNOWN[arch]) as [KvmIoctlName, number][]) {
        it(`${name} is 0x${value.toString(16)}`, () => {
          expect(kvmIoctls(arch)[name]).to.equal(value);
        });
      }
      for (const name of ABSENT[arch]) {
        it(`has no ${name}, and requireIoctl says so`, () => {
          expect(kvmIoctls(arch)[name]).to.equal(undefined);
          expect(() => requireIoctl(kvmIoctls(arch), name)).to.throw(RemapError, new RegExp(`${name} does not exist on ${arch}`));
        });
      }
    });
  }

  it('encodes _IO/_IOR/_IOW/_IOWR with the generic and the powerpc layouts', () => {
    const cases: [typeof GENERIC_IOC, Parameters<typeof ioc>[1], number, number][] = [
      [GENERIC_IOC, 'none', 0, 0x0000ae10],
      [GENERIC_IOC, 'write', 8, 0x4008ae10],
      [GENERIC_IOC, 'read', 8, 0x8008ae10],
      [GENERIC_IOC, 'readwrite', 8, 0xc008ae10],
      [GENERIC_IOC, 'write', 0x3fff, 0x7fffae10],
      [POWERPC_IOC, 'none', 0, 0x2000ae10],
      [POWERPC_IOC, 'write', 8, 0x8008ae10],
      [POWERPC_IOC, 'read', 8, 0x4008ae10],
      [POWERPC_IOC, 'readwrite', 8, 0xc008ae10],
      [POWERPC_IOC, 'write', 0x1fff, 0x9fffae10],
    ];
    for (const [layout, dir, size, want] of cases) expect(ioc(layout, dir, 0xae, 0x10, size), `${dir} ${size}`).to.equal(want);
  });

  it('refuses a size that does not fit the size field (13 bits on powerpc, 14 elsewhere)', () => {
    expect(() => ioc(POWERPC_IOC, 'write', 0xae, 0, 0x2000)).to.throw(RangeError);
    expect(() => ioc(GENERIC_IOC, 'write', 0xae, 0, 0x4000)).to.throw(RangeError);
    expect(() => ioc(GENERIC_IOC, 'none', 0x100, 0, 0)).to.throw(RangeError);
  });

  it('gives every ioctl a note of the capability it needs', () => {
    for (const name of Object.keys(kvmIoctls('x64')).filter((k) => k !== 'arch') as KvmIoctlName[]) {
      expect(KVM_IOCTL_NEEDS[name], name).to.be.a('string').with.length.greaterThan(0);
    }
    expect(KVM_IOCTL_NEEDS.KVM_SET_USER_MEMORY_REGION).to.match(/KVM_CAP_USER_MEMORY/);
    expect(KVM_IOCTL_NEEDS.KVM_CREATE_DEVICE).to.match(/KVM_CAP_DEVICE_CTRL/);
  });

  it('knows the host architecture, and refuses one it has no encoding for', () => {
    expect(hostKvmIoctls('ppc64').KVM_RUN).to.equal(0x2000ae80);
    expect(() => hostKvmIoctls('s390x')).to.throw(RemapError, /no KVM ioctl encoding for architecture s390x/);
  });

  it('encodes every VFIO ioctl as _IO(VFIO_TYPE, VFIO_BASE + n): no size, the architecture only sets the direction field', () => {
    expect([VFIO_TYPE, VFIO_BASE]).to.deep.equal([0x3b, 100]);
    for (const arch of KVM_ARCHES) {
      const t = kvmIoctls(arch);
      const vfio = Object.keys(t).filter((k) => k.startsWith('VFIO_')) as KvmIoctlName[];
      expect(vfio.length, arch).to.equal(15);
      for (const name of vfio) {
        const n = t[name] as number;
        expect((n >>> 8) & 0xff, name).to.equal(VFIO_TYPE);
        expect((n >>> 16) & 0x1fff, `${name} size`).to.equal(0);
        expect(n & 0xff, name).to.be.within(VFIO_BASE, VFIO_BASE + 16);
        expect(n >>> 29, `${name} direction on ${arch}`).to.equal(arch === 'ppc64' ? 1 : 0);
      }
    }
    expect(KVM_IOCTL_NEEDS.VFIO_SET_IOMMU).to.match(/VFIO_GROUP_SET_CONTAINER first/);
    expect(KVM_IOCTL_NEEDS.KVM_IRQFD).to.match(/KVM_CAP_IRQFD/);
  });

  it('names exit reasons', () => {
    expect(kvmExitName(2)).to.equal('KVM_EXIT_IO');
    expect(kvmExitName(8)).to.equal('KVM_EXIT_SHUTDOWN');
    expect(kvmExitName(17)).to.equal('KVM_EXIT_INTERNAL_ERROR');
    expect(kvmExitName(19)).to.equal('KVM_EXIT_PAPR_HCALL');
    expect(kvmExitName(999)).to.equal('exit reason 999');
  });
});

describe('KVM struct layouts', () => {
  it('packs kvm_userspace_memory_region as u32 slot, u32 flags, u64 gpa, u64 size, u64 hva', () => {
    const b = Buffer.from(packUserMemoryRegion({ slot: 3, flags: 2, guestPhysAddr: 0x1_0000_0000n, memorySize: 0x20_0000n, userspaceAddr: 0x7f12_3456_7000n }, true));
    expect(b.length).to.equal(32);
    expect(b.readUInt32LE(0)).to.equal(3);
    expect(b.readUInt32LE(4)).to.equal(2);
    expect(b.readBigUInt64LE(8)).to.equal(0x1_0000_0000n);
    expect(b.readBigUInt64LE(16)).to.equal(0x20_0000n);
    expect(b.readBigUInt64LE(24)).to.equal(0x7f12_3456_7000n);
  });

  it('packs big-endian for a big-endian host (ppc64 BE)', () => {
    const b = Buffer.from(packUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x10n, memorySize: 0x20n, userspaceAddr: 0x30n }, false));
    expect(b.readUInt32BE(0)).to.equal(1);
    expect(b.readBigUInt64BE(24)).to.equal(0x30n);
  });

  it('packs kvm_device_attr as u32 flags, u32 group, u64 attr, u64 addr', () => {
    const b = Buffer.from(packDeviceAttr({ flags: 0, group: 2, attr: 4095n, addr: 0x7fff_0000_1000n }, true));
    expect(b.length).to.equal(24);
    expect([b.readUInt32LE(0), b.readUInt32LE(4)]).to.deep.equal([0, 2]);
    expect(b.readBigUInt64LE(8)).to.equal(4095n);
    expect(b.readBigUInt64LE(16)).to.equal(0x7fff_0000_1000n);
  });

  it('packs kvm_create_device and reads the fd the kernel writes back', () => {
    const b = packCreateDevice(9, 1, true);
    expect(Buffer.from(b).readUInt32LE(0)).to.equal(9);
    expect(Buffer.from(b).readUInt32LE(8)).to.equal(1);
    new DataView(b.buffer).setUint32(4, 42, true);
    expect(createdDeviceFd(b, true)).to.equal(42);
  });

  it('decodes an I/O exit from kvm_run (exit_reason at 8, io at 0x20)', () => {
    const run = Buffer.alloc(0x38);
    run.writeUInt32LE(2, 8);
    run.writeUInt8(1, 0x20);
    run.writeUInt8(4, 0x21);
    run.writeUInt16LE(0x10, 0x22);
    run.writeUInt32LE(1, 0x24);
    run.writeBigUInt64LE(0x1000n, 0x28);
    expect(decodeRunExit(run, true)).to.deep.equal({ code: 2, reason: 'io', direction: 1, size: 4, port: 0x10, count: 1, dataOffset: 0x1000n });
    run.writeUInt32LE(17, 8);
    run.writeUInt32LE(1, 0x20);
    expect(decodeRunExit(run, true)).to.deep.equal({ code: 17, reason: 'internal-error', suberror: 1 });
    run.writeUInt32LE(8, 8);
    expect(decodeRunExit(run, true)).to.deep.equal({ code: 8, reason: 'other' });
  });

  it('decodes a binary stats fd: header, named descriptors, counters', () => {
    const nameSize = 48;
    const names = ['exits', 'pf_fixed', 'insn_emulation'];
    const header = Buffer.alloc(24);
    [0, nameSize, names.length, 24, 24 + nameSize, 24 + nameSize + names.length * (16 + nameSize)].forEach((v, i) => header.writeUInt32LE(v, i * 4));
    const descs = Buffer.alloc(names.length * (16 + nameSize));
    names.forEach((name, i) => {
      const at = i * (16 + nameSize);
      descs.writeUInt16LE(1, at + 6); // size: one u64
      descs.writeUInt32LE(i * 8, at + 8); // offset in the data block
      descs.write(name, at + 16, 'latin1');
    });
    const data = Buffer.alloc(24);
    [7n, 1000n, 3n].forEach((v, i) => data.writeBigUInt64LE(v, i * 8));
    const h = decodeStatsHeader(header, true);
    expect(h).to.deep.equal({ nameSize, numDesc: 3, descOffset: 24 + nameSize, dataOffset: 24 + nameSize + 3 * 64 });
    expect(statsDescBytes(h)).to.equal(descs.length);
    const d = decodeStatsDescs(h, descs, true);
    expect(d.map((x) => x.name)).to.deep.equal(names);
    expect(statsDataBytes(d)).to.equal(24);
    expect([...decodeStatsData(d, data, true)]).to.deep.equal([['exits', 7n], ['pf_fixed', 1000n], ['insn_emulation', 3n]]);
  });

  it('round-trips x86 kvm_regs and kvm_sregs at the header offsets', () => {
    const regs = encodeX86Regs({ rax: 1n, rdi: 6n, rip: 0x1000n, rflags: 0x3002n });
    expect(regs.length).to.equal(144);
    expect(Buffer.from(regs).readBigUInt64LE(0x80)).to.equal(0x1000n); // rip
    expect(Buffer.from(regs).readBigUInt64LE(0x28)).to.equal(6n); // rdi
    expect(decodeX86Regs(regs)).to.include({ rax: 1n, rip: 0x1000n, rflags: 0x3002n, rbx: 0n });

    const raw = new Uint8Array(312);
    const s = decodeX86Sregs(raw);
    s.cs = { ...s.cs, selector: 0x1b, type: 0xb, present: 1, dpl: 3, l: 1, limit: 0xffffffff };
    s.gdt = { base: 0x1234n, limit: 55 };
    s.cr3 = 0x3000n;
    s.efer = 0x500n;
    const enc = Buffer.from(encodeX86Sregs(s));
    expect(enc.length).to.equal(312);
    expect(enc.readUInt16LE(12)).to.equal(0x1b); // cs.selector
    expect(enc.readUInt8(16)).to.equal(3); // cs.dpl
    expect(enc.readUInt32LE(8)).to.equal(0xffffffff); // cs.limit
    expect(enc.readBigUInt64LE(0xc0)).to.equal(0x1234n); // gdt.base
    expect(enc.readBigUInt64LE(0xf0)).to.equal(0x3000n); // cr3
    expect(enc.readBigUInt64LE(0x108)).to.equal(0x500n); // efer
    expect(decodeX86Sregs(enc)).to.deep.include({ cr3: 0x3000n, efer: 0x500n });
  });

  it('decodes a PAPR hcall exit from kvm_run (nr at 0x20, ret at 0x28, args[9] from 0x30)', () => {
    const run = Buffer.alloc(0x78);
    run.writeUInt32LE(19, 8);
    run.writeBigUInt64LE(0x7800n, 0x20);
    run.writeBigUInt64LE(0xdeadn, 0x28); // ret: not decoded (userspace's answer)
    for (let i = 0; i < 9; i++) run.writeBigUInt64LE(BigInt(i + 1) * 0x10n, 0x30 + i * 8);
    const e = decodeRunExit(run, true);
    expect(e).to.deep.equal({ code: 19, reason: 'papr-hcall', nr: 0x7800n, args: [0x10n, 0x20n, 0x30n, 0x40n, 0x50n, 0x60n, 0x70n, 0x80n, 0x90n] });
    const be = Buffer.alloc(0x78);
    be.writeUInt32BE(19, 8);
    be.writeBigUInt64BE(0x7800n, 0x20);
    be.writeBigUInt64BE(0x1234n, 0x30);
    const d = decodeRunExit(be, false);
    expect(d.reason === 'papr-hcall' && [d.nr, d.args[0]]).to.deep.equal([0x7800n, 0x1234n]);
  });

  it('round-trips powerpc kvm_regs: pc, cr, ctr, lr, xer, msr, srr0, srr1, pid, sprg0-7, gpr[32] (392 bytes)', () => {
    const gpr = Array.from({ length: 32 }, (_, i) => BigInt(i) * 0x100n);
    for (const le of [true, false]) {
      const enc = Buffer.from(encodePpcRegs({ pc: 0x2000n, msr: 0x8000000000001001n, srr1: 7n, pid: 9n, sprg: [1n, 2n], gpr }, le));
      expect(enc.length).to.equal(392);
      const u64 = (at: number): bigint => (le ? enc.readBigUInt64LE(at) : enc.readBigUInt64BE(at));
      expect(u64(0)).to.equal(0x2000n); // pc
      expect(u64(40)).to.equal(0x8000000000001001n); // msr
      expect(u64(56)).to.equal(7n); // srr1
      expect(u64(64)).to.equal(9n); // pid
      expect(u64(72 + 8)).to.equal(2n); // sprg1
      expect(u64(136 + 4 * 8)).to.equal(0x400n); // gpr[4]
      expect(u64(136 + 31 * 8)).to.equal(0x1f00n); // gpr[31], the last doubleword
      const d = decodePpcRegs(enc, le);
      expect(d).to.deep.include({ pc: 0x2000n, cr: 0n, msr: 0x8000000000001001n, srr1: 7n });
      expect(d.gpr).to.deep.equal(gpr);
      expect(d.sprg).to.deep.equal([1n, 2n, 0n, 0n, 0n, 0n, 0n, 0n]);
    }
    expect(() => encodePpcRegs({ gpr: new Array<bigint>(33).fill(0n) })).to.throw(RangeError);
    expect(() => decodePpcRegs(new Uint8Array(391))).to.throw(RangeError, /392 bytes/);
  });

  it('packs kvm_irqfd as u32 fd, u32 gsi, u32 flags, u32 resamplefd, 16 bytes of padding', () => {
    const cases: [number, number, number, boolean][] = [
      [7, 0x20, 0, true],
      [7, 0x20, KVM_IRQFD_FLAG_DEASSIGN, true],
      [0xffffffff, 0xfffff, 1, false],
    ];
    for (const [fd, gsi, flags, le] of cases) {
      const b = Buffer.from(packIrqfd(fd, gsi, flags, le));
      const u32 = (at: number): number => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
      expect([b.length, u32(0), u32(4), u32(8), u32(12)]).to.deep.equal([32, fd, gsi, flags, 0]);
      expect(b.subarray(16).every((x) => x === 0)).to.equal(true);
    }
    expect(() => packIrqfd(-1, 0)).to.throw(RangeError, /fd -1/);
    expect(() => packIrqfd(3, 2 ** 32)).to.throw(RangeError, /gsi/);
    expect(() => packIrqfd(3, 1.5)).to.throw(RangeError, /gsi/);
  });

  it('packs kvm_one_reg, kvm_ppc_mmuv3_cfg and kvm_enable_cap', () => {
    const one = Buffer.from(packOneReg(KVM_REG_PPC_LPCR_64, 0x7fff_1234_0000n, true));
    expect(one.length).to.equal(16);
    expect([one.readBigUInt64LE(0), one.readBigUInt64LE(8)]).to.deep.equal([0x10300000000000b5n, 0x7fff_1234_0000n]);
    const mmu = Buffer.from(packPpcMmuv3Cfg(KVM_PPC_MMUV3_RADIX | KVM_PPC_MMUV3_GTSE, PATB_GR, true));
    expect([mmu.length, mmu.readBigUInt64LE(0), mmu.readBigUInt64LE(8)]).to.deep.equal([16, 3n, 0x8000000000000000n]);
    const cap = Buffer.from(packEnableCap(68, [5n], 0, true));
    expect(cap.length).to.equal(104);
    expect([cap.readUInt32LE(0), cap.readUInt32LE(4), cap.readBigUInt64LE(8), cap.readBigUInt64LE(16)]).to.deep.equal([68, 0, 5n, 0n]);
    expect(cap.subarray(40).every((x) => x === 0)).to.equal(true);
    expect(() => packEnableCap(1, [1n, 2n, 3n, 4n, 5n])).to.throw(RangeError);
  });

  it('numbers powerpc bits the IBM way (bit 0 = most significant): MSR, LPCR, PATB_GR', () => {
    const cases: [string, bigint, bigint][] = [
      ['ppcBit(0)', ppcBit(0), 0x8000000000000000n],
      ['ppcBit(63)', ppcBit(63), 1n],
      ['MSR.SF', MSR.SF, 0x8000000000000000n],
      ['MSR.EE', MSR.EE, 0x8000n],
      ['MSR.PR', MSR.PR, 0x4000n],
      ['MSR.FP', MSR.FP, 0x2000n],
      ['MSR.ME', MSR.ME, 0x1000n],
      ['MSR.IR', MSR.IR, 0x20n],
      ['MSR.DR', MSR.DR, 0x10n],
      ['MSR.LE', MSR.LE, 1n],
      ['LPCR.ILE', LPCR.ILE, 0x2000000n],
      ['LPCR.AIL', LPCR.AIL, 0x1800000n],
      ['PATB_GR', PATB_GR, 0x8000000000000000n],
    ];
    for (const [name, got, want] of cases) expect(got, name).to.equal(want);
    expect(() => ppcBit(64)).to.throw(RangeError);
  });
});
