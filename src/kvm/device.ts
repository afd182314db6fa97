/**
 * A KVM device fd (KVM_CREATE_DEVICE: the XIVE interrupt controller on POWER, the VFIO
 * pseudo-device anywhere). Attributes are addressed by (group, attr); their value travels through
 * a userspace pointer in `kvm_device_attr.addr`, so the device keeps one scratch page of its own
 * (mapped on first use, unmapped by `close()`) to put values in and read them back from.
 */
import { errnoOf, errnoValue } from '../errors.js';
import type { NativeLayer } from '../native/index.js';
import { KvmFd, hex } from './fd.js';
import { HOST_LITTLE_ENDIAN, packDeviceAttr } from './structs.js';
import { UserMemory } from './user-memory.js';

const ENXIO = errnoValue('ENXIO');

/** A device created with KVM_CREATE_DEVICE; owns its fd. */
export class KvmDevice extends KvmFd {
  #scratch: UserMemory | undefined;

  /** @internal Use `KvmVm.createDevice`. */
  constructor(native: NativeLayer, fd: number, /** KVM_DEV_TYPE_* of the device. */ readonly type: number) {
    super(native, fd, `device (type ${type})`);
  }

  #attr(name: 'KVM_SET_DEVICE_ATTR' | 'KVM_GET_DEVICE_ATTR' | 'KVM_HAS_DEVICE_ATTR', group: number, attr: bigint, addr: bigint): number {
    const buf = packDeviceAttr({ flags: 0, group, attr, addr });
    return this.ioctl(name, buf, `${name} group ${group} attr ${hex(attr)}${addr ? ` addr ${hex(addr)}` : ''}`);
  }

  /**
   * KVM_SET_DEVICE_ATTR: `addr` is the userspace address of the value (0 when the attribute takes none).
   * @throws RemapError E_KVM if the kernel refuses it
   */
  setAttr(group: number, attr: bigint | number, addr = 0n): void {
    this.#attr('KVM_SET_DEVICE_ATTR', group, BigInt(attr), addr);
  }

  /**
   * KVM_GET_DEVICE_ATTR: the kernel writes the value at `addr`.
   * @throws RemapError E_KVM if the kernel refuses it
   */
  getAttr(group: number, attr: bigint | number, addr: bigint): void {
    this.#attr('KVM_GET_DEVICE_ATTR', group, BigInt(attr), addr);
  }

  /**
   * KVM_HAS_DEVICE_ATTR: whether the device supports the attribute (ENXIO means no).
   * @throws RemapError E_KVM for any other refusal
   */
  hasAttr(group: number, attr: bigint | number): boolean {
    try {
      this.#attr('KVM_HAS_DEVICE_ATTR', group, BigInt(attr), 0n);
      return true;
    } catch (e) {
      if (errnoOf(e) === ENXIO) return false;
      throw e;
    }
  }

  #page(): UserMemory {
    this.#scratch ??= UserMemory.map(this.native, BigInt(this.native.pageSize), `attribute scratch page of ${this.describe()}`);
    return this.#scratch;
  }

  /**
   * Set an attribute whose value is one u64 (e.g. a XIVE source's state): the value is written to
   * the device's scratch page and its address passed.
   * @throws RemapError E_KVM if the kernel refuses it
   */
  setAttrU64(group: number, attr: bigint | number, value: bigint): void {
    const page = this.#page();
    page.writeU64(0n, value);
    this.setAttr(group, attr, page.addr);
  }

  /**
   * Set an attribute whose value is one u32 in host byte order (e.g. the XIVE device's NR_SERVERS).
   * @throws RangeError unless 0 ≤ value < 2^32; RemapError E_KVM if the kernel refuses it
   */
  setAttrU32(group: number, attr: bigint | number, value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`a u32 attribute value must be an integer in 0..2^32-1, got ${value}`);
    const page = this.#page();
    const b = Buffer.alloc(4);
    if (HOST_LITTLE_ENDIAN) b.writeUInt32LE(value);
    else b.writeUInt32BE(value);
    page.write(0n, b);
    this.setAttr(group, attr, page.addr);
  }

  /**
   * Read an attribute whose value is one u64.
   * @throws RemapError E_KVM if the kernel refuses it
   */
  getAttrU64(group: number, attr: bigint | number): bigint {
    const page = this.#page();
    page.writeU64(0n, 0n);
    this.getAttr(group, attr, page.addr);
    return page.readU64(0n);
  }

  protected override releaseResources(): void {
    const page = this.#scratch;
    this.#scratch = undefined;
    page?.close();
  }
}
