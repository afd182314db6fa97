/**
 * Errors of xive-remap, in two layers (as rust-vmm does it):
 * - `NativeError` is what a failed system call becomes in `src/native/`: the syscall, the errno
 *   and its symbolic name, nothing more.
 * - `RemapError` is what the library throws to its callers: a stable string `code`, a message that
 *   says what was being done and to what, and the `NativeError` behind it (if any) as `cause`.
 */
import { constants } from 'node:os';

const errnoNames: ReadonlyMap<number, string> = new Map(
  // Reversed so that the first of two aliases wins (EAGAIN over EWOULDBLOCK), as Node names them.
  Object.entries(constants.errno).reverse().map(([name, value]) => [value, name]),
);

/** The symbolic name of an errno value (`22` → `'EINVAL'`), or `'E<n>'` when Node does not know it. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** The errno value of a symbolic name (`'EINVAL'` → 22). @throws Error for an unknown name */
export function errnoValue(name: string): number {
  const v = (constants.errno as Record<string, number>)[name];
  if (v === undefined) throw new Error(`unknown errno name ${name}`);
  return v;
}

/** A failed system call: which one, its errno and the errno's symbolic name. */
export class NativeError extends Error {
  /** The symbolic errno, e.g. `'EINVAL'` (Node's convention for system errors). */
  readonly code: string;
  constructor(
    /** The system call that failed, e.g. `'mmap'`. */
    readonly syscall: string,
    /** The errno it set. */
    readonly errno: number,
    detail = '',
  ) {
    super(`${syscall}${detail ? ` (${detail})` : ''} failed: ${errnoName(errno)} (errno ${errno})`);
    this.name = 'NativeError';
    this.code = errnoName(errno);
  }
}

/** The stable codes a `RemapError` can carry. */
export type RemapErrorCode =
  | 'E_IRQ_RANGE'
  | 'E_ALREADY_ATTACHED'
  | 'E_SOURCE'
  | 'E_GEOMETRY'
  | 'E_CLOSED'
  | 'E_DEVICE_CONTRACT'
  | 'E_DEVICE_UNAVAILABLE'
  | 'E_VMA_BUDGET'
  | 'E_PINNED'
  | 'E_BUSY'
  | 'E_VETO'
  | 'E_NOTIFIER'
  | 'E_DEGRADED'
  | 'E_NOT_OWNED'
  | 'E_KVM'
  | 'E_OPTIONS'
  | 'E_MAP';

/** Every failure a caller can cause or meet: a stable `code`, a message naming the operation, and the errno error as `cause`. */
export class RemapError extends Error {
  constructor(
    /** Stable machine-readable code, e.g. `'E_IRQ_RANGE'`. */
    readonly code: RemapErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RemapError';
  }
}

/** Whether a thrown value is a `RemapError` (never throws: `instanceof` on a hostile Proxy can). */
export function isRemapError(e: unknown): e is RemapError {
  try {
    return e instanceof RemapError;
  } catch {
    return false;
  }
}

/** The errno of an error if it is (or wraps) a `NativeError`, else undefined (never throws). */
export function errnoOf(err: unknown): number | undefined {
  // Never throws: a thrown Proxy whose traps throw (instanceof asks getPrototypeOf) has no errno.
  try {
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
      if (e instanceof NativeError) return e.errno;
    }
  } catch {
    /* not an errno error */
  }
  return undefined;
}
