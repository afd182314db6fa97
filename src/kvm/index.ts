/**
 * `xive-remap/kvm`: the KVM layer, for a VMM (or a test) that drives KVM itself. Ioctl numbers per
 * architecture (`ioctls.ts`), one wrapper class per fd kind (`KvmSystem` → `KvmVm` → `KvmVcpu`,
 * `KvmDevice`; `KvmVm.fromFd` takes a VMM's own VM fd), memslot registration with per-slot call
 * counts (`memslots.ts`), binary statistics (`stats.ts`), the struct codecs they share, and the
 * KVM XIVE device's uapi constants and contract probe (`xive.ts`). Everything reaches the kernel
 * through a `NativeLayer`; failures are `RemapError('E_KVM')` with the errno error as cause.
 */
export * from './ioctls.js';
export * from './structs.js';
export * from './x86.js';
export * from './ppc.js';
export { KvmFd, kvmError, hex, teardown, unwind, adoptKvmFd, describeFdLink } from './fd.js';
export { UserMemory } from './user-memory.js';
export { KvmSystem, type KvmSystemOptions } from './system.js';
export { NO_KVM_ENV, kvmOptedOut } from './no-kvm.js';
export { KvmVm, KVM_VM_FD_NAME, describeMemslot, type KvmVmFromFdOptions } from './vm.js';
export { KvmVcpu } from './vcpu.js';
export { KvmDevice } from './device.js';
export * from './memslots.js';
export * from './stats.js';
export * from './xive.js';
