// Test fixtures for the KVM tests: memfd-backed host ranges whose pages carry a u32 stamp each,
// mapped MAP_SHARED at a fresh, claimed address, so one page at a time can be mapped over (with
// MAP_FIXED) from another memfd, or unmapped, the way the controller maps ESB pages.
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  realNative,
  type NativeLayer,
} from '../src/native/index.js';
import { KvmSystem, kvmOptedOut } from '../src/kvm/index.js';

/**
 * Null when /dev/kvm can be opened here (any architecture), else why not: the reason a test skips
 * with (`XIVE_REMAP_NO_KVM is set` under that variable, whatever this host has).
 */
export function kvmUnusable(): string | null {
  const optedOut = kvmOptedOut();
  if (optedOut !== null) return optedOut;
  try {
    KvmSystem.open().close();
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** A memfd of `pages` host pages, page p starting with the u32 `stamp(p)` (little-endian). */
export function stampedMemfd(name: string, pages: number, stamp: (page: number) => number, native: NativeLayer = realNative): number {
  const ps = BigInt(native.pageSize);
  const fd = native.memfdCreate(name, MFD_CLOEXEC);
  native.ftruncate(fd, BigInt(pages) * ps);
  const b = Buffer.alloc(4);
  for (let p = 0; p < pages; p++) {
    b.writeUInt32LE(stamp(p) >>> 0);
    native.pwrite(fd, b, BigInt(p) * ps);
  }
  return fd;
}

/** A claimed host range backed by memfd `fd`, page by page replaceable. */
export class MemfdRegion {
  readonly pageSize: bigint;
  readonly size: bigint;
  readonly addr: bigint;
  #closed = false;

  /** Reserve a fresh range (PROT_NONE), claim it (so MAP_FIXED is allowed), map `fd` over all of it. */
  constructor(readonly fd: number, pages: number, readonly native: NativeLayer = realNative) {
    this.pageSize = BigInt(native.pageSize);
    this.size = BigInt(pages) * this.pageSize;
    this.addr = native.mmap(0n, this.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
    native.claim(this.addr, this.size);
    native.mmap(this.addr, this.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0n);
  }

  /** The memslot to hand to a guest. */
  get memslot(): { userspaceAddr: bigint; size: bigint } {
    return { userspaceAddr: this.addr, size: this.size };
  }

  /** MAP_FIXED page `page` of `fd` (same offset) over page `page` of the region. */
  mapPage(page: number, fd: number): void {
    const off = BigInt(page) * this.pageSize;
    this.native.mmap(this.addr + off, this.pageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, off);
  }

  /** Leave a hole: munmap page `page`. */
  unmapPage(page: number): void {
    this.native.munmap(this.addr + BigInt(page) * this.pageSize, this.pageSize);
  }

  /** Unmap the range and release the claim (safe to repeat; the fds stay the caller's). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.native.munmap(this.addr, this.size);
    this.native.release(this.addr, this.size);
  }
}

/** Run `fn` with XIVE_REMAP_NO_KVM set to `value` (undefined: unset) in this process, then restore it. */
export function withNoKvmEnv<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env.XIVE_REMAP_NO_KVM;
  const set = (v: string | undefined): void => {
    if (v === undefined) delete process.env.XIVE_REMAP_NO_KVM;
    else process.env.XIVE_REMAP_NO_KVM = v;
  };
  set(value);
  try {
    return fn();
  } finally {
    set(saved);
  }
}
