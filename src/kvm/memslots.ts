/**
 * Memslots: which guest-physical ranges are backed by which host (userspace) ranges.
 *
 * Approach 3 rests on one fact: the ESB region is registered as ONE memslot, once, and KVM learns
 * of every later mmap(MAP_FIXED) inside it through its MMU notifiers, so the memslot is never
 * touched again (invariant 1). This module is where that is made countable: every
 * KVM_SET_USER_MEMORY_REGION goes through a `MemslotTable`, which allocates slot ids (reusing
 * freed ones, below the KVM_CAP_NR_MEMSLOTS limit) and counts the calls made for each slot.
 *
 * Data flow: `MemslotTable.open(vm)` asks the kernel for KVM_CAP_USER_MEMORY and
 * KVM_CAP_NR_MEMSLOTS → `add()` takes the lowest free id from the (pure) `SlotIdAllocator`, issues
 * the ioctl, and records the slot; the kernel's refusals (EEXIST overlap, EINVAL misaligned) leave
 * as `RemapError('E_KVM')` naming the slot and range, and give the id back.
 */
import { RemapError, errnoOf, errnoValue } from '../errors.js';
import { hex } from './fd.js';
import { KVM_CAP } from './ioctls.js';
import { describeMemslot, type KvmVm } from './vm.js';

/** Memslot flag: KVM logs writes (dirty page tracking). */
export const KVM_MEM_LOG_DIRTY_PAGES = 1;
/** Memslot flag: guest writes exit to userspace as MMIO (needs KVM_CAP_READONLY_MEM). */
export const KVM_MEM_READONLY = 2;

const U64_MAX = (1n << 64n) - 1n;
const EEXIST = errnoValue('EEXIST');

/** Slot ids `0 … limit-1`; `allocate()` hands out the lowest free id, so freed ids are reused first. Pure. */
export class SlotIdAllocator {
  readonly #used = new Set<number>();
  /** Ids below this have been handed out at least once; freed ones among them wait in `#freed`. */
  #next = 0;
  readonly #freed: number[] = []; // kept sorted ascending

  /** @throws RangeError unless limit is a positive integer */
  constructor(/** How many ids exist (KVM_CAP_NR_MEMSLOTS). */ readonly limit: number) {
    if (!Number.isInteger(limit) || limit <= 0) throw new RangeError(`memslot limit must be a positive integer, got ${limit}`);
  }

  /** The lowest free id. @throws RemapError E_KVM when all `limit` ids are in use */
  allocate(): number {
    const id = this.#freed.shift() ?? (this.#next < this.limit ? this.#next++ : undefined);
    if (id === undefined) throw new RemapError('E_KVM', `all ${this.limit} memslot ids are in use (KVM_CAP_NR_MEMSLOTS)`);
    this.#used.add(id);
    return id;
  }

  /** Give an id back for reuse. @throws RangeError if it is not allocated */
  free(id: number): void {
    if (!this.#used.delete(id)) throw new RangeError(`memslot id ${id} is not allocated`);
    let i = 0;
    while (i < this.#freed.length && (this.#freed[i] as number) < id) i++;
    this.#freed.splice(i, 0, id);
  }

  /** Whether `id` is currently handed out. */
  isAllocated(id: number): boolean {
    return this.#used.has(id);
  }

  /** How many ids are handed out. */
  get inUse(): number {
    return this.#used.size;
  }
}

/** What to register: a guest-physical range and the host range behind it. */
export interface MemslotRequest {
  /** First guest-physical byte (page-aligned). */
  readonly guestPhysAddr: bigint;
  /** Bytes (a positive multiple of the page size). */
  readonly size: bigint;
  /** First byte of the host mapping (page-aligned). */
  readonly userspaceAddr: bigint;
  /** KVM_MEM_* flags (default 0). */
  readonly flags?: number;
}

/**
 * A memslot registered through a `MemslotTable` (slot id, guest and host ranges). Not to be
 * confused with `EsbController.memslot`, the host range a region offers for registration.
 */
export interface KvmMemslot {
  /** The slot id the kernel knows it by. */
  readonly slot: number;
  /** First guest-physical byte. */
  readonly guestPhysAddr: bigint;
  /** Bytes. */
  readonly size: bigint;
  /** First byte of the host mapping. */
  readonly userspaceAddr: bigint;
  /** KVM_MEM_* flags. */
  readonly flags: number;
}

/** The memslots this library registered on one VM, with a KVM_SET_USER_MEMORY_REGION count per slot id. */
export class MemslotTable {
  readonly #vm: KvmVm;
  readonly #ids: SlotIdAllocator;
  readonly #slots = new Map<number, KvmMemslot>();
  readonly #updates = new Map<number, number>();

  private constructor(vm: KvmVm, limit: number) {
    this.#vm = vm;
    this.#ids = new SlotIdAllocator(limit);
  }

  /**
   * A table for a VM, after checking KVM_CAP_USER_MEMORY and reading KVM_CAP_NR_MEMSLOTS.
   * @throws RemapError E_KVM if the kernel lacks user memory slots or the check fails
   */
  static open(vm: KvmVm): MemslotTable {
    if (vm.checkExtension(KVM_CAP.USER_MEMORY) <= 0) {
      throw new RemapError('E_KVM', `${vm.describe()}: the kernel lacks KVM_CAP_USER_MEMORY`);
    }
    const limit = vm.checkExtension(KVM_CAP.NR_MEMSLOTS);
    if (limit <= 0) throw new RemapError('E_KVM', `${vm.describe()}: KVM_CAP_NR_MEMSLOTS is ${limit}`);
    return new MemslotTable(vm, limit);
  }

  /** The number of memslots the VM may have (KVM_CAP_NR_MEMSLOTS). */
  get limit(): number {
    return this.#ids.limit;
  }

  /** The registered slots, by id. */
  get slots(): readonly KvmMemslot[] {
    return [...this.#slots.values()].sort((a, b) => a.slot - b.slot);
  }

  /** The slot registered under `slot`, if any. */
  get(slot: number): KvmMemslot | undefined {
    return this.#slots.get(slot);
  }

  /** How many KVM_SET_USER_MEMORY_REGION calls were issued for slot id `slot` (refused ones included). */
  updates(slot: number): number {
    return this.#updates.get(slot) ?? 0;
  }

  /** KVM_SET_USER_MEMORY_REGION calls issued through this table, all slots together. */
  get totalUpdates(): number {
    let n = 0;
    for (const v of this.#updates.values()) n += v;
    return n;
  }

  #set(slot: number, guestPhysAddr: bigint, size: bigint, userspaceAddr: bigint, flags: number): void {
    this.#updates.set(slot, this.updates(slot) + 1);
    this.#vm.setUserMemoryRegion({ slot, flags, guestPhysAddr, memorySize: size, userspaceAddr });
  }

  /**
   * Register a memslot under the lowest free id.
   * @throws RangeError for a non-positive size or an address outside u64
   * @throws RemapError E_KVM when no id is free, or naming the slot and range when the kernel refuses it (EEXIST overlap, EINVAL misaligned)
   */
  add(req: MemslotRequest): KvmMemslot {
    const flags = req.flags ?? 0;
    if (req.size <= 0n) throw new RangeError(`memslot size must be positive, got ${hex(req.size)}`);
    const inU64 = (start: bigint): boolean => start >= 0n && start + req.size - 1n <= U64_MAX;
    if (!inU64(req.guestPhysAddr) || !inU64(req.userspaceAddr)) {
      throw new RangeError(`memslot guest ${hex(req.guestPhysAddr)} / host ${hex(req.userspaceAddr)} +${hex(req.size)} does not fit in 64 bits`);
    }
    const slot = this.#ids.allocate();
    try {
      this.#set(slot, req.guestPhysAddr, req.size, req.userspaceAddr, flags);
    } catch (e) {
      this.#ids.free(slot);
      const other = errnoOf(e) === EEXIST ? this.slots.find((m) => m.guestPhysAddr < req.guestPhysAddr + req.size && req.guestPhysAddr < m.guestPhysAddr + m.size) : undefined;
      if (other && e instanceof RemapError) throw new RemapError('E_KVM', `${e.message}; it overlaps ${this.describe(other.slot)}`, { cause: e.cause });
      throw e;
    }
    const m: KvmMemslot = Object.freeze({ slot, guestPhysAddr: req.guestPhysAddr, size: req.size, userspaceAddr: req.userspaceAddr, flags });
    this.#slots.set(slot, m);
    return m;
  }

  /**
   * Delete a memslot (KVM_SET_USER_MEMORY_REGION with size 0) and free its id.
   * @throws RangeError if the table has no such slot
   * @throws RemapError E_KVM if the kernel refuses (the slot then stays registered)
   */
  remove(slot: number): void {
    const m = this.#slots.get(slot);
    if (!m) throw new RangeError(`memslot ${slot} is not registered in this table`);
    this.#set(slot, m.guestPhysAddr, 0n, m.userspaceAddr, m.flags);
    this.#slots.delete(slot);
    this.#ids.free(slot);
  }

  /**
   * Approach 2 of seeds/004: back the same guest range by another host range — delete the slot
   * (size 0), then add it again with the same guest address, size and flags (under the lowest free
   * id). Two KVM_SET_USER_MEMORY_REGION calls. Returns the new slot.
   * @throws RangeError if the table has no such slot; RemapError E_KVM if the kernel refuses either call
   */
  move(slot: number, userspaceAddr: bigint): KvmMemslot {
    const m = this.#slots.get(slot);
    if (!m) throw new RangeError(`memslot ${slot} is not registered in this table`);
    this.remove(slot);
    return this.add({ guestPhysAddr: m.guestPhysAddr, size: m.size, userspaceAddr, flags: m.flags });
  }

  /** `slot 3 (guest 0x…+0x… <- host 0x…)`, for messages. @throws RangeError if no such slot */
  describe(slot: number): string {
    const m = this.#slots.get(slot);
    if (!m) throw new RangeError(`memslot ${slot} is not registered in this table`);
    return describeMemslot({ slot, flags: m.flags, guestPhysAddr: m.guestPhysAddr, memorySize: m.size, userspaceAddr: m.userspaceAddr });
  }
}
