/**
 * An event queue (EQ) of the KVM XIVE device in guest memory, on a vCPU server of its own: where a
 * routed source's events land, for tests that follow a real interrupt (a VFIO device's MSI routed
 * with KVM_IRQFD) all the way to the guest. Test harness, not library API.
 *
 * Data flow of `XiveEventQueue.create`: a vCPU (id = the server number) → KVM_ENABLE_CAP(PPC_PAPR),
 * then KVM_ENABLE_CAP(PPC_IRQ_XIVE, device fd, server) — in that order: an HV vCPU is only "sane"
 * in PAPR mode, and without it the XIVE connection returns EINVAL from kvmppc_sanity_check even
 * though the vCPU got connected → one host page of guest memory registered as a memslot → EQ_CONFIG
 * (priority, 64 KiB queue at that page, always notify). `route(irq, eisn)` is SOURCE_CONFIG; each
 * event the XIVE delivers is then one big-endian u32 in the page: the generation bit (toggles each
 * time the queue wraps; 1 on the first pass) and the EISN, read back by `entries()` from the
 * host's mapping of that guest memory.
 *
 * The vCPU never runs (`KvmPpcGuest` runs on another vCPU of the same VM), so the events stay in
 * the queue for the test to read; KVM wakes the idle vCPU through the EQ's escalation interrupt,
 * which does no harm. Needs `nrServers` on the device to cover `server` (set before any vCPU connects).
 */
import { RemapError } from '../src/errors.js';
import type { XiveKvmDevice } from '../src/devices/xive-kvm.js';
import { KVM_CAP, KVM_DEV_TYPE, KVM_DEV_XIVE, KvmDevice, UserMemory, hex, unwind, type KvmVcpu, type KvmVm, type KvmMemslot, type MemslotTable } from '../src/kvm/index.js';
import { HOST_LITTLE_ENDIAN } from '../src/kvm/structs.js';
import { realNative, type NativeLayer } from '../src/native/index.js';

/** SOURCE_CONFIG value fields (`asm/kvm.h`): priority bits 0-2, server from bit 3, masked bit 32, EISN from bit 33. */
export const KVM_XIVE_SOURCE = Object.freeze({ PRIORITY_SHIFT: 0n, SERVER_SHIFT: 3n, MASKED: 1n << 32n, EISN_SHIFT: 33n });
/** EQ_CONFIG attribute fields: priority bits 0-2, server from bit 3. */
export const KVM_XIVE_EQ = Object.freeze({ PRIORITY_SHIFT: 0n, SERVER_SHIFT: 3n, ALWAYS_NOTIFY: 1 });
/** `struct kvm_ppc_xive_eq`: u32 flags, u32 qshift, u64 qaddr, u32 qtoggle, u32 qindex, u8 pad[40]. */
export const SIZEOF_XIVE_EQ = 64;

/** The SOURCE_CONFIG value routing a source to (server, priority) with an EISN, or masking it. */
export function sourceConfigValue(server: number, priority: number, eisn: number, masked = false): bigint {
  if (priority < 0 || priority > 7 || !Number.isInteger(priority)) throw new RangeError(`XIVE priority ${priority} is not 0..7`);
  if (eisn < 0 || eisn > 0x7fffffff || !Number.isInteger(eisn)) throw new RangeError(`EISN ${hex(eisn)} does not fit 31 bits`);
  return (BigInt(priority) << KVM_XIVE_SOURCE.PRIORITY_SHIFT) | (BigInt(server) << KVM_XIVE_SOURCE.SERVER_SHIFT) | (masked ? KVM_XIVE_SOURCE.MASKED : 0n) | (BigInt(eisn) << KVM_XIVE_SOURCE.EISN_SHIFT);
}

/** Pack `struct kvm_ppc_xive_eq`. */
export function packXiveEq(eq: { flags: number; qshift: number; qaddr: bigint; qtoggle: number; qindex: number }, le = HOST_LITTLE_ENDIAN): Uint8Array {
  const b = new Uint8Array(SIZEOF_XIVE_EQ);
  const v = new DataView(b.buffer);
  v.setUint32(0, eq.flags, le);
  v.setUint32(4, eq.qshift, le);
  v.setBigUint64(8, eq.qaddr, le);
  v.setUint32(16, eq.qtoggle, le);
  v.setUint32(20, eq.qindex, le);
  return b;
}

/** One event in the queue: the generation bit and the EISN it carried. */
export interface EqEntry {
  readonly generation: 0 | 1;
  readonly eisn: number;
}

/**
 * Decode the entries of a queue page written on its first pass (generation 1), up to the first
 * word whose generation bit is still 0 (never written). Words are big-endian.
 */
export function decodeEqEntries(page: Uint8Array, max = page.byteLength / 4): EqEntry[] {
  const out: EqEntry[] = [];
  const v = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let i = 0; i < max; i++) {
    const w = v.getUint32(4 * i, false);
    if (w >>> 31 === 0) break;
    out.push({ generation: 1, eisn: w & 0x7fffffff });
  }
  return out;
}

/** Options of `XiveEventQueue.create`. */
export interface XiveEventQueueOptions {
  readonly vm: KvmVm;
  /** The VM's memslot table (shared with anything else registering memslots on it). */
  readonly slots: MemslotTable;
  /** The XIVE device of that VM (its `nrServers` must cover `server`). */
  readonly device: XiveKvmDevice;
  /** The vCPU id, which is the XIVE server number. */
  readonly server: number;
  /** Queue priority (0-6; KVM keeps 7 for itself). */
  readonly priority: number;
  /** Guest-physical address of the queue page (host-page-aligned, free). */
  readonly guestPhysAddr: bigint;
  readonly native?: NativeLayer;
}

/** An EQ of one server and priority, 64 KiB of guest memory, its entries readable from the host. */
export class XiveEventQueue {
  readonly server: number;
  readonly priority: number;
  readonly guestPhysAddr: bigint;
  readonly #page: UserMemory;
  readonly #slot: KvmMemslot;
  readonly #slots: MemslotTable;
  readonly #vcpu: KvmVcpu;
  readonly #dev: KvmDevice;
  readonly #native: NativeLayer;
  #closed = false;

  private constructor(o: XiveEventQueueOptions, native: NativeLayer, page: UserMemory, slot: KvmMemslot, vcpu: KvmVcpu, dev: KvmDevice) {
    this.#native = native;
    this.server = o.server;
    this.priority = o.priority;
    this.guestPhysAddr = o.guestPhysAddr;
    this.#page = page;
    this.#slot = slot;
    this.#slots = o.slots;
    this.#vcpu = vcpu;
    this.#dev = dev;
  }

  /**
   * Create the server's vCPU, connect it to the XIVE device, register the queue page and configure the EQ.
   * @throws RemapError E_KVM naming the step the kernel refused; what was made is undone (the vCPU
   *   itself stays in the VM: KVM cannot remove one)
   */
  static create(o: XiveEventQueueOptions): XiveEventQueue {
    const native = o.native ?? realNative;
    const size = BigInt(native.pageSize);
    if (size < 0x10000n) throw new RemapError('E_GEOMETRY', `XiveEventQueue: a 64 KiB queue needs 64 KiB host pages here (page size ${size})`);
    const undo: (() => void)[] = [];
    try {
      // A KvmDevice over our own duplicate of the device fd, for the attribute ioctls.
      const fd = native.dupCloexec(o.device.fd);
      let dev: KvmDevice;
      try {
        dev = new KvmDevice(native, fd, KVM_DEV_TYPE.XIVE);
      } catch (e) {
        native.close(fd);
        throw e;
      }
      undo.push(() => dev.close());
      const vcpu = o.vm.createVcpu(o.server);
      undo.push(() => vcpu.close());
      vcpu.enableCap(KVM_CAP.PPC_PAPR); // first: see the module comment
      vcpu.enableCap(KVM_CAP.PPC_IRQ_XIVE, [BigInt(dev.fd), BigInt(o.server)]); // args: device fd, server
      const page = UserMemory.map(native, size, `XIVE EQ page of server ${o.server}`);
      undo.push(() => page.close());
      const slot = o.slots.add({ guestPhysAddr: o.guestPhysAddr, size, userspaceAddr: page.addr });
      undo.push(() => o.slots.remove(slot.slot));
      const q = new XiveEventQueue(o, native, page, slot, vcpu, dev);
      q.#configureEq();
      return q;
    } catch (e) {
      unwind(undo);
      throw e;
    }
  }

  #eqAttr(): bigint {
    return (BigInt(this.priority) << KVM_XIVE_EQ.PRIORITY_SHIFT) | (BigInt(this.server) << KVM_XIVE_EQ.SERVER_SHIFT);
  }

  #configureEq(): void {
    const arg = UserMemory.map(this.#native, BigInt(this.#native.pageSize), 'kvm_ppc_xive_eq');
    try {
      arg.write(0n, packXiveEq({ flags: KVM_XIVE_EQ.ALWAYS_NOTIFY, qshift: 16, qaddr: this.guestPhysAddr, qtoggle: 1, qindex: 0 }));
      this.#dev.setAttr(KVM_DEV_XIVE.GRP_EQ_CONFIG, this.#eqAttr(), arg.addr);
    } finally {
      arg.close();
    }
  }

  /** KVM_DEV_XIVE_GRP_SOURCE_CONFIG: route source `irq` to this queue with `eisn`. */
  route(irq: number, eisn: number): void {
    this.#checkOpen();
    this.#dev.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE_CONFIG, irq, sourceConfigValue(this.server, this.priority, eisn));
  }

  /**
   * KVM_DEV_XIVE_GRP_SOURCE_CONFIG with the masked bit (and EISN 0). The EISN matters: 6.1's
   * `kvmppc_xive_native_update_source_config` skips a configuration whose server, priority and
   * EISN are unchanged without looking at the masked bit, so a mask with the routed EISN is a no-op.
   */
  mask(irq: number): void {
    this.#checkOpen();
    this.#dev.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE_CONFIG, irq, sourceConfigValue(this.server, this.priority, 0, true));
  }

  /** The queue's entries, read from guest memory (the host's mapping of the queue page). */
  entries(): EqEntry[] {
    this.#checkOpen();
    return decodeEqEntries(this.#page.read(0n, 0x1000));
  }

  /** The first `n` raw words of the queue page, big-endian as the XIVE writes them. */
  words(n: number): number[] {
    this.#checkOpen();
    const b = this.#page.read(0n, 4 * n);
    return Array.from({ length: n }, (_, i) => b.readUInt32BE(4 * i));
  }

  /** KVM_GET_DEVICE_ATTR of EQ_CONFIG: where the XIVE's write pointer is (qindex) and its toggle. */
  state(): { qindex: number; qtoggle: number } {
    this.#checkOpen();
    const arg = UserMemory.map(this.#native, BigInt(this.#native.pageSize), 'kvm_ppc_xive_eq');
    try {
      this.#dev.getAttr(KVM_DEV_XIVE.GRP_EQ_CONFIG, this.#eqAttr(), arg.addr);
      const b = arg.read(0n, SIZEOF_XIVE_EQ);
      return HOST_LITTLE_ENDIAN ? { qtoggle: b.readUInt32LE(16), qindex: b.readUInt32LE(20) } : { qtoggle: b.readUInt32BE(16), qindex: b.readUInt32BE(20) };
    } finally {
      arg.close();
    }
  }

  /** Delete the memslot, unmap the page, close the vCPU and device fds (the vCPU stays in the VM). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    for (const f of [() => this.#slots.remove(this.#slot.slot), () => this.#page.close(), () => this.#vcpu.close(), () => this.#dev.close()]) {
      try {
        f();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  #checkOpen(): void {
    if (this.#closed) throw new RemapError('E_CLOSED', `XiveEventQueue of server ${this.server}: closed`);
  }
}
