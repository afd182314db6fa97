/**
 * A fault-injecting native layer, for tests that prove a failed system call never leaves a hole.
 *
 * `FaultyNative` implements `NativeLayer` by wrapping another one (the real, koffi-backed layer by
 * default), so the code under test makes real system calls on real mappings. A test arms faults
 * with `inject()`: "the 2nd mmap from now fails with ENOMEM". Data flow of every call:
 *
 *   caller → FaultyNative: count it, record it (inside a `record()` window), match it against the
 *            armed faults → no match: the inner layer (→ the kernel) → result back to the caller
 *                          → match:    throw a `NativeError` with the chosen errno instead
 *
 * Fault modes (`FaultMode`):
 * - `fail`: the call has no effect and throws. `close` is the exception: Linux releases the
 *   descriptor even when close(2) reports an error, so the fd is closed first, then the error thrown.
 * - `hole`: for an mmap with MAP_FIXED, what some kernels do when a MAP_FIXED fails late: the old
 *   pages of the target range are already gone. The range is replaced by an inaccessible anonymous
 *   reservation (PROT_NONE, through the inner layer), then the error thrown: to the region it is a
 *   hole (no ESB pages; a load faults), but the address range stays taken. A real munmap would let
 *   any thread of the test process (V8's compiler and GC threads allocate all the time) map
 *   something there before the restore, which the restore's MAP_FIXED would then destroy, crashing
 *   the run. The range must lie inside a range claimed through this layer.
 * - `skip`: the call reports success without reaching the kernel (mmap returns the address it was
 *   asked for): a lying kernel, for testing that the tests notice a stale overlay. On mmap, `nth`
 *   counts MAP_FIXED calls only: only a change of existing pages can be skipped (a skipped trial
 *   mapping, as `PageSource.fromFd` makes, would change nothing and go unnoticed).
 *
 * `record(fn)` runs `fn` and lists every call it made, with each call's occurrence number, so a
 * test can enumerate the system calls of an operation and then arm a fault at each position.
 * All state (armed faults, counts, claims) belongs to the instance; nothing is global.
 */
import { NativeError, errnoName, errnoValue } from '../src/errors.js';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  OwnedRanges,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  realNative,
  type FileStat,
  type MapsEntry,
  type NativeLayer,
} from '../src/internal.js';

/** The `NativeLayer` methods that make a system call: the units a fault can be armed on. */
export const FAULTABLE_CALLS = [
  'mmap',
  'munmap',
  'memfdCreate',
  'ftruncate',
  'fstat',
  'dupCloexec',
  'accessMode',
  'getSeals',
  'addSeals',
  'eventfd',
  'open',
  'close',
  'pwrite',
  'ioctl',
] as const;

/** A `NativeLayer` method that makes a system call (`dupCloexec`, `accessMode`, `getSeals` and `addSeals` are all fcntl). */
export type FaultableCall = (typeof FAULTABLE_CALLS)[number];

/** The kernel's name of each call, as `NativeError.syscall` and `NativeLayer.counts` spell it. */
const SYSCALL: Readonly<Record<FaultableCall, string>> = {
  mmap: 'mmap',
  munmap: 'munmap',
  memfdCreate: 'memfd_create',
  ftruncate: 'ftruncate',
  fstat: 'fstat',
  dupCloexec: 'fcntl',
  accessMode: 'fcntl',
  getSeals: 'fcntl',
  addSeals: 'fcntl',
  eventfd: 'eventfd',
  open: 'open',
  close: 'close',
  pwrite: 'pwrite',
  ioctl: 'ioctl',
};

/** How an armed fault behaves when its call comes (see the module comment). */
export type FaultMode = 'fail' | 'hole' | 'skip';

/** What to break: the `nth` call of `call`, counted from when the fault is armed. */
export interface FaultSpec {
  /** Which call. */
  readonly call: FaultableCall;
  /** 1 = the next such call, 2 = the one after, … (default 1). */
  readonly nth?: number;
  /** The errno, as a value or a name such as `'ENOMEM'` (default `'EIO'`). Unused by `skip`. */
  readonly errno?: number | string;
  /** `fail` (default), `hole` (mmap only) or `skip` (mmap, counting MAP_FIXED calls only; munmap, close). */
  readonly mode?: FaultMode;
}

/** A fault that fired: what was armed, the call it hit, and the error it threw (none for `skip`). */
export interface FiredFault {
  /** The fault as armed, errno resolved to a number. */
  readonly spec: Required<Omit<FaultSpec, 'errno'>> & { readonly errno: number };
  /** The call's arguments, for messages. */
  readonly detail: string;
  /** The error thrown to the caller (undefined for `skip`). */
  readonly error: NativeError | undefined;
}

/** One call made inside a `record()` window. */
export interface CallRecord {
  /** Position in the window (0-based). */
  readonly seq: number;
  /** Which call. */
  readonly call: FaultableCall;
  /** Its occurrence in the window (1-based): arm `{ call, nth }` before a rerun to hit exactly this call. */
  readonly nth: number;
  /** For mmap: whether MAP_FIXED was asked (a change of existing pages). */
  readonly fixed: boolean;
  /** The call's arguments, for messages. */
  readonly detail: string;
  /** The fault it hit, if any. */
  readonly fault: FiredFault | undefined;
}

/** What `record()` saw: every call in order, counts per call, and how `fn` ended. */
export type Recording<T> = {
  /** Every faultable call, in order. */
  readonly calls: readonly CallRecord[];
  /** Calls per method. */
  readonly counts: Readonly<Partial<Record<FaultableCall, number>>>;
} & ({ readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown });

interface Armed {
  readonly spec: FiredFault['spec'];
  /** The instance-lifetime occurrence number of `spec.call` this fault fires on. */
  readonly target: number;
  /** The counter `target` is on: the call, or `mmap:fixed` for a skipped mmap (MAP_FIXED calls only). */
  readonly key: string;
}

const FIXED_MMAPS = 'mmap:fixed';

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A `NativeLayer` that passes calls to an inner layer and fails the ones a test armed a fault for. */
export class FaultyNative implements NativeLayer {
  /** The layer calls go to (the real one by default). */
  readonly inner: NativeLayer;
  readonly #owned = new OwnedRanges();
  readonly #total: Record<string, number> = {};
  readonly #counts: Record<string, number> = {};
  #armed: Armed[] = [];
  readonly #fired: FiredFault[] = [];
  #window: CallRecord[] | null = null;

  /** Wrap `inner` (default: the real native layer). */
  constructor(inner: NativeLayer = realNative, options: { hotPath?: boolean } = {}) {
    this.inner = inner;
    if (options.hotPath === true) {
      // As the real layer has it (an own, non-enumerable property, so the controller takes it):
      // the same call as mmap(…, MAP_SHARED | MAP_FIXED, …), so it is counted, recorded and
      // faulted as one. The controller's Number arithmetic then runs under the faults too.
      Object.defineProperty(this, 'remapShared', {
        enumerable: false,
        writable: true,
        configurable: true,
        value: (addr: number, length: number, fd: number, offset: number): void => {
          this.mmap(BigInt(addr), BigInt(length), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, BigInt(offset));
        },
      });
    }
  }

  /** The inner layer's page size. */
  get pageSize(): number {
    return this.inner.pageSize;
  }

  /** The inner layer's architecture. */
  get arch(): string {
    return this.inner.arch;
  }

  /** System calls made through this instance, by kernel name (`fcntl`, `memfd_create`, …), faulted ones included. */
  get counts(): Readonly<Record<string, number>> {
    return this.#counts;
  }

  /** Faults armed and not yet hit. */
  get pending(): readonly FaultSpec[] {
    return this.#armed.map((a) => ({ ...a.spec, nth: a.target - (this.#total[a.key] ?? 0) }));
  }

  /** Faults that fired, oldest first (cleared by `reset()`). */
  get fired(): readonly FiredFault[] {
    return this.#fired;
  }

  /**
   * Arm a fault: the `nth` call of `spec.call` from now behaves as `spec.mode` says. Faults stack;
   * each fires once.
   * @throws Error for an unknown call or errno, a mode the call cannot have, or a second fault on
   *   the same call occurrence
   */
  inject(spec: FaultSpec): this {
    const { call, nth = 1, mode = 'fail' } = spec;
    if (!(FAULTABLE_CALLS as readonly string[]).includes(call)) throw new Error(`FaultyNative.inject: ${String(call)} is not a faultable call`);
    if (!Number.isInteger(nth) || nth < 1) throw new Error(`FaultyNative.inject: nth ${nth} is not a positive integer`);
    if (mode === 'hole' && call !== 'mmap') throw new Error('FaultyNative.inject: hole mode is for mmap only');
    if (mode === 'skip' && call !== 'mmap' && call !== 'munmap' && call !== 'close') {
      throw new Error(`FaultyNative.inject: skip mode cannot fake a result for ${call}`);
    }
    const errno = typeof spec.errno === 'string' ? errnoValue(spec.errno) : spec.errno ?? errnoValue('EIO');
    const key = call === 'mmap' && mode === 'skip' ? FIXED_MMAPS : call;
    const target = (this.#total[key] ?? 0) + nth;
    if (this.#armed.some((a) => a.spec.call === call && a.key === key && a.target === target)) {
      throw new Error(`FaultyNative.inject: a fault is already armed on ${call} #${nth}`);
    }
    this.#armed.push({ spec: Object.freeze({ call, nth, mode, errno }), target, key });
    return this;
  }

  /** Disarm every pending fault (fired ones stay listed). */
  clear(): void {
    this.#armed = [];
  }

  /** Disarm every fault, forget fired ones and zero `counts`. */
  reset(): void {
    this.#armed = [];
    this.#fired.length = 0;
    for (const k of Object.keys(this.#counts)) delete this.#counts[k];
  }

  /**
   * Run `fn` and record every faultable call it makes through this layer. Does not throw: how `fn`
   * ended is in the result.
   * @throws Error if called inside another `record()` window
   */
  record<T>(fn: () => T): Recording<T> {
    if (this.#window) throw new Error('FaultyNative.record: windows do not nest');
    const calls: CallRecord[] = [];
    this.#window = calls;
    try {
      const value = fn();
      return { calls, counts: tally(calls), ok: true, value };
    } catch (error) {
      return { calls, counts: tally(calls), ok: false, error };
    } finally {
      this.#window = null;
    }
  }

  // ---- the calls ----

  mmap(addr: bigint, length: bigint, prot: number, flags: number, fd: number, offset: bigint): bigint {
    const fixed = (flags & MAP_FIXED) !== 0;
    // Invariant 2 holds here too, before anything (a `hole` munmaps, so it must be sure it may).
    if (fixed) this.#owned.check(addr, length);
    const fault = this.#enter('mmap', `addr ${hex(addr)} length ${hex(length)} fd ${fd} offset ${hex(offset)}`, fixed);
    if (fault?.spec.mode === 'skip') return addr;
    if (fault?.spec.mode === 'hole' && fixed) this.inner.mmap(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0n);
    if (fault) throw fault.error;
    return this.inner.mmap(addr, length, prot, flags, fd, offset);
  }

  munmap(addr: bigint, length: bigint): void {
    const fault = this.#enter('munmap', `addr ${hex(addr)} length ${hex(length)}`);
    if (fault?.spec.mode === 'skip') return;
    if (fault) throw fault.error;
    this.inner.munmap(addr, length);
  }

  memfdCreate(name: string, flags: number): number {
    this.#throwIf(this.#enter('memfdCreate', name));
    return this.inner.memfdCreate(name, flags);
  }

  ftruncate(fd: number, length: bigint): void {
    this.#throwIf(this.#enter('ftruncate', `fd ${fd} length ${hex(length)}`));
    this.inner.ftruncate(fd, length);
  }

  fstat(fd: number): FileStat {
    this.#throwIf(this.#enter('fstat', `fd ${fd}`));
    return this.inner.fstat(fd);
  }

  dupCloexec(fd: number): number {
    this.#throwIf(this.#enter('dupCloexec', `fd ${fd}`));
    return this.inner.dupCloexec(fd);
  }

  accessMode(fd: number): number {
    this.#throwIf(this.#enter('accessMode', `fd ${fd}`));
    return this.inner.accessMode(fd);
  }

  getSeals(fd: number): number {
    this.#throwIf(this.#enter('getSeals', `fd ${fd}`));
    return this.inner.getSeals(fd);
  }

  addSeals(fd: number, seals: number): void {
    this.#throwIf(this.#enter('addSeals', `fd ${fd} seals 0x${seals.toString(16)}`));
    this.inner.addSeals(fd, seals);
  }

  eventfd(initval: number, flags: number): number {
    this.#throwIf(this.#enter('eventfd', `initval ${initval} flags 0x${flags.toString(16)}`));
    return this.inner.eventfd(initval, flags);
  }

  open(path: string, flags: number): number {
    this.#throwIf(this.#enter('open', path));
    return this.inner.open(path, flags);
  }

  close(fd: number): void {
    const fault = this.#enter('close', `fd ${fd}`);
    if (fault?.spec.mode === 'skip') return;
    // Linux frees the descriptor even when close(2) fails (close(2), NOTES): do the same.
    this.inner.close(fd);
    this.#throwIf(fault);
  }

  pwrite(fd: number, data: Uint8Array, offset: bigint): number {
    this.#throwIf(this.#enter('pwrite', `fd ${fd} offset ${hex(offset)}`));
    return this.inner.pwrite(fd, data, offset);
  }

  ioctl(fd: number, request: number, arg?: number | bigint | Uint8Array): number {
    this.#throwIf(this.#enter('ioctl', `fd ${fd} request 0x${(request >>> 0).toString(16)}`));
    return this.inner.ioctl(fd, request, arg);
  }

  // ---- not system calls: passed through, never faulted ----

  peek(addr: bigint, length: number): Buffer {
    return this.inner.peek(addr, length);
  }

  poke(addr: bigint, data: Uint8Array): void {
    this.inner.poke(addr, data);
  }

  readMaps(pid?: number): MapsEntry[] {
    return this.inner.readMaps(pid);
  }

  fdPath(fd: number): string {
    if (!this.inner.fdPath) throw new Error('the wrapped native layer offers no fdPath');
    return this.inner.fdPath(fd);
  }

  claim(addr: bigint, length: bigint): void {
    this.inner.claim(addr, length);
    this.#owned.claim(addr, length);
  }

  release(addr: bigint, length: bigint): void {
    this.inner.release(addr, length);
    this.#owned.release(addr, length);
  }

  // ---- bookkeeping ----

  /** Count and record one call; return the fault it hits (already listed in `fired`), if any. */
  #enter(call: FaultableCall, detail: string, fixed = false): FiredFault | undefined {
    this.#total[call] = (this.#total[call] ?? 0) + 1;
    if (fixed) this.#total[FIXED_MMAPS] = (this.#total[FIXED_MMAPS] ?? 0) + 1;
    const name = SYSCALL[call];
    this.#counts[name] = (this.#counts[name] ?? 0) + 1;
    const i = this.#armed.findIndex((a) => a.spec.call === call && (a.key === call || fixed) && a.target === this.#total[a.key]);
    let fault: FiredFault | undefined;
    if (i >= 0) {
      const { spec } = this.#armed[i] as Armed;
      this.#armed.splice(i, 1);
      const error = spec.mode === 'skip' ? undefined : new NativeError(name, spec.errno, `${detail}; injected ${spec.mode === 'hole' ? 'hole + ' : ''}${errnoName(spec.errno)}`);
      fault = Object.freeze({ spec, detail, error });
      this.#fired.push(fault);
    }
    if (this.#window) {
      const nth = this.#window.filter((c) => c.call === call).length + 1;
      this.#window.push(Object.freeze({ seq: this.#window.length, call, nth, fixed, detail, fault }));
    }
    return fault;
  }

  #throwIf(fault: FiredFault | undefined): void {
    if (fault?.error) throw fault.error;
  }
}

function tally(calls: readonly CallRecord[]): Partial<Record<FaultableCall, number>> {
  const out: Partial<Record<FaultableCall, number>> = {};
  for (const c of calls) out[c.call] = (out[c.call] ?? 0) + 1;
  return out;
}
