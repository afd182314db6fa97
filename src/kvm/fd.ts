/**
 * The shape every KVM fd wrapper shares (rust-vmm style): a class owns one fd, every ioctl on it
 * goes through the injected `NativeLayer`, and a failed ioctl leaves as a `RemapError('E_KVM')`
 * whose message says what was being done to which fd, with the errno-carrying `NativeError` as
 * `cause`. `close()` may be called any number of times; teardown is best effort (everything is
 * released, then the first failure is reported).
 */
import { NativeError, RemapError } from '../errors.js';
import type { NativeLayer } from '../native/index.js';
import { hostKvmIoctls, type KvmIoctlName, type KvmIoctls, requireIoctl } from './ioctls.js';

/**
 * The error a failed KVM call becomes: `E_KVM`, "<doing> failed: <ERRNO>", the native error as cause.
 * A `RemapError` from below (e.g. a refused MAP_FIXED) is passed on unchanged: it already says what it is.
 */
export function kvmError(doing: string, cause: unknown, hint = ''): RemapError {
  if (cause instanceof RemapError) return cause;
  const errno = cause instanceof NativeError ? `: ${cause.code}` : cause instanceof Error ? `: ${cause.message}` : '';
  return new RemapError('E_KVM', `${doing} failed${errno}${hint ? ` (${hint})` : ''}`, { cause });
}

/**
 * Best-effort teardown, the one helper every `close()` and every undo of a half-built object uses
 * (Cloud Hypervisor's `unmap_mmio_regions` style): run every step in order, go on past a step
 * that throws, and throw the FIRST failure once all have run, so one stuck fd never leaks the
 * rest. A falsy entry is skipped, so optional steps can be written inline (`stats && (() => …)`).
 * @throws the first error a step threw, after every step ran
 */
export function teardown(steps: Iterable<(() => void) | false | null | undefined>): void {
  let failed = false;
  let first: unknown;
  for (const step of steps) {
    if (!step) continue;
    try {
      step();
    } catch (e) {
      if (!failed) first = e;
      failed = true;
    }
  }
  if (failed) throw first;
}

/**
 * Undo what a failed constructor built, last step first, best effort (`teardown` in reverse):
 * every step runs, and their failures are dropped, because the error that made us undo is the
 * one to report. Does not modify `steps`.
 */
export function unwind(steps: readonly (() => void)[]): void {
  try {
    teardown([...steps].reverse());
  } catch {
    // best effort: the caller's error is the one to report
  }
}

/** What the kernel's name for an fd (readlink of /proc/self/fd/N) says it is, for messages. */
export function describeFdLink(link: string): string {
  const known: [RegExp, string][] = [
    [/^anon_inode:kvm-vm$/, 'a KVM VM fd'],
    [/^anon_inode:kvm-vcpu:\d+$/, 'a KVM vCPU fd'],
    [/^\/dev\/kvm$/, 'the /dev/kvm system fd (KVM_CREATE_VM makes a VM fd from it)'],
    [/^anon_inode:kvm-xive-native$/, 'a KVM XIVE native device fd (KVM_DEV_TYPE_XIVE)'],
    [/^anon_inode:kvm-xive$/, 'the XICS-on-XIVE device (KVM_DEV_TYPE_XICS on a XIVE host), not the XIVE native device'],
    [/^anon_inode:kvm-xics$/, 'the KVM XICS device, not the XIVE native device'],
    [/^anon_inode:kvm-vfio$/, 'the KVM VFIO pseudo-device'],
    [/^anon_inode:/, 'an anonymous-inode fd'],
    [/^\/memfd:/, 'a memfd'],
  ];
  const kind = known.find(([re]) => re.test(link))?.[1];
  return kind ? `${link}: ${kind}` : link;
}

/**
 * Take a caller's fd of one kind: duplicate it (F_DUPFD_CLOEXEC: the caller keeps and closes its own
 * fd, the library closes only the duplicate), then check the DUPLICATE's kernel name
 * (/proc/self/fd/N) against `want`. Checking the duplicate, not the caller's number, means the
 * answer is about the file the library will use even if the caller closes or reuses its number.
 * The name is read, never an ioctl sent: an ioctl number means different things to different
 * drivers, so a KVM request must not reach an fd before we know it is KVM's.
 * @throws RemapError E_DEVICE_UNAVAILABLE if `fd` is not an open fd, or is another kind of file
 *   (the message names what it is), with the errno error as cause where there is one
 */
export function adoptKvmFd(native: NativeLayer, fd: number, op: string, want: string, what: string): number {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: ${String(fd)} is not a file descriptor (want ${what})`);
  }
  let dup: number;
  try {
    dup = native.dupCloexec(fd);
  } catch (e) {
    throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: fd ${fd} cannot be duplicated${e instanceof NativeError ? ` (${e.code}: not an open fd?)` : ''}; want ${what}`, { cause: e });
  }
  let link: string;
  try {
    if (!native.fdPath) throw new Error('the native layer offers no fdPath (readlink of /proc/self/fd)');
    link = native.fdPath(dup);
  } catch (e) {
    closeQuietly(native, dup);
    throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: cannot tell what fd ${fd} is (readlink /proc/self/fd/${dup}${e instanceof NativeError ? `: ${e.code}` : ''}; is /proc mounted?); want ${what}`, { cause: e });
  }
  if (link !== want) {
    closeQuietly(native, dup);
    throw new RemapError('E_DEVICE_UNAVAILABLE', `${op}: fd ${fd} is ${describeFdLink(link)}; want ${what} (${want})`);
  }
  return dup;
}

/** `0x…` for a bigint or number. */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** One open KVM fd (/dev/kvm, a VM, a vCPU or a device) and the native layer that reaches it. */
export abstract class KvmFd {
  /** The native layer every call goes through. */
  protected readonly native: NativeLayer;
  /** The ioctl numbers of the native layer's architecture. */
  protected readonly ioctls: KvmIoctls;
  #fd: number;

  /** @throws RemapError E_KVM if the native layer's architecture has no known KVM ioctl encoding */
  protected constructor(native: NativeLayer, fd: number, /** What kind of fd, for messages ("VM", "vCPU 0", …). */ readonly kind: string) {
    this.native = native;
    this.ioctls = hostKvmIoctls(native.arch);
    this.#fd = fd;
  }

  /** The raw fd. @throws RemapError E_CLOSED after `close()` */
  get fd(): number {
    if (this.#fd < 0) throw new RemapError('E_CLOSED', `${this.kind} fd is closed`);
    return this.#fd;
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** e.g. `VM fd 7`. */
  describe(): string {
    return this.#fd < 0 ? `closed ${this.kind} fd` : `${this.kind} fd ${this.#fd}`;
  }

  /**
   * Issue an ioctl on this fd. `name` is looked up in the architecture's table; `doing` completes
   * the error message ("KVM_RUN" → "KVM_RUN on vCPU 0 fd 9 failed: EFAULT").
   * @throws RemapError E_KVM if the kernel refuses it (errno error as cause), E_CLOSED after close()
   */
  protected ioctl(name: KvmIoctlName, arg?: number | bigint | Uint8Array, doing: string = name, hint?: (e: unknown) => string): number {
    const fd = this.fd;
    const request = requireIoctl(this.ioctls, name);
    try {
      // Safe: the fd is ours and open, and a buffer argument is at least the size encoded in `request`.
      return this.native.ioctl(fd, request, arg);
    } catch (e) {
      throw kvmError(`${doing} on ${this.describe()}`, e, hint?.(e));
    }
  }

  /** Release what a subclass holds besides the fd (mappings, child objects). Called once, before the fd is closed. */
  protected releaseResources(): void {}

  /**
   * Release everything and close the fd; later calls do nothing.
   * @throws RemapError E_KVM with the first teardown failure, after everything was released
   */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    const what = this.describe();
    try {
      teardown([
        () => this.releaseResources(),
        () => {
          this.#fd = -1;
          this.native.close(fd);
        },
      ]);
    } catch (e) {
      throw kvmError(`closing ${what}`, e);
    }
  }
}

/** close(2) on a failure path, where the error being thrown is the one that matters (Linux releases the fd either way). */
function closeQuietly(native: NativeLayer, fd: number): void {
  try {
    native.close(fd);
  } catch {
    /* best effort */
  }
}
