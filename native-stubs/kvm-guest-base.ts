/**
 * The half the two KVM guest harnesses share (`KvmX86Guest`, `KvmPpcGuest`): a one-vCPU guest
 * that reads a host range through ONE memslot, one load per KVM_RUN, so every mmap(MAP_FIXED) the
 * host makes inside the range must reach it through KVM's MMU notifiers on its very next load.
 * Cloud Hypervisor's one vCPU `run()` for every architecture (`hypervisor/src/kvm/mod.rs`) is the
 * model: what is the same everywhere lives here, an architecture supplies a `GuestArch`.
 *
 * Data flow of `create` (`buildGuest`): check the placement (pure, the architecture's rules) → the
 * VM (a new one of the architecture's type, or the caller's `vm`) → capabilities → VM-wide setup →
 * the code slot at guest-physical 0 (memory owned here, the architecture's image) → the region
 * slot, registered once (or the caller's already registered `region`: a VMM's own memslot) → the
 * vCPU and its registers. A failure undoes what was built, last step first (`unwind`).
 *
 * `runLoad` is the KVM_RUN loop every read goes through: put the address in the mailbox (plain
 * memory), re-enter the loop's top after an error, run, re-run on EINTR (a signal), and turn
 * EFAULT (no host page behind the region: a hole) into a `RemapError('E_KVM')` naming the offset.
 * The architecture decodes the exit.
 */
import { existsSync } from 'node:fs';
import { RemapError, errnoOf, errnoValue } from '../src/errors.js';
import {
  KVM_CAP,
  KVM_EXIT,
  KvmSystem,
  kvmOptedOut,
  MemslotTable,
  UserMemory,
  hex,
  teardown,
  unwind,
  type KvmMemslot,
  type KvmVcpu,
  type KvmVm,
  type RunExit,
} from '../src/kvm/index.js';
import { realNative, type NativeLayer } from '../src/native/index.js';

const EFAULT = errnoValue('EFAULT');

/** Where a guest reads: the options both harnesses take. */
export interface KvmGuestOptions {
  /**
   * The host range to register as the guest's one region memslot (e.g. `esb.memslot`). Not
   * needed when `region` is given.
   */
  readonly memslot?: { readonly userspaceAddr: bigint; readonly size: bigint };
  /** Guest-physical address of the region (the architecture's default and alignment rules apply). */
  readonly guestPhysAddr?: bigint;
  /**
   * The VM to run in (e.g. a VMM's, `KvmVm.fromFd(vmFd)`); not closed by the guest. Default: a VM
   * of the guest's own. A given VM must run no other guest code, and KVM cannot remove a vCPU, so
   * the guest's vCPU stays in the VM after `close()` (which deletes the memslots the guest added).
   */
  readonly vm?: KvmVm;
  /** The memslot table of `vm`, when other memslots are registered on it through one (slot ids must not collide). */
  readonly slots?: MemslotTable;
  /**
   * A memslot already registered in `slots` (the VMM's own registration of its ESB region): the
   * guest reads through it and registers only its code slot; `close()` leaves it registered.
   */
  readonly region?: KvmMemslot;
  /** The vCPU id (default 0; another one for a second guest on the same VM). */
  readonly vcpuId?: number;
  /** Native layer for every system call (default: the real one). */
  readonly native?: NativeLayer;
}

/** What an architecture supplies: its VM, its checks, its code image and its vCPU setup. */
export interface GuestArch {
  /** Class name, for messages (`KvmX86Guest`). */
  readonly name: string;
  /** `process.arch` of the hosts it runs on. */
  readonly arch: 'x64' | 'ppc64';
  /** Why not, when the host's /dev/kvm is missing (a hint such as "is kvm-hv loaded?"), or ''. */
  readonly noKvmHint: string;
  /** KVM_CREATE_VM of the architecture's type. */
  createVm(sys: KvmSystem): KvmVm;
  /** The capability a VM lacks for this guest, or null. */
  missing(vm: KvmVm): string | null;
  /** @throws RangeError for a region the guest cannot place (pure, before any system call) */
  checkPlacement(userspaceAddr: bigint, size: bigint, guestPhysAddr: bigint, native: NativeLayer): void;
  /** The architecture's default guest-physical address of the region. */
  readonly defaultGuestPhysAddr: bigint;
  /** VM-wide setup before the slots (ppc64: the radix MMU). */
  configureVm(vm: KvmVm): void;
  /** The code slot's memory with the guest's image in it, for a region at `guestPhysAddr`. */
  mapCode(native: NativeLayer, guestPhysAddr: bigint, size: bigint): UserMemory;
  /** Set the vCPU up (CPUID, segments, PAPR mode, …); `sys` is /dev/kvm, open until `create` returns. */
  setupVcpu(vcpu: KvmVcpu, sys: () => KvmSystem): void;
}

/** The parts a built guest holds. */
export interface GuestParts {
  /** Native layer of every call. */
  readonly native: NativeLayer;
  /** /dev/kvm when the guest made its own VM (closed with it), else null. */
  readonly system: KvmSystem | null;
  /** The VM the guest runs in (its own, or the caller's). */
  readonly vm: KvmVm;
  /** The guest's one vCPU. */
  readonly vcpu: KvmVcpu;
  /** The code slot's memory (image, mailbox), owned by the guest. */
  readonly code: UserMemory;
  /** The memslot table of `vm` both slots are registered in. */
  readonly slots: MemslotTable;
  /** The code slot, at guest-physical 0. */
  readonly codeSlot: KvmMemslot;
  /** The region's slot (the guest's registration, or the caller's). */
  readonly region: KvmMemslot;
  /** Whether the guest registered the region slot (and so deletes it on close). */
  readonly ownsRegion: boolean;
}

/**
 * Null when a guest of `arch` can run here, else a one-line reason to skip with (wrong
 * architecture, no /dev/kvm, cannot open it, cannot create the VM, a missing capability).
 */
export function guestUsable(arch: GuestArch, native: NativeLayer = realNative): string | null {
  const optedOut = kvmOptedOut(); // XIVE_REMAP_NO_KVM: as on a host without KVM, whatever this one has
  if (optedOut !== null) return optedOut;
  if (native.arch !== arch.arch) return `the KVM ${arch.arch === 'x64' ? 'x86' : 'POWER'} guest needs ${arch.arch === 'x64' ? 'an x86_64' : 'a ppc64'} host; this one is ${native.arch}`;
  if (!existsSync('/dev/kvm')) return `no /dev/kvm on this host${arch.noKvmHint ? ` (${arch.noKvmHint})` : ''}`;
  try {
    const sys = KvmSystem.open({ native });
    try {
      if (sys.checkExtension(KVM_CAP.USER_MEMORY) <= 0) return '/dev/kvm lacks KVM_CAP_USER_MEMORY';
      let vm: KvmVm;
      try {
        vm = arch.createVm(sys);
      } catch (e) {
        return `cannot create a VM${arch.noKvmHint ? ` (${arch.noKvmHint})` : ''}: ${e instanceof Error ? e.message : String(e)}`;
      }
      try {
        const missing = arch.missing(vm);
        if (missing) return `KVM here lacks ${missing}`;
      } finally {
        vm.close();
      }
    } finally {
      sys.close();
    }
  } catch (e) {
    return `/dev/kvm is not usable: ${e instanceof Error ? e.message : String(e)}`;
  }
  return null;
}

/**
 * Build a guest's parts (see the module comment for the order).
 * @throws RangeError for a bad placement, `slots` without `vm`, `region` without `slots` or not in it
 * @throws RemapError E_DEVICE_UNAVAILABLE on another architecture, without /dev/kvm or a capability;
 *   E_KVM when KVM refuses a step. After a failure on a caller's `vm`, the memslots the guest added
 *   are removed, but the VM keeps its VM-wide setup and, if it was created, the vCPU.
 */
export function buildGuest(arch: GuestArch, opts: KvmGuestOptions): GuestParts {
  const native = opts.native ?? realNative;
  const name = arch.name;
  if (native.arch !== arch.arch) throw new RemapError('E_DEVICE_UNAVAILABLE', `${name} needs ${arch.arch === 'x64' ? 'an x86_64' : 'a ppc64'} host, this is ${native.arch}`);
  if (opts.slots && !opts.vm) throw new RangeError(`${name}: \`slots\` is the memslot table of a given \`vm\`; none was given`);
  if (opts.region && (!opts.slots || opts.slots.get(opts.region.slot) !== opts.region)) {
    throw new RangeError(`${name}: \`region\` must be a memslot registered in the given \`slots\` (the VM's memslot table)`);
  }
  const userspaceAddr = opts.region?.userspaceAddr ?? opts.memslot?.userspaceAddr;
  const size = opts.region?.size ?? opts.memslot?.size;
  if (userspaceAddr === undefined || size === undefined) throw new RangeError(`${name}: give the host range to read (\`memslot\`) or a registered \`region\``);
  const regionGpa = opts.region?.guestPhysAddr ?? opts.guestPhysAddr ?? arch.defaultGuestPhysAddr;
  arch.checkPlacement(userspaceAddr, size, regionGpa, native);

  const undo: (() => void)[] = [];
  try {
    let system: KvmSystem | null = null;
    let vm = opts.vm;
    if (!vm) {
      if (!existsSync('/dev/kvm')) throw new RemapError('E_DEVICE_UNAVAILABLE', `${name}: no /dev/kvm on this host${arch.noKvmHint ? ` (${arch.noKvmHint})` : ''}`);
      const sys = KvmSystem.open({ native });
      system = sys;
      undo.push(() => sys.close());
      const own = arch.createVm(sys);
      vm = own;
      undo.push(() => own.close());
    }
    const theVm = vm;
    const missing = arch.missing(theVm);
    if (missing) throw new RemapError('E_DEVICE_UNAVAILABLE', `${name}: ${theVm.describe()} lacks ${missing}`);
    const slots = opts.slots ?? MemslotTable.open(theVm);
    arch.configureVm(theVm);

    const code = arch.mapCode(native, regionGpa, size);
    undo.push(() => code.close());
    const codeSlot = slots.add({ guestPhysAddr: 0n, size: code.length, userspaceAddr: code.addr });
    // On the guest's own VM, closing the VM drops every slot; on a caller's, remove what we added.
    if (!system) undo.push(() => slots.remove(codeSlot.slot));
    const region = opts.region ?? slots.add({ guestPhysAddr: regionGpa, size, userspaceAddr });
    if (!system && !opts.region) undo.push(() => slots.remove(region.slot));

    const vcpu = theVm.createVcpu(opts.vcpuId ?? 0);
    undo.push(() => vcpu.close());
    // /dev/kvm for the setup (x86's supported CPUID): the guest's own, or one opened just for it.
    let setupSys: KvmSystem | null = system;
    try {
      arch.setupVcpu(vcpu, () => (setupSys ??= KvmSystem.open({ native })));
    } finally {
      if (setupSys !== system) setupSys?.close();
    }
    return { native, system, vm: theVm, vcpu, code, slots, codeSlot, region, ownsRegion: !opts.region };
  } catch (e) {
    unwind(undo);
    throw e;
  }
}

/** A built guest: the getters, the memslot move of approach 2, the KVM_RUN loop and teardown. */
export abstract class KvmGuestBase {
  /** Native layer of every call. */
  protected readonly native: NativeLayer;
  /** The guest's vCPU. */
  protected readonly vcpu: KvmVcpu;
  /** The code slot's memory (the mailbox is in it). */
  protected readonly code: UserMemory;
  readonly #parts: GuestParts;
  #region: KvmMemslot;
  readonly #mailbox = Buffer.alloc(8);
  #resetNeeded = true;
  #closed = false;

  protected constructor(parts: GuestParts, /** Class name, for messages. */ protected readonly className: string) {
    this.#parts = parts;
    this.native = parts.native;
    this.vcpu = parts.vcpu;
    this.code = parts.code;
    this.#region = parts.region;
  }

  /** Guest-physical address of the region. */
  get guestPhysAddr(): bigint {
    return this.#region.guestPhysAddr;
  }

  /** The region's memslot id. */
  get slot(): number {
    return this.#region.slot;
  }

  /** How many KVM_SET_USER_MEMORY_REGION calls were made for the region's slot through its table (1: registered once). */
  get memslotUpdates(): number {
    return this.#parts.slots.updates(this.#region.slot);
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Approach 2 of seeds/004, for comparison: move the region's memslot to another host range of
   * the same size — delete the slot (size 0), then add it again at the same guest address. Both
   * calls count in `memslotUpdates`.
   * @throws RemapError E_CLOSED after close(); E_KVM if the kernel refuses either call
   */
  remapRegion(userspaceAddr: bigint): void {
    this.checkOpen();
    this.#region = this.#parts.slots.move(this.#region.slot, userspaceAddr);
  }

  /** @throws RemapError E_CLOSED after close() */
  protected checkOpen(): void {
    if (this.#closed) throw new RemapError('E_CLOSED', `${this.className} is closed`);
  }

  /** `guest load at offset 0x… of the region, slot N (…)`, for messages. */
  protected where(offset: bigint): string {
    return `guest load at offset ${hex(offset)} of the region, ${this.#parts.slots.describe(this.#region.slot)}`;
  }

  /**
   * Have the guest load `width` bytes at `offset` of the region: the guest-physical address goes in
   * the mailbox (u64 little-endian at `mailbox` in the code slot: both guests are little-endian),
   * `reset` puts the vCPU at the top of its loop (first run, and after any error), then KVM_RUN
   * until an exit other than EINTR. A failed KVM_RUN leaves as E_KVM naming the offset.
   * @throws RangeError if the load is outside the region
   * @throws RemapError E_CLOSED after close(); E_KVM if KVM_RUN fails (EFAULT: no host page)
   */
  protected runLoad(offset: bigint, width: number, mailbox: bigint, reset: () => void): RunExit {
    this.checkOpen();
    const region = this.#region;
    if (offset < 0n || offset + BigInt(width) > region.size) throw new RangeError(`offset ${hex(offset)} is outside the ${hex(region.size)}-byte region`);
    this.#mailbox.writeBigUInt64LE(region.guestPhysAddr + offset);
    this.native.poke(this.code.addr + mailbox, this.#mailbox);
    if (this.#resetNeeded) {
      reset();
      this.#resetNeeded = false;
    }
    for (;;) {
      let exit: RunExit;
      try {
        exit = this.vcpu.run();
      } catch (e) {
        this.#resetNeeded = true;
        if (errnoOf(e) === EFAULT) {
          throw new RemapError('E_KVM', `${this.where(offset)}, faulted: KVM_RUN returned EFAULT (no host page at ${hex(region.userspaceAddr + offset)}?)`, { cause: e });
        }
        throw new RemapError('E_KVM', `${this.where(offset)}, failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      if (exit.code !== KVM_EXIT.INTR) return exit; // EINTR: a signal interrupted KVM_RUN, just run again
    }
  }

  /**
   * The NUL-terminated ASCII string at `offset` of the region, at most `max` bytes, as the guest
   * loads it `width` bytes at a time (`load` returns one load's bytes in memory order): how a test
   * or the demo reads a fake ESB page's stamp from inside.
   */
  protected readStringWith(offset: bigint, max: number, width: number, load: (offset: bigint) => number[]): string {
    const bytes: number[] = [];
    for (let w = 0n; w < BigInt(max); w += BigInt(width)) {
      for (const c of load(offset + w)) {
        if (c === 0 || bytes.length === max) return String.fromCharCode(...bytes);
        bytes.push(c);
      }
    }
    return String.fromCharCode(...bytes);
  }

  /** The exit was not the expected one: the next load starts from the loop's top again. */
  protected failedLoad(error: RemapError): RemapError {
    this.#resetNeeded = true;
    return error;
  }

  /** Steps an architecture releases first, before the vCPU (e.g. a stats fd). */
  protected releaseFirst(): (() => void)[] {
    return [];
  }

  /**
   * Release everything; later calls do nothing. Own VM: close the vCPU, the VM and /dev/kvm, then
   * unmap the code slot — the vCPU holds a reference on the VM, so it goes first, and the VM (with
   * its memslots) goes before the memory a slot points at. Given VM: delete the memslots the guest
   * added first (so no slot of that VM points at freed memory; a caller's `region` stays), then
   * close the vCPU fd (the vCPU itself stays in the VM), then unmap the code.
   * @throws RemapError E_KVM with the first teardown failure (after releasing everything)
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const p = this.#parts;
    const region = this.#region;
    teardown([
      ...this.releaseFirst(),
      ...(p.system
        ? [() => p.vcpu.close(), () => p.vm.close(), () => p.system?.close()]
        : [p.ownsRegion && (() => p.slots.remove(region.slot)), () => p.slots.remove(p.codeSlot.slot), () => p.vcpu.close()]),
      () => p.code.close(),
    ]);
  }
}
