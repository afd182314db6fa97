/**
 * xive-remap: pass interrupts through to a KVM guest on POWER by mapping the device's XIVE ESB
 * pages over the guest's IPI ESB pages, inside one memslot that is registered once (approach 3).
 *
 * Layers, top to bottom (data flows down): EsbController (the run table, attach/detach) →
 * EsbDevice / PageSource (where pages come from) → geometry (pure arithmetic) → kvm (ioctls) →
 * native (the only module that loads koffi).
 *
 * This entry point is what a VMM's device-hotplug path needs: the controller, page sources, the
 * KVM XIVE device (`XiveKvmDevice.open`, or `fromFd` for the VMM's own device), errors, notifier
 * and tracing types, and `inspectMaps`. The KVM fd wrappers (`KvmVm.fromFd`, `MemslotTable`), the
 * uapi constants and the contract probe are in `xive-remap/kvm`; the stand-ins for tests and hosts
 * without POWER are in `xive-remap/native-stubs`.
 */
export { DEFAULT_VMA_SLACK, EsbController } from './controller.js';
export type { ControllerMode, Degraded, Memslot, OpenOptions } from './controller.js';
export type { Backing, RunInfo } from './run-table.js';
export type {
  DestroyEvent,
  EsbNotifier,
  EventBacking,
  MappingEvent,
  MappingReason,
  NotifierCapabilities,
  NotifierEvent,
  NotifierEventKind,
  NotifierFilter,
  NotifierHandle,
  Pin,
  PinInfo,
  RegisterOptions,
} from './notifiers.js';
export { TRACE_CHANNELS } from './tracing.js';
export type { AttachTrace, ControllerStats, DetachTrace, FailureTrace } from './tracing.js';
export { PageSource } from './source.js';
export type { FromFdOptions } from './source.js';
export type { DeviceContract, EsbDevice, IpiPages } from './device.js';
export { XiveKvmDevice } from './devices/xive-kvm.js';
export type { XiveKvmFromFdOptions, XiveKvmOptions } from './devices/xive-kvm.js';
export { formatPq } from './kvm/xive.js';
export type { Pq, XiveSourceState } from './kvm/xive.js';
export { RemapError, NativeError, errnoName } from './errors.js';
export type { RemapErrorCode } from './errors.js';
export { esbGeometry, esbOffset, esbSpan, DEFAULT_ESB_SHIFT, ESB_SHIFTS, MAX_IRQS } from './geometry.js';
export type { EsbGeometry, EsbShift } from './geometry.js';
export type { NativeLayer } from './native/types.js';
export { inspectMaps, timaMappings } from './audit.js';
export type { Discrepancy, InspectedRegion, TimaMapping } from './audit.js';
