/**
 * The native layer's contract: every system call the library makes goes through one object of
 * this shape. The real one (`libc.ts`) calls libc through koffi; `native-stubs/` has a
 * fault-injecting one that wraps it. The controller takes it as an option, so both run the same
 * code. Addresses and sizes are bigint; a failed call throws a `NativeError` with its errno.
 */

/** Protection and flag bits for mmap that are the same on every Linux architecture we support. */
export const PROT_NONE = 0;
/** Pages may be read. */
export const PROT_READ = 1;
/** Pages may be written. */
export const PROT_WRITE = 2;
/** Share the mapping with the file (ESB pages are always shared). */
export const MAP_SHARED = 0x01;
/** Private copy-on-write mapping. */
export const MAP_PRIVATE = 0x02;
/** Place the mapping exactly at the address, replacing what was there. */
export const MAP_FIXED = 0x10;
/** Mapping not backed by a file. */
export const MAP_ANONYMOUS = 0x20;
/** memfd_create: close on exec. */
export const MFD_CLOEXEC = 0x1;
/** memfd_create: the memfd accepts seals (F_ADD_SEALS); without it it is born sealed with F_SEAL_SEAL. */
export const MFD_ALLOW_SEALING = 0x2;
/**
 * File seals (fcntl F_ADD_SEALS / F_GET_SEALS, memfd_create(2)). These and MFD_ALLOW_SEALING come
 * from the generic include/uapi/linux/fcntl.h and memfd.h, which no architecture overrides:
 * checked, the same on x86_64 and ppc64le (powerpc's asm/fcntl.h redefines only O_DIRECTORY,
 * O_NOFOLLOW, O_LARGEFILE and O_DIRECT).
 */
export const F_SEAL_SEAL = 0x1;
/** The file may not shrink: pages mapped from it can never fall past its end (no SIGBUS). */
export const F_SEAL_SHRINK = 0x2;
/** The file may not grow. */
export const F_SEAL_GROW = 0x4;
/** No writes at all: a shared writable mapping is refused (EPERM). */
export const F_SEAL_WRITE = 0x8;
/** No new writable mappings or writes (existing ones stay): a shared writable mapping is refused (EPERM). */
export const F_SEAL_FUTURE_WRITE = 0x10;
/** eventfd(2): close on exec (= O_CLOEXEC, the same on x86_64 and ppc64le). */
export const EFD_CLOEXEC = 0o2000000;
/** eventfd(2): a read of a zero counter fails with EAGAIN instead of blocking (= O_NONBLOCK, 0o4000 on x86_64 and ppc64le). */
export const EFD_NONBLOCK = 0o4000;
/** open(2) access modes (the low two bits of the file status flags). */
export const O_RDONLY = 0;
/** Write only. */
export const O_WRONLY = 1;
/** Read and write. */
export const O_RDWR = 2;
/** Close on exec. */
export const O_CLOEXEC = 0o2000000;

/** What fstat says about an fd, as far as the library cares. */
export interface FileStat {
  /** Size in bytes (0 for anonymous inodes such as KVM and VFIO device fds). */
  readonly size: bigint;
  /** st_mode: file type and permission bits. */
  readonly mode: number;
  /** Device and inode numbers: together they name the file (as /proc/self/maps shows them). */
  readonly dev: bigint;
  /** Inode number. */
  readonly ino: bigint;
}

/** One line of /proc/PID/maps. */
export interface MapsEntry {
  /** First byte of the VMA. */
  readonly start: bigint;
  /** One past its last byte. */
  readonly end: bigint;
  /** e.g. `rw-s`. */
  readonly perms: string;
  /** File offset of `start`. */
  readonly offset: bigint;
  /** `major:minor` of the backing file's device (hex, as the kernel prints it). */
  readonly dev: string;
  /** Inode of the backing file (0 for anonymous). */
  readonly inode: bigint;
  /** Path or pseudo-name (`/memfd:xive-ipi (deleted)`, `anon_inode:kvm-xive-esb`, `[heap]`), '' if none. */
  readonly path: string;
}

/** Every system call the library makes. One object per process is real; tests may pass their own. */
export interface NativeLayer {
  /** The host page size in bytes (4096 on x86_64, usually 65536 on ppc64le). */
  readonly pageSize: number;
  /** The architecture as Node names it (`x64`, `ppc64`, `arm64`). */
  readonly arch: string;
  /** mmap(2). With MAP_FIXED the range must lie inside a range claimed with `claim` (invariant 2). */
  mmap(addr: bigint, length: bigint, prot: number, flags: number, fd: number, offset: bigint): bigint;
  /**
   * Optional: the controller's hot-path entry, `mmap(addr, length, PROT_READ | PROT_WRITE,
   * MAP_SHARED | MAP_FIXED, fd, offset)` with Number arguments (no BigInt made on the way; the
   * caller passes only values below 2^53), inside a range claimed with `claim`. The controller uses
   * it only where a layer defines it as its *own* property (the real layer does, non-enumerable): a
   * layer copied (`{ ...realNative, mmap }`) or derived (`Object.create(realNative, { mmap })`) to
   * watch or fault `mmap` does not, and so is given `mmap` calls instead; a Proxy over the real
   * layer does, and its `get` trap sees each call (the controller calls it as a method every time).
   * @throws as `mmap`
   */
  remapShared?(addr: number, length: number, fd: number, offset: number): void;
  /** munmap(2). */
  munmap(addr: bigint, length: bigint): void;
  /** memfd_create(2); returns the fd. */
  memfdCreate(name: string, flags: number): number;
  /** ftruncate(2). */
  ftruncate(fd: number, length: bigint): void;
  /** fstat(2). */
  fstat(fd: number): FileStat;
  /** fcntl(fd, F_DUPFD_CLOEXEC, 0): a new fd for the same open file description. */
  dupCloexec(fd: number): number;
  /** fcntl(fd, F_GETFL) & O_ACCMODE: O_RDONLY, O_WRONLY or O_RDWR. */
  accessMode(fd: number): number;
  /** fcntl(fd, F_GET_SEALS): the file's F_SEAL_* bits (EINVAL for a file that cannot be sealed). */
  getSeals(fd: number): number;
  /** fcntl(fd, F_ADD_SEALS, seals) (EPERM once F_SEAL_SEAL is set; EBUSY for a write seal while mapped writable). */
  addSeals(fd: number, seals: number): void;
  /** eventfd(2); returns the fd (the fd kind a VMM hands KVM_IRQFD: it cannot be mapped). */
  eventfd(initval: number, flags: number): number;
  /** open(2) of a path; returns the fd. */
  open(path: string, flags: number): number;
  /** close(2). */
  close(fd: number): void;
  /** pwrite(2) of all of `data`; returns bytes written. */
  pwrite(fd: number, data: Uint8Array, offset: bigint): number;
  /** ioctl(2) with no argument (an explicit 0 is passed, as KVM_RUN needs), an integer, or a buffer. */
  ioctl(fd: number, request: number, arg?: number | bigint | Uint8Array): number;
  /** Copy `length` bytes from process memory at `addr` (the page must be mapped). */
  peek(addr: bigint, length: number): Buffer;
  /** Copy `data` into process memory at `addr`. */
  poke(addr: bigint, data: Uint8Array): void;
  /**
   * One 8-byte load from `addr` (8-byte aligned), read big-endian like the kernel's `in_be64`: the
   * single access a memory-mapped register such as a XIVE ESB page needs (`peek` copies with
   * memcpy, which may split the copy into smaller loads). Optional: stand-in layers may omit it.
   */
  loadBe64?(addr: bigint): bigint;
  /** The VMAs of a process, parsed from /proc/PID/maps (default: this process). */
  readMaps(pid?: number): MapsEntry[];
  /**
   * What an fd of this process is, as the kernel names it: readlink(2) of /proc/self/fd/N
   * (`anon_inode:kvm-vm`, `/memfd:x (deleted)`, `/dev/kvm`). No side effect on the file. Optional:
   * stand-in layers may omit it (then no caller's fd can be adopted through them).
   */
  fdPath?(fd: number): string;
  /** Record that the library owns [addr, addr+length): MAP_FIXED is allowed there. */
  claim(addr: bigint, length: bigint): void;
  /** Forget an owned range (exactly as claimed). */
  release(addr: bigint, length: bigint): void;
  /** How many times each system call was made since the process started (or `resetCounts`). */
  readonly counts: Readonly<Record<string, number>>;
}
