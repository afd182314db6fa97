/**
 * Anonymous pages of this process's own memory whose address is handed to the kernel: the value
 * behind a `kvm_device_attr.addr`, or the guest RAM of a test harness's code slot. The pages are
 * mapped with plain mmap (never MAP_FIXED), written and read with the native layer's poke/peek,
 * and unmapped by `close()` (idempotent), like rust-vmm's `MmapRegion`.
 */
import { RemapError } from '../errors.js';
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, type NativeLayer } from '../native/index.js';
import { HOST_LITTLE_ENDIAN } from './structs.js';
import { hex, kvmError } from './fd.js';

/** A private anonymous mapping owned by one object. */
export class UserMemory {
  readonly #native: NativeLayer;
  #addr: bigint;
  /** Bytes mapped (a whole number of host pages). */
  readonly length: bigint;

  private constructor(native: NativeLayer, addr: bigint, length: bigint) {
    this.#native = native;
    this.#addr = addr;
    this.length = length;
  }

  /**
   * Map `length` bytes (rounded up to whole host pages; default one page), zero-filled.
   * @throws RemapError E_KVM if mmap fails
   */
  static map(native: NativeLayer, length: bigint = BigInt(native.pageSize), what = 'KVM argument memory'): UserMemory {
    const page = BigInt(native.pageSize);
    const size = ((length + page - 1n) / page) * page;
    try {
      return new UserMemory(native, native.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n), size);
    } catch (e) {
      throw kvmError(`mapping ${hex(size)} bytes of ${what}`, e);
    }
  }

  /** Address of the first byte. @throws RemapError E_CLOSED after close() */
  get addr(): bigint {
    if (this.#addr === 0n) throw new RemapError('E_CLOSED', 'user memory is unmapped');
    return this.#addr;
  }

  #check(offset: bigint, length: number): bigint {
    if (offset < 0n || offset + BigInt(length) > this.length) {
      throw new RangeError(`${hex(offset)}+${hex(length)} is outside the ${hex(this.length)}-byte mapping`);
    }
    return this.addr + offset;
  }

  /** Copy bytes in at `offset`. @throws RangeError outside the mapping, RemapError E_CLOSED after close() */
  write(offset: bigint, data: Uint8Array): void {
    this.#native.poke(this.#check(offset, data.byteLength), data);
  }

  /** Copy `length` bytes out from `offset`. @throws RangeError outside the mapping, RemapError E_CLOSED after close() */
  read(offset: bigint, length: number): Buffer {
    return this.#native.peek(this.#check(offset, length), length);
  }

  /** Store a host-endian u64. @throws RangeError outside the mapping */
  writeU64(offset: bigint, value: bigint): void {
    const b = Buffer.alloc(8);
    if (HOST_LITTLE_ENDIAN) b.writeBigUInt64LE(value);
    else b.writeBigUInt64BE(value);
    this.write(offset, b);
  }

  /** Load a host-endian u64. @throws RangeError outside the mapping */
  readU64(offset: bigint): bigint {
    const b = this.read(offset, 8);
    return HOST_LITTLE_ENDIAN ? b.readBigUInt64LE() : b.readBigUInt64BE();
  }

  /** Unmap; later calls do nothing. @throws RemapError E_KVM if munmap fails */
  close(): void {
    if (this.#addr === 0n) return;
    const addr = this.#addr;
    this.#addr = 0n;
    try {
      this.#native.munmap(addr, this.length);
    } catch (e) {
      throw kvmError(`unmapping user memory at ${hex(addr)}`, e);
    }
  }
}
