/**
 * The KVM layer: ioctl numbers per architecture (`ioctls.ts`), one wrapper class per fd kind
 * (`KvmSystem` → `KvmVm` → `KvmVcpu`, `KvmDevice`), memslot registration with per-slot call counts
 * (`memslots.ts`), binary statistics (`stats.ts`), and the struct codecs they share. Everything
 * reaches the kernel through a `NativeLayer`; failures are `RemapError('E_KVM')` with the errno
 * error as cause.
 */
export * from './ioctls.js';
export * from './structs.js';
export * from './x86.js';
export * from './ppc.js';
export { KvmFd, kvmError, hex, unwind } from './fd.js';
export { UserMemory } from './user-memory.js';
export { KvmSystem, type KvmSystemOptions } from './system.js';
export { NO_KVM_ENV, kvmOptedOut } from './no-kvm.js';
export { KvmVm, describeMemslot } from './vm.js';
export { KvmVcpu } from './vcpu.js';
export { KvmDevice } from './device.js';
export * from './memslots.js';
export * from './stats.js';
