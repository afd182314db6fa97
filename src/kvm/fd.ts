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
 * Undo what a failed constructor built, last step first, best effort: a step that throws is
 * skipped, because the error that made us undo is the one to report.
 */
export function unwind(steps: (() => void)[]): void {
  for (const step of steps.reverse()) {
    try {
      step();
    } catch {
      // best effort: the first error is the one to report
    }
  }
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
    let first: unknown;
    try {
      this.releaseResources();
    } catch (e) {
      first = e;
    }
    this.#fd = -1;
    try {
      this.native.close(fd);
    } catch (e) {
      first ??= kvmError(`closing ${what}`, e);
    }
    if (first !== undefined) throw kvmError(`closing ${what}`, first);
  }
}
