/**
 * A real KVM guest on an x86_64 host, to prove approach 3 where no POWER machine is at hand: a
 * host range (an ESB region, or any memfd mapping) is registered ONCE as a memslot, and the guest
 * reads it with ordinary loads, so every mmap(MAP_FIXED) the host does inside the range must reach
 * the guest through KVM's MMU notifiers, with no memslot update, on the guest's very next load.
 *
 * The guest is the smallest one whose loads KVM runs natively through its MMU: 64-bit long mode,
 * paging on, CPL3 (on a nested host, a guest without paging is emulated instruction by instruction
 * and would prove nothing; `kvmStats()` lets a test check that no load was emulated).
 * Guest-physical layout:
 *
 *   slot A (code, owned here)   0x0000 GDT, 0x0080 TSS + I/O bitmap, 0x1000 code, 0x2000 mailbox,
 *                               0x3000 PML4, 0x4000 PDPT, 0x5000… page directories
 *   slot B (the caller's region) at `guestPhysAddr` (default 4 GiB), identity-mapped with 2 MiB
 *                               user pages, so guest virtual = guest physical
 *
 * The guest loops: load the address in the mailbox, load 4 bytes there, `out` them to port 0x10
 * (IOPL=3 and the TSS I/O bitmap let CPL3 do that), jump back. `read32(offset)` stores the address
 * in the mailbox (plain memory, no syscall) and issues ONE KVM_RUN; the value comes back in the I/O
 * exit's data inside the `kvm_run` page. A load from a host hole makes KVM_RUN fail with EFAULT,
 * which becomes a `RemapError('E_KVM')` naming the offset; any other exit (shutdown = triple
 * fault, internal error, MMIO outside the slots) throws naming the exit reason. The guest has no
 * IDT, so it cannot hang: any exception becomes a triple fault, i.e. KVM_EXIT_SHUTDOWN.
 */
import { readSync } from 'node:fs';
import { RemapError } from '../src/errors.js';
import {
  KVM_EXIT,
  KVM_STATS_HEADER_BYTES,
  decodeStatsData,
  decodeStatsDescs,
  decodeStatsHeader,
  statsDataBytes,
  statsDescBytes,
  UserMemory,
  hex,
  kvmExitName,
  type KvmStatDesc,
  type RunExit,
  type X86Segment,
} from '../src/kvm/index.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import { KvmGuestBase, buildGuest, guestUsable, type GuestArch, type GuestParts, type KvmGuestOptions } from './kvm-guest-base.js';

// Guest-physical layout of the code slot (see the module comment).
const GDT = 0x0000n;
const TSS = 0x0080n;
/** TSS bytes: the 104-byte 64-bit TSS, an I/O permission bitmap for ports 0–255, its 0xff terminator. */
const TSS_LIMIT = 104 + 32 + 1 - 1;
const CODE = 0x1000n;
const MAILBOX = 0x2000n;
const PML4 = 0x3000n;
const PDPT = 0x4000n;
const PD_FIRST = 0x5000n;
const PAGE = 0x1000n;

const MIB2 = 1n << 21n;
const GIB = 1n << 30n;
/** One PDPT maps 512 GiB; GiB 0 holds the code slot. */
const MAX_GPA_END = 512n * GIB;
/** Where the region goes unless the caller says otherwise. */
const DEFAULT_REGION_GPA = 4n * GIB;

// Page-table entry bits: present, writable, user-accessible (CPL3), 2 MiB page.
const PTE_P = 1n;
const PTE_RW = 2n;
const PTE_US = 4n;
const PTE_PS = 0x80n;
const TABLE = PTE_P | PTE_RW | PTE_US;

// Control registers: CR0.PE|MP|ET|NE|WP|PG, CR4.PAE, EFER.LME|LMA. RFLAGS: bit 1 (reserved, 1) and
// IOPL=3 (CPL3 may do I/O; see tssBytes for hosts that ignore it).
const CR0 = 0x1n | 0x2n | 0x10n | 0x20n | 0x10000n | 0x80000000n;
const CR4_PAE = 0x20n;
const EFER_LME_LMA = 0x100n | 0x400n;
const RFLAGS = 0x2n | (3n << 12n);

// Selectors: GDT entry 3 = 64-bit user code, 4 = user data, 5–6 = the TSS (RPL 3 on the user ones).
const SEL_CODE = 0x18 | 3;
const SEL_DATA = 0x20 | 3;
const SEL_TSS = 0x28;

/** The port the guest writes each loaded value to. */
const PORT = 0x10;
const KVM_EXIT_IO_OUT = 1;

/**
 * The guest's loop, at CODE:
 *   mov rax, [MAILBOX]   48 8b 04 25 <MAILBOX:u32>
 *   mov eax, [rax]       8b 00
 *   out PORT, eax        e7 <PORT>
 *   jmp CODE             eb f2
 */
const GUEST_CODE = new Uint8Array([0x48, 0x8b, 0x04, 0x25, ...u32le(Number(MAILBOX)), 0x8b, 0x00, 0xe7, PORT, 0xeb, 0xf2]);

function u32le(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

function u64le(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/** A flat 4 GiB segment register of DPL 3 (`code`: 64-bit code, else data). */
function userSegment(code: boolean): X86Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector: code ? SEL_CODE : SEL_DATA,
    type: code ? 0xb : 0x3,
    present: 1,
    dpl: 3,
    db: code ? 0 : 1,
    s: 1,
    l: code ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** The GDT: null, two unused, user code, user data, then the 16-byte 64-bit TSS descriptor. */
function gdtBytes(): Uint8Array {
  const tssLow =
    BigInt(TSS_LIMIT) | // limit 15:0
    ((TSS & 0xffffffn) << 16n) | // base 23:0
    (0x8bn << 40n) | // present, DPL 0, type 11 (busy 64-bit TSS, as TR holds it)
    (((TSS >> 24n) & 0xffn) << 56n); // base 31:24
  const entries = [0n, 0n, 0n, 0x00affb000000ffffn, 0x00cff3000000ffffn, tssLow, TSS >> 32n];
  return Buffer.concat(entries.map(u64le));
}

/**
 * The 64-bit TSS with an I/O permission bitmap that opens ports PORT…PORT+3 (and no other) to CPL3. IOPL=3
 * would be enough on VMX/SVM, but a PVM host (KVM on a guest without VT-x/AMD-V, like CI's) clears
 * RFLAGS.IOPL on entry and honours only the bitmap: with neither, CPL3 `out` is a #GP, i.e. a triple fault.
 */
function tssBytes(): Uint8Array {
  const tss = new Uint8Array(TSS_LIMIT + 1);
  new DataView(tss.buffer).setUint16(102, 104, true); // I/O map base: right after the TSS proper
  tss.fill(0xff, 104); // every port denied (1 bits), and the terminating byte
  // …but the four ports a 4-byte `out` to PORT touches (PORT is 4-aligned: one byte holds their bits).
  tss[104 + (PORT >> 3)] = 0xff & ~(0xf << (PORT & 7));
  return tss;
}

/** The identity page tables for [0, codeSize) and [regionGpa, regionGpa + regionSize), as (guest address, entry) writes. */
function pageTableEntries(codeSize: bigint, regionGpa: bigint, regionSize: bigint): { writes: [bigint, bigint][]; end: bigint } {
  const writes: [bigint, bigint][] = [[PML4, PDPT | TABLE]];
  const pdOf = new Map<bigint, bigint>(); // GiB index -> guest address of its page directory
  let nextPd = PD_FIRST;
  const map2M = (gpa: bigint): void => {
    const gib = gpa / GIB;
    let pd = pdOf.get(gib);
    if (pd === undefined) {
      pd = nextPd;
      nextPd += PAGE;
      pdOf.set(gib, pd);
      writes.push([PDPT + gib * 8n, pd | TABLE]);
    }
    writes.push([pd + ((gpa / MIB2) % 512n) * 8n, gpa | TABLE | PTE_PS]);
  };
  for (let a = 0n; a < codeSize; a += MIB2) map2M(a);
  for (let a = regionGpa; a < regionGpa + regionSize; a += MIB2) map2M(a);
  return { writes, end: nextPd };
}

/** The x86_64 half of the guest (see kvm-guest-base.ts for the shared one). */
const X86: GuestArch = {
  name: 'KvmX86Guest',
  arch: 'x64',
  noKvmHint: '',
  defaultGuestPhysAddr: DEFAULT_REGION_GPA,
  createVm: (sys) => sys.createVm(),
  missing: () => null,
  checkPlacement(_userspaceAddr, size, regionGpa) {
    if (size <= 0n) throw new RangeError(`the region must not be empty (size ${hex(size)})`);
    if (regionGpa < GIB || regionGpa % MIB2 !== 0n) throw new RangeError(`guestPhysAddr ${hex(regionGpa)} must be 2 MiB-aligned and at least 1 GiB`);
    if (regionGpa + size > MAX_GPA_END) throw new RangeError(`region ${hex(regionGpa)}+${hex(size)} ends past the ${hex(MAX_GPA_END)} this guest's page tables can map`);
  },
  configureVm: () => undefined,
  mapCode(native, regionGpa, size) {
    // GDT, TSS, code, mailbox and page tables, in memory the guest owns.
    const tables = pageTableEntries(MIB2, regionGpa, size);
    const code = UserMemory.map(native, tables.end, 'guest code and page tables');
    try {
      code.write(GDT, gdtBytes());
      code.write(TSS, tssBytes());
      code.write(CODE, GUEST_CODE);
      for (const [gpa, entry] of tables.writes) code.write(gpa, u64le(entry));
    } catch (e) {
      code.close();
      throw e;
    }
    return code;
  },
  setupVcpu(vcpu, sys) {
    // CPUID first: it sets the guest's physical address width (the region may lie above 64 GiB).
    vcpu.setX86Cpuid2(sys().supportedX86Cpuid());
    const s = vcpu.getX86Sregs();
    s.cs = userSegment(true);
    s.ds = s.es = s.fs = s.gs = s.ss = userSegment(false);
    s.tr = { base: TSS, limit: TSS_LIMIT, selector: SEL_TSS, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
    s.gdt = { base: GDT, limit: 7 * 8 - 1 };
    s.idt = { base: 0n, limit: 0 };
    s.cr0 = CR0;
    s.cr3 = PML4;
    s.cr4 = CR4_PAE;
    s.efer = EFER_LME_LMA;
    vcpu.setX86Sregs(s);
  },
};

/** Options of `KvmX86Guest.create` (the region: `memslot`, or a VMM's registered `region` on its `vm`). */
export type KvmX86GuestOptions = KvmGuestOptions;

/** A one-vCPU x86_64 KVM guest that reads a host range through one memslot. */
export class KvmX86Guest extends KvmGuestBase {
  #stats: { fd: number; dataOffset: number; descs: KvmStatDesc[]; dataBytes: number } | undefined;

  private constructor(parts: GuestParts) {
    super(parts, 'KvmX86Guest');
  }

  /**
   * Null when a guest can run here, else a one-line reason to skip with (not x86_64, no /dev/kvm,
   * cannot open it, cannot create a VM).
   */
  static usable(native: NativeLayer = realNative): string | null {
    return guestUsable(X86, native);
  }

  /**
   * Create the VM (unless `vm` is given), register the code slot and the region slot (once; not
   * when a registered `region` is given), and set up the vCPU in 64-bit long mode at CPL3, ready
   * for `read32`. The region's guest-physical address must be 2 MiB-aligned, at least 1 GiB and
   * end below 512 GiB (default 4 GiB).
   * @throws RangeError for a region that is empty, misplaced or too large for one PDPT, or bad `slots` / `region`
   * @throws RemapError E_DEVICE_UNAVAILABLE without /dev/kvm, E_KVM when KVM refuses a step
   */
  static create(opts: KvmX86GuestOptions): KvmX86Guest {
    return new KvmX86Guest(buildGuest(X86, opts));
  }

  /**
   * Run the guest until it has loaded 4 bytes at `offset` of the region, and return them
   * (little-endian u32): one KVM_RUN, plus a KVM_SET_REGS after an error.
   * @throws RangeError if [offset, offset+4) is outside the region
   * @throws RemapError E_CLOSED after close(); E_KVM naming the offset if the load faults (EFAULT: the host page is unmapped) or the guest exits for any other reason
   */
  read32(offset: bigint): number {
    // Back to the top of the loop (after an error the vCPU may sit mid-loop with a stale address in rax).
    const exit = this.runLoad(offset, 4, MAILBOX, () => this.vcpu.setX86Regs({ rip: CODE, rflags: RFLAGS, rsp: MAILBOX }));
    if (exit.reason === 'io' && exit.port === PORT && exit.direction === KVM_EXIT_IO_OUT && exit.size === 4) {
      return this.vcpu.runBytes(exit.dataOffset, 4).readUInt32LE(0);
    }
    throw this.failedLoad(new RemapError('E_KVM', `guest load at offset ${hex(offset)} of the region ended in ${describeExit(exit)}${this.#where()}, not the expected I/O exit`));
  }

  /**
   * The NUL-terminated ASCII string at `offset` of the region (at most `max` bytes), as the guest
   * loads it 4 bytes at a time: how a test or the demo reads a fake ESB page's stamp from inside.
   * @throws RemapError as read32
   */
  readString(offset: bigint, max = 32): string {
    return this.readStringWith(offset, max, 4, (o) => {
      const v = this.read32(o);
      return [0, 1, 2, 3].map((i) => (v >>> (8 * i)) & 0xff); // little-endian: low byte first in memory
    });
  }

  /**
   * The vCPU's KVM counters now (KVM_GET_STATS_FD), by name: `exits`, `insn_emulation`,
   * `pf_fixed`, `pf_taken`, `io_exits`, … A test compares two snapshots to tell that loads ran
   * natively through KVM's MMU (page faults, one emulated instruction per read: the `out`) rather
   * than through the instruction emulator. The stats fd is read with Node's fs (pread).
   * @throws RemapError E_KVM if the kernel has no binary stats (older than 5.14); E_CLOSED after close()
   */
  kvmStats(): ReadonlyMap<string, bigint> {
    this.checkOpen();
    const pread = (fd: number, length: number, position: number): Buffer => {
      const buf = Buffer.alloc(length);
      try {
        if (readSync(fd, buf, 0, length, position) !== length) throw new Error(`short read of ${length} bytes at ${position}`);
      } catch (e) {
        throw new RemapError('E_KVM', `reading the KVM stats fd ${fd} of vCPU 0 failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      return buf;
    };
    if (!this.#stats) {
      const fd = this.vcpu.openStatsFd();
      try {
        const h = decodeStatsHeader(pread(fd, KVM_STATS_HEADER_BYTES, 0));
        const descs = decodeStatsDescs(h, pread(fd, statsDescBytes(h), h.descOffset));
        this.#stats = { fd, dataOffset: h.dataOffset, descs, dataBytes: statsDataBytes(descs) };
      } catch (e) {
        this.native.close(fd);
        throw e;
      }
    }
    const s = this.#stats;
    return decodeStatsData(s.descs, pread(s.fd, s.dataBytes, s.dataOffset));
  }

  /** ` at rip 0x…, rax 0x…` for an error message (empty if the registers cannot be read). */
  #where(): string {
    try {
      const r = this.vcpu.getX86Regs();
      return ` at rip ${hex(r.rip)} (rax ${hex(r.rax)})`;
    } catch {
      return '';
    }
  }

  protected override releaseFirst(): (() => void)[] {
    const stats = this.#stats;
    this.#stats = undefined;
    return stats ? [() => this.native.close(stats.fd)] : [];
  }
}

function describeExit(exit: RunExit): string {
  const name = kvmExitName(exit.code);
  switch (exit.reason) {
    case 'io':
      return `${name} (port ${hex(exit.port)}, ${exit.direction === KVM_EXIT_IO_OUT ? 'out' : 'in'}, size ${exit.size})`;
    case 'mmio':
      return `${name} (guest-physical ${hex(exit.physAddr)}, outside every memslot)`;
    case 'internal-error':
      return `${name} (suberror ${exit.suberror})`;
    case 'fail-entry':
      return `${name} (hardware reason ${hex(exit.hardwareReason)})`;
    default:
      return exit.code === KVM_EXIT.SHUTDOWN ? `${name} (triple fault: the guest took an exception)` : name;
  }
}
