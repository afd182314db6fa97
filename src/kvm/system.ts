/**
 * The /dev/kvm fd: where everything starts. `KvmSystem.open()` checks the API version, answers
 * capability questions (KVM_CHECK_EXTENSION) and creates VMs. Opening fails with
 * `E_DEVICE_UNAVAILABLE` on a host without a usable /dev/kvm, so callers can tell "no KVM here"
 * from "KVM refused something".
 */
import { RemapError, errnoOf, errnoValue } from '../errors.js';
import { O_CLOEXEC, O_RDWR, realNative, type NativeLayer } from '../native/index.js';
import { KvmFd, kvmError } from './fd.js';
import { KVM_API_VERSION, SIZEOF_X86_CPUID_ENTRY2, hostKvmIoctls } from './ioctls.js';
import { kvmOptedOut } from './no-kvm.js';
import { KvmVm } from './vm.js';
import { allocCpuid2 } from './x86.js';

const E2BIG = errnoValue('E2BIG');

/** Options of `KvmSystem.open`. */
export interface KvmSystemOptions {
  /** The native layer every call goes through (default: the real one). */
  readonly native?: NativeLayer;
  /** The KVM device node (default `/dev/kvm`). */
  readonly path?: string;
}

/** The /dev/kvm fd; owns it. */
export class KvmSystem extends KvmFd {
  private constructor(native: NativeLayer, fd: number, /** The device node opened. */ readonly path: string) {
    super(native, fd, 'KVM system');
  }

  /**
   * Open /dev/kvm and check that it speaks KVM API version 12.
   * @throws RemapError E_DEVICE_UNAVAILABLE if it cannot be opened, or on the real native layer
   *   while XIVE_REMAP_NO_KVM is set (see `kvmOptedOut`); E_KVM on an unknown architecture or API version
   */
  static open(opts: KvmSystemOptions = {}): KvmSystem {
    const native = opts.native ?? realNative;
    const path = opts.path ?? '/dev/kvm';
    // Only the real layer reaches a real /dev/kvm; a test's stand-in layer is no KVM to hide.
    const optedOut = native === realNative ? kvmOptedOut() : null;
    if (optedOut !== null) throw new RemapError('E_DEVICE_UNAVAILABLE', `opening ${path} refused: ${optedOut}`);
    hostKvmIoctls(native.arch); // refuse an unknown architecture before opening anything
    let fd: number;
    try {
      fd = native.open(path, O_RDWR | O_CLOEXEC);
    } catch (e) {
      throw new RemapError('E_DEVICE_UNAVAILABLE', `opening ${path} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const sys = new KvmSystem(native, fd, path);
    try {
      const version = sys.apiVersion();
      if (version !== KVM_API_VERSION) throw new RemapError('E_KVM', `${path} speaks KVM API version ${version}, not ${KVM_API_VERSION}`);
    } catch (e) {
      sys.close();
      throw e;
    }
    return sys;
  }

  /** KVM_GET_API_VERSION (always 12 on any kernel since 2.6.22). @throws RemapError E_KVM if the ioctl fails */
  apiVersion(): number {
    return this.ioctl('KVM_GET_API_VERSION', 0);
  }

  /**
   * KVM_CHECK_EXTENSION: 0 when the capability is absent, else a capability-specific positive value.
   * @throws RemapError E_KVM if the ioctl fails
   */
  checkExtension(cap: number): number {
    return this.ioctl('KVM_CHECK_EXTENSION', cap, `KVM_CHECK_EXTENSION ${cap}`);
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from a vCPU fd for `kvm_run`. @throws RemapError E_KVM if the ioctl fails */
  vcpuMmapSize(): number {
    return this.ioctl('KVM_GET_VCPU_MMAP_SIZE', 0);
  }

  /**
   * KVM_CREATE_VM with a machine type (0: the architecture's default).
   * @throws RemapError E_KVM if the kernel refuses
   */
  createVm(type = 0): KvmVm {
    const mmapSize = this.vcpuMmapSize();
    const fd = this.ioctl('KVM_CREATE_VM', type, `KVM_CREATE_VM type ${type}`);
    return new KvmVm(this.native, fd, mmapSize);
  }

  /**
   * KVM_GET_SUPPORTED_CPUID (x86, needs KVM_CAP_EXT_CPUID): the CPUID leaves KVM can offer a guest,
   * as a filled-in `struct kvm_cpuid2` ready for `KvmVcpu.setX86Cpuid2`.
   * @throws RemapError E_KVM if refused or not x86
   */
  supportedX86Cpuid(): Uint8Array {
    for (let n = 64; ; n *= 2) {
      const buf = allocCpuid2(n);
      try {
        this.ioctl('KVM_GET_SUPPORTED_CPUID', buf, `KVM_GET_SUPPORTED_CPUID (room for ${n} entries of ${SIZEOF_X86_CPUID_ENTRY2} bytes)`);
        return buf;
      } catch (e) {
        // E2BIG: more leaves than room; the kernel caps the count (KVM_MAX_CPUID_ENTRIES), so this ends.
        if (errnoOf(e) !== E2BIG || n >= 4096) throw e instanceof RemapError ? e : kvmError('KVM_GET_SUPPORTED_CPUID', e);
      }
    }
  }
}
