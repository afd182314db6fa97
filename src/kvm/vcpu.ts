/**
 * A vCPU fd and its `kvm_run` page. KVM_RUN enters the guest until something needs userspace; the
 * reason is then in the shared `kvm_run` mapping (mmapped from the vCPU fd at offset 0, size
 * KVM_GET_VCPU_MMAP_SIZE), which `run()` decodes. An I/O-port exit's data lies inside that same
 * mapping at `io.data_offset`: `runBytes()` reads it. Register access is per architecture: the
 * x86 codecs live in `x86.ts`, the powerpc ones in `ppc.ts`. ONE_REG values travel through a
 * userspace pointer, so the vCPU keeps a scratch page of its own for them (mapped on first use,
 * unmapped by `close()`).
 */
import { RemapError, errnoOf, errnoValue } from '../errors.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, type NativeLayer } from '../native/index.js';
import { KvmFd, hex, kvmError, teardown } from './fd.js';
import { KVM_EXIT, SIZEOF_PPC_REGS, SIZEOF_X86_REGS, SIZEOF_X86_SREGS } from './ioctls.js';
import { KVM_REG_SIZE_MASK, KVM_REG_SIZE_U64, decodePpcRegs, encodePpcRegs, type PpcRegs } from './ppc.js';
import { KVM_RUN_HEADER_BYTES, decodeRunExit, packEnableCap, packOneReg, type RunExit } from './structs.js';
import { UserMemory } from './user-memory.js';
import {
  decodeX86Regs,
  decodeX86Sregs,
  encodeX86Regs,
  encodeX86Sregs,
  cpuid2Length,
  type X86Regs,
  type X86Sregs,
} from './x86.js';

const EINTR = errnoValue('EINTR');

/** A vCPU: its fd and its mapped `kvm_run` structure. */
export class KvmVcpu extends KvmFd {
  #run: bigint;
  readonly #runSize: bigint;
  #scratch: UserMemory | undefined;

  /**
   * @internal Use `KvmVm.createVcpu`.
   * @throws RemapError E_KVM if `kvm_run` cannot be mapped (the fd is closed then)
   */
  constructor(native: NativeLayer, fd: number, /** The vCPU id. */ readonly id: number, runSize: number) {
    super(native, fd, `vCPU ${id}`);
    this.#runSize = BigInt(runSize);
    try {
      // kvm_run is shared with the kernel: MAP_SHARED at offset 0 of the vCPU fd.
      this.#run = native.mmap(0n, this.#runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
    } catch (e) {
      this.#run = 0n;
      const err = kvmError(`mapping kvm_run (${hex(runSize)} bytes) of ${this.describe()}`, e);
      this.close();
      throw err;
    }
  }

  /** Address of the mapped `kvm_run`. */
  get runAddr(): bigint {
    return this.#run;
  }

  /**
   * KVM_RUN once, then decode why it returned. An interrupted run (EINTR: a signal reached this
   * thread) comes back as exit reason KVM_EXIT_INTR, not as an error, so callers can simply re-run.
   * @throws RemapError E_KVM if KVM_RUN fails (e.g. EFAULT: guest memory whose host mapping is gone)
   */
  run(): RunExit {
    try {
      this.ioctl('KVM_RUN', 0);
    } catch (e) {
      if (errnoOf(e) !== EINTR) throw e;
      return { code: KVM_EXIT.INTR, reason: 'other' };
    }
    return decodeRunExit(this.native.peek(this.#run, KVM_RUN_HEADER_BYTES));
  }

  /**
   * Bytes of the `kvm_run` mapping (e.g. an I/O exit's data at `dataOffset`).
   * @throws RangeError outside the mapping
   */
  runBytes(offset: bigint, length: number): Buffer {
    if (offset < 0n || offset + BigInt(length) > this.#runSize) throw new RangeError(`${hex(offset)}+${length} is outside kvm_run (${hex(this.#runSize)} bytes)`);
    return this.native.peek(this.#run + offset, length);
  }

  /**
   * KVM_GET_STATS_FD (needs KVM_CAP_BINARY_STATS_FD): a new read-only fd of this vCPU's counters,
   * owned by the caller (decode it with `stats.ts`).
   * @throws RemapError E_KVM if the kernel refuses (older than 5.14)
   */
  openStatsFd(): number {
    return this.ioctl('KVM_GET_STATS_FD', 0);
  }

  /** KVM_GET_REGS (x86_64). @throws RemapError E_KVM if refused or not x86 */
  getX86Regs(): X86Regs {
    const buf = new Uint8Array(SIZEOF_X86_REGS);
    this.#x86Only('KVM_GET_REGS');
    this.ioctl('KVM_GET_REGS', buf);
    return decodeX86Regs(buf);
  }

  /** KVM_SET_REGS (x86_64); registers not given are set to 0. @throws RemapError E_KVM if refused or not x86 */
  setX86Regs(regs: Partial<X86Regs>): void {
    this.#x86Only('KVM_SET_REGS');
    this.ioctl('KVM_SET_REGS', encodeX86Regs(regs));
  }

  /** KVM_GET_SREGS (x86_64). @throws RemapError E_KVM if refused or not x86 */
  getX86Sregs(): X86Sregs {
    const buf = new Uint8Array(SIZEOF_X86_SREGS);
    this.ioctl('KVM_GET_SREGS', buf);
    return decodeX86Sregs(buf);
  }

  /** KVM_SET_SREGS (x86_64). @throws RemapError E_KVM if refused or not x86 */
  setX86Sregs(sregs: X86Sregs): void {
    this.ioctl('KVM_SET_SREGS', encodeX86Sregs(sregs));
  }

  /**
   * KVM_SET_CPUID2 with a `struct kvm_cpuid2` (as KVM_GET_SUPPORTED_CPUID filled it in).
   * @throws RemapError E_KVM if refused or not x86
   */
  setX86Cpuid2(cpuid2: Uint8Array): void {
    this.ioctl('KVM_SET_CPUID2', cpuid2.subarray(0, cpuid2Length(cpuid2)));
  }

  /** KVM_GET_REGS (powerpc). @throws RemapError E_KVM if refused or not ppc64 */
  getPpcRegs(): PpcRegs {
    this.#ppcOnly('KVM_GET_REGS');
    const buf = new Uint8Array(SIZEOF_PPC_REGS);
    this.ioctl('KVM_GET_REGS', buf);
    return decodePpcRegs(buf);
  }

  /** KVM_SET_REGS (powerpc); registers not given are set to 0. @throws RemapError E_KVM if refused or not ppc64 */
  setPpcRegs(regs: Partial<PpcRegs>): void {
    this.#ppcOnly('KVM_SET_REGS');
    this.ioctl('KVM_SET_REGS', encodePpcRegs(regs));
  }

  /**
   * KVM_GET_ONE_REG (needs KVM_CAP_ONE_REG) of a 64-bit register (`id` carries KVM_REG_SIZE_U64),
   * in host byte order.
   * @throws RangeError if `id` is not a 64-bit register's; RemapError E_KVM if the kernel refuses (EINVAL: no such register here)
   */
  getOneRegU64(id: bigint): bigint {
    checkU64Reg(id);
    const page = this.#page();
    page.writeU64(0n, 0n);
    this.ioctl('KVM_GET_ONE_REG', packOneReg(id, page.addr), `KVM_GET_ONE_REG ${hex(id)}`);
    return page.readU64(0n);
  }

  /**
   * KVM_SET_ONE_REG (needs KVM_CAP_ONE_REG) of a 64-bit register, in host byte order.
   * @throws RangeError if `id` is not a 64-bit register's; RemapError E_KVM if the kernel refuses
   */
  setOneRegU64(id: bigint, value: bigint): void {
    checkU64Reg(id);
    const page = this.#page();
    page.writeU64(0n, value);
    this.ioctl('KVM_SET_ONE_REG', packOneReg(id, page.addr), `KVM_SET_ONE_REG ${hex(id)} = ${hex(value)}`);
  }

  /**
   * KVM_ENABLE_CAP on the vCPU fd (needs KVM_CAP_ENABLE_CAP), e.g. KVM_CAP_PPC_PAPR.
   * @throws RemapError E_KVM if the kernel refuses
   */
  enableCap(cap: number, args: readonly bigint[] = []): void {
    this.ioctl('KVM_ENABLE_CAP', packEnableCap(cap, args), `KVM_ENABLE_CAP ${cap}`);
  }

  #page(): UserMemory {
    this.#scratch ??= UserMemory.map(this.native, BigInt(this.native.pageSize), `ONE_REG scratch page of ${this.describe()}`);
    return this.#scratch;
  }

  #x86Only(name: 'KVM_GET_REGS' | 'KVM_SET_REGS'): void {
    // KVM_GET_REGS exists on ppc64 too, with another struct: refuse rather than misdecode.
    if (this.ioctls.arch !== 'x64') throw new RemapError('E_KVM', `${name} with x86_64's struct kvm_regs on ${this.ioctls.arch} (${this.describe()})`);
  }

  #ppcOnly(name: 'KVM_GET_REGS' | 'KVM_SET_REGS'): void {
    if (this.ioctls.arch !== 'ppc64') throw new RemapError('E_KVM', `${name} with powerpc's struct kvm_regs on ${this.ioctls.arch} (${this.describe()})`);
  }

  protected override releaseResources(): void {
    // Best effort: release both, report the first failure.
    const scratch = this.#scratch;
    this.#scratch = undefined;
    teardown([() => scratch?.close(), () => this.#unmapRun()]);
  }

  #unmapRun(): void {
    const run = this.#run;
    this.#run = 0n;
    if (run !== 0n) {
      try {
        this.native.munmap(run, this.#runSize);
      } catch (e) {
        throw kvmError(`unmapping kvm_run of ${this.describe()}`, e);
      }
    }
  }
}

/** The kernel copies as many bytes as the id's size field says: only a u64 id fits the u64 read/written here. */
function checkU64Reg(id: bigint): void {
  if ((id & KVM_REG_SIZE_MASK) !== KVM_REG_SIZE_U64) {
    throw new RangeError(`ONE_REG id 0x${id.toString(16)} is not a 64-bit register's (size field 0x${((id & KVM_REG_SIZE_MASK) >> 52n).toString(16)}, want 0x3)`);
  }
}
