/**
 * The real native layer: the only module of xive-remap that loads koffi. Each wrapper has one
 * shape (rust-vmm style): the raw call, then `ret < 0 → NativeError(syscall, errno)`. Pointers come
 * back from koffi as number or bigint and leave here as bigint. MAP_FIXED is refused outside the
 * ranges the library has claimed (invariant 2), before the kernel sees it.
 */
import { readFileSync, readlinkSync, fstatSync } from 'node:fs';
import { arch as osArch } from 'node:process';
import koffi from 'koffi';
import { NativeError, errnoValue } from '../errors.js';
import { OwnedRanges, parseMaps } from './maps.js';
import { MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE, type FileStat, type MapsEntry, type NativeLayer } from './types.js';

const MAP_FAILED = 0xffffffffffffffffn;
const F_GETFL = 3;
const F_DUPFD_CLOEXEC = 1030;
// F_LINUX_SPECIFIC_BASE (1024) + 9 and + 10, generic include/uapi/linux/fcntl.h (same on x86_64 and ppc64le).
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const O_ACCMODE = 3;

const libc = koffi.load('libc.so.6');
const c = {
  mmap: libc.func('uintptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(uintptr_t addr, size_t length)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  open: libc.func('int open(const char *path, int flags, ...)'),
  close: libc.func('int close(int fd)'),
  pwrite: libc.func('intptr_t pwrite(int fd, const void *buf, size_t count, int64_t offset)'),
  // Variadic, as the ppc64le ABI requires for ioctl's third argument.
  ioctl: libc.func('int ioctl(int fd, unsigned long request, ...)'),
  getpagesize: libc.func('int getpagesize(void)'),
  peek: libc.func('memcpy', 'uintptr_t', ['void *', 'uintptr_t', 'size_t']),
  poke: libc.func('memcpy', 'uintptr_t', ['uintptr_t', 'void *', 'size_t']),
};

const owned = new OwnedRanges();
const counts: Record<string, number> = {};

function count(syscall: string): void {
  counts[syscall] = (counts[syscall] ?? 0) + 1;
}

function fail(syscall: string, detail?: string): never {
  throw new NativeError(syscall, koffi.errno(), detail);
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

/** The process's real native layer (a singleton: address space and fds are process-wide). */
export const realNative: NativeLayer = {
  pageSize: c.getpagesize() as number,
  arch: osArch,
  counts,

  mmap(addr, length, prot, flags, fd, offset) {
    if (flags & MAP_FIXED) owned.check(addr, length);
    count('mmap');
    const r = BigInt(c.mmap(addr, length, prot, flags, fd, offset) as number | bigint);
    if (r === MAP_FAILED) fail('mmap', `addr ${hex(addr)} length ${hex(length)} fd ${fd} offset ${hex(offset)}`);
    return r;
  },

  munmap(addr, length) {
    count('munmap');
    if ((c.munmap(addr, length) as number) < 0) fail('munmap', `addr ${hex(addr)} length ${hex(length)}`);
  },

  memfdCreate(name, flags) {
    count('memfd_create');
    const fd = c.memfd_create(name, flags) as number;
    if (fd < 0) fail('memfd_create', name);
    return fd;
  },

  ftruncate(fd, length) {
    count('ftruncate');
    if ((c.ftruncate(fd, length) as number) < 0) fail('ftruncate', `fd ${fd}`);
  },

  fstat(fd): FileStat {
    count('fstat');
    try {
      const s = fstatSync(fd, { bigint: true });
      return { size: s.size, mode: Number(s.mode), dev: s.dev, ino: s.ino };
    } catch (e) {
      const errno = -((e as NodeJS.ErrnoException).errno ?? 0);
      throw new NativeError('fstat', errno, `fd ${fd}`);
    }
  },

  dupCloexec(fd) {
    count('fcntl');
    const r = c.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0) as number;
    if (r < 0) fail('fcntl', `F_DUPFD_CLOEXEC fd ${fd}`);
    return r;
  },

  accessMode(fd) {
    count('fcntl');
    const r = c.fcntl(fd, F_GETFL, 'int', 0) as number;
    if (r < 0) fail('fcntl', `F_GETFL fd ${fd}`);
    return r & O_ACCMODE;
  },

  getSeals(fd) {
    count('fcntl');
    const r = c.fcntl(fd, F_GET_SEALS, 'int', 0) as number;
    if (r < 0) fail('fcntl', `F_GET_SEALS fd ${fd}`);
    return r;
  },

  addSeals(fd, seals) {
    count('fcntl');
    if ((c.fcntl(fd, F_ADD_SEALS, 'int', seals) as number) < 0) fail('fcntl', `F_ADD_SEALS 0x${seals.toString(16)} fd ${fd}`);
  },

  eventfd(initval, flags) {
    count('eventfd');
    const fd = c.eventfd(initval, flags) as number;
    if (fd < 0) fail('eventfd');
    return fd;
  },

  open(path, flags) {
    count('open');
    const fd = c.open(path, flags, 'int', 0) as number;
    if (fd < 0) fail('open', path);
    return fd;
  },

  close(fd) {
    count('close');
    if ((c.close(fd) as number) < 0) fail('close', `fd ${fd}`);
  },

  pwrite(fd, data, offset) {
    count('pwrite');
    const n = Number(c.pwrite(fd, data, data.byteLength, offset));
    if (n < 0) fail('pwrite', `fd ${fd} offset ${hex(offset)}`);
    return n;
  },

  ioctl(fd, request, arg = 0) {
    count('ioctl');
    const r = (arg instanceof Uint8Array
      ? c.ioctl(fd, request, 'void *', arg)
      : c.ioctl(fd, request, 'uint64_t', BigInt(arg))) as number;
    if (r < 0) fail('ioctl', `fd ${fd} request 0x${(request >>> 0).toString(16)}`);
    return r;
  },

  peek(addr, length) {
    const buf = Buffer.alloc(length);
    c.peek(buf, addr, length);
    return buf;
  },

  poke(addr, data) {
    c.poke(addr, data, data.byteLength);
  },

  loadBe64(addr) {
    if (addr % 8n !== 0n) throw new RangeError(`loadBe64: address ${hex(addr)} is not 8-byte aligned`);
    // koffi's decode of a fixed 8-byte integer is one load instruction (memcpy of a constant 8 bytes).
    return BigInt(koffi.decode.uint64be(addr) as number | bigint);
  },

  readMaps(pid?: number): MapsEntry[] {
    count('readMaps'); // a /proc read, counted so tests can prove the hot path makes none
    return parseMaps(readFileSync(`/proc/${pid ?? 'self'}/maps`, 'latin1'));
  },

  fdPath(fd) {
    count('readlink');
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // readlink of /proc/self/fd/N fails with ENOENT for a closed fd: the kernel's answer is EBADF.
      throw new NativeError('readlink', code === 'ENOENT' ? errnoValue('EBADF') : errnoValue(code ?? 'EIO'), `/proc/self/fd/${fd}`);
    }
  },

  claim(addr, length) {
    owned.claim(addr, length);
  },

  release(addr, length) {
    owned.release(addr, length);
  },
};

// The controller's hot path: Numbers in, nothing made. On success MAP_FIXED returns `addr` (a
// Number: user addresses are below 2^53); MAP_FAILED comes back from koffi as a bigint.
// Non-enumerable: a layer copied (`{ ...realNative, mmap }`) or derived (`Object.create(realNative,
// …)`) to watch or fault `mmap` does not carry it as its own, so the controller gives it `mmap` calls.
Object.defineProperty(realNative, 'remapShared', {
  enumerable: false,
  writable: true, // as the layer's other methods (and a Proxy over the layer may wrap it)
  configurable: true,
  value(addr: number, length: number, fd: number, offset: number): void {
    if (!owned.coversNumber(addr, length)) owned.check(BigInt(addr), BigInt(length)); // (BigInt refuses a fraction: nothing reaches the kernel)
    // koffi would truncate a fraction: map exactly what was asked or nothing.
    if (!Number.isSafeInteger(offset) || (fd | 0) !== fd) throw new RangeError(`remapShared: fd ${String(fd)} and offset ${String(offset)} must be integers`);
    counts.mmap = (counts.mmap ?? 0) + 1;
    const r = c.mmap(addr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset) as number | bigint;
    if (r !== addr) fail('mmap', `addr 0x${addr.toString(16)} length 0x${length.toString(16)} fd ${fd} offset 0x${offset.toString(16)}`);
  },
});
