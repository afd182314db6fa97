/**
 * xive-remap/native-stubs: stand-ins for what only a POWER host has (memfd-backed fake XIVE and
 * passthrough devices, a fault-injecting native layer), helpers that read their stamps back
 * through memory, and real KVM guests (x86_64, and POWER9+ KVM-HV) that read a region through one memslot.
 */
export { FakeXiveDevice, FakePassthroughDevice } from './fake-devices.js';
export type { FakeXiveOptions, FakePassthroughOptions } from './fake-devices.js';
export { readStamp, readStampAt, expectedStamp } from './stamps.js';
export { FaultyNative, FAULTABLE_CALLS, type FaultableCall, type FaultMode, type FaultSpec, type FiredFault, type CallRecord, type Recording } from './faulty-native.js';
export { KvmX86Guest } from './kvm-x86-guest.js';
export type { KvmX86GuestOptions } from './kvm-x86-guest.js';
export { KvmPpcGuest } from './kvm-ppc-guest.js';
export type { KvmPpcGuestOptions } from './kvm-ppc-guest.js';
export {
  VfioDevice,
  VFIO_IOMMU,
  VFIO_PCI_REGION,
  VFIO_PCI_IRQ,
  PCI_COMMAND,
  bindVfioPci,
  pciFunctions,
  createEventfd,
  drainEventfd,
  packVfioArg,
  packIrqSet,
  decodeDeviceInfo,
  decodeRegionInfo,
  decodeIrqInfo,
  decodeSpaprTceInfo,
  type VfioDeviceOptions,
  type VfioDeviceInfo,
  type VfioRegionInfo,
  type VfioIrqInfo,
  type SpaprTceInfo,
  type PciFunction,
} from './vfio-device.js';
export { XiveEventQueue, sourceConfigValue, packXiveEq, decodeEqEntries, type EqEntry, type XiveEventQueueOptions } from './xive-eq.js';
