/**
 * xive-remap: pass interrupts through to a KVM guest on POWER by mapping the device's XIVE ESB
 * pages over the guest's IPI ESB pages, inside one memslot that is registered once (approach 3).
 *
 * Layers, top to bottom (data flows down): EsbController (the run table, attach/detach) →
 * EsbDevice / PageSource (where pages come from) → geometry (pure arithmetic) → kvm (ioctls) →
 * native (the only module that loads koffi).
 */
export { EsbController } from './controller.js';
export type { Backing, ControllerMode, Degraded, Memslot, OpenOptions, RunInfo } from './controller.js';
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
export {
  XiveKvmDevice,
  probeXiveContract,
  xiveGeometry,
  xiveEsbFileOffset,
  encodeSourceState,
  formatPq,
  KVM_DEV_XIVE,
  KVM_XIVE_ESB_PAGE_OFFSET,
  KVM_XIVE_TIMA_PAGE_OFFSET,
  KVM_XIVE_LEVEL_ASSERTED,
  KVM_XIVE_LEVEL_SENSITIVE,
  XIVE_ESB,
} from './devices/xive-kvm.js';
export type { Pq, XiveKvmOptions, XiveSourceState } from './devices/xive-kvm.js';
export { KvmSystem, KvmVm, KvmDevice, MemslotTable } from './kvm/index.js';
export type { KvmSystemOptions, MemslotRequest, Memslot as KvmMemslot } from './kvm/index.js';
export { RemapError, NativeError, errnoName } from './errors.js';
export type { RemapErrorCode } from './errors.js';
export { esbGeometry, esbOffset, esbSpan, DEFAULT_ESB_SHIFT, ESB_SHIFTS, MAX_IRQS } from './geometry.js';
export type { EsbGeometry, EsbShift } from './geometry.js';
export type { NativeLayer } from './native/types.js';
export { inspectMaps, timaMappings } from './audit.js';
export type { Discrepancy, InspectedRegion, TimaMapping } from './audit.js';
